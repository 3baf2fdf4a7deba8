"""Authenticated denial of existence: what a zone's NSEC (RFC 4035 5.4) or NSEC3 (RFC 5155 8)
records prove about a name and type, once their signatures have been validated (dnssec.py).

A "no such record" answer from a signed zone is believed only with a proof: NODATA (the name
exists without the type, or only a wildcard stands for it, without the type), NXDOMAIN (no such name, nor a wildcard that would stand for it), an
unsigned delegation (a DS query answered by NS without DS: the child zone is insecure), or an
NSEC3 opt-out span (an unsigned delegation may lie there: insecure too; so is NSEC3 hashed too
many times to be worth checking). An answer synthesised from a wildcard needs a proof too:
that the name asked for does not exist, so no closer match was passed over. Anything short
of a proof is None, which dnssec.py calls bogus, never an insecure pass.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Iterable
from typing import TypeVar

import dns.dnssec
import dns.name
import dns.rdata
import dns.rdatatype
import dns.rrset

# RFC 9276 3.2: validators may call NSEC3 with more iterations than this insecure (the
# hashing is a denial-of-service lever); 150 is what Unbound and BIND settled on.
MAX_NSEC3_ITERATIONS = 150
NSEC3_OPT_OUT = 0x01
# Names in canonical order (NSEC), or NSEC3 hashes in base32hex (its order is the digests').
Ordered = TypeVar("Ordered", dns.name.Name, bytes)
# base32 → base32hex (RFC 4648 7), the alphabet of NSEC3 owner names.
_B32_TO_HEX = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
                              b"0123456789ABCDEFGHIJKLMNOPQRSTUV")


class Denial(enum.Enum):
    NODATA = "the name exists without records of the type"
    NXDOMAIN = "no such name"
    UNSIGNED_DELEGATION = "a delegation without DS: the zone below is unsigned"
    OPT_OUT = "an NSEC3 opt-out span: an unsigned delegation may be there"
    TOO_COSTLY = "NSEC3 of more iterations than are worth checking (RFC 9276 3.2)"

    @property
    def insecure(self) -> bool:
        """Does the proof leave the answer insecure rather than securely denied?"""
        return self in (Denial.UNSIGNED_DELEGATION, Denial.OPT_OUT, Denial.TOO_COSTLY)


def prove(qname: dns.name.Name, rdtype: int, nxdomain: bool, zone: dns.name.Name,
          rrsets: Iterable[dns.rrset.RRset]) -> Denial | None:
    """What the validated NSEC/NSEC3 `rrsets` of `zone` prove about `rdtype` at `qname`;
    None when they prove nothing."""
    nsec = [r for r in rrsets if r.rdtype == dns.rdatatype.NSEC and r.name.is_subdomain(zone)]
    nsec3 = [r for r in rrsets if r.rdtype == dns.rdatatype.NSEC3 and r.name.parent() == zone]
    if nsec:
        return _nsec(qname, rdtype, nxdomain, zone, nsec)
    if nsec3:
        return _nsec3(qname, rdtype, nxdomain, zone, nsec3)
    return None


def has_type(rdata: dns.rdata.Rdata, rdtype: int) -> bool:
    """Is `rdtype` in an NSEC or NSEC3 type bitmap (RFC 4034 4.1.2)?"""
    window, offset = divmod(rdtype, 256)
    for number, bitmap in rdata.windows:
        if number == window:
            index = offset // 8
            return index < len(bitmap) and bool(bitmap[index] & (0x80 >> offset % 8))
    return False


def _cut_above(owner: dns.name.Name, rdata: dns.rdata.Rdata, name: dns.name.Name) -> bool:
    """Is `owner`, an ancestor of `name`, a delegation point (NS without SOA) or a DNAME? Its
    NSEC(3) is the parent side's and proves nothing below it (RFC 6840 4.1): those names are
    another zone's, and the parent's record replayed with NXDOMAIN would deny a signed child
    zone's TLSA records."""
    return name != owner and name.is_subdomain(owner) and (
        has_type(rdata, dns.rdatatype.DNAME)
        or (has_type(rdata, dns.rdatatype.NS) and not has_type(rdata, dns.rdatatype.SOA)))


def _nodata_types(rdata: dns.rdata.Rdata, rdtype: int) -> Denial | None:
    """NODATA or an unsigned delegation, from the bitmap of the name's own NSEC(3)."""
    if has_type(rdata, rdtype) or has_type(rdata, dns.rdatatype.CNAME):
        return None
    if (rdtype == dns.rdatatype.DS and has_type(rdata, dns.rdatatype.NS)
            and not has_type(rdata, dns.rdatatype.SOA)):
        return Denial.UNSIGNED_DELEGATION
    return Denial.NODATA


def _nsec(qname: dns.name.Name, rdtype: int, nxdomain: bool, zone: dns.name.Name,
          rrsets: list[dns.rrset.RRset]) -> Denial | None:
    spans = [(r.name, r[0].next, r[0]) for r in rrsets]
    if not nxdomain:
        for owner, _, rdata in spans:
            if owner == qname:
                return _nodata_types(rdata, rdtype)
        # An empty non-terminal: the NSEC before it leads to a name below it.
        if any(_between(owner, qname, following) and following.is_subdomain(qname)
               for owner, following, _ in spans):
            return Denial.NODATA
    covering = [(o, n) for o, n, r in spans if _between(o, qname, n) and not _cut_above(o, r, qname)]
    if not covering:
        return None
    owner, following = covering[0]
    encloser = max(_common(qname, owner), _common(qname, following), key=len)
    if not encloser.is_subdomain(zone):
        return None
    wildcard = dns.name.Name(("*",) + encloser.labels)
    if not nxdomain:
        # RFC 4035 3.1.3.4: no such name, but the wildcard that stands for it lacks the type.
        own = next((rdata for o, _, rdata in spans if o == wildcard), None)
        return _nodata_types(own, rdtype) if own is not None else None
    if not any(_between(o, wildcard, n) for o, n, _ in spans):
        return None
    return Denial.NXDOMAIN


class _Nsec3Chain:
    """A zone's NSEC3 records, asked which hashed name they match or cover."""

    def __init__(self, rrsets: list[dns.rrset.RRset]) -> None:
        self.params = rrsets[0][0]
        self.spans = [(r.name.labels[0].upper(),
                       base64.b32encode(r[0].next).translate(_B32_TO_HEX), r[0]) for r in rrsets]

    def _hashed(self, name: dns.name.Name) -> bytes:
        params = self.params
        return dns.dnssec.nsec3_hash(name, params.salt, params.iterations,
                                     params.algorithm).encode()

    def matching(self, name: dns.name.Name) -> dns.rdata.Rdata | None:
        digest = self._hashed(name)
        return next((rdata for owner, _, rdata in self.spans if owner == digest), None)

    def covering(self, name: dns.name.Name) -> dns.rdata.Rdata | None:
        digest = self._hashed(name)
        return next((rdata for owner, following, rdata in self.spans
                     if _between(owner, digest, following)), None)


def _nsec3(qname: dns.name.Name, rdtype: int, nxdomain: bool, zone: dns.name.Name,
           rrsets: list[dns.rrset.RRset]) -> Denial | None:
    if rrsets[0][0].iterations > MAX_NSEC3_ITERATIONS:
        return Denial.TOO_COSTLY  # treated as insecure, not bogus
    chain = _Nsec3Chain(rrsets)
    if not nxdomain:
        own = chain.matching(qname)
        if own is not None:
            return _nodata_types(own, rdtype)
    # The closest encloser proof (RFC 5155 8.3): an ancestor that exists, and the name one
    # label below it on the way to qname covered (it does not exist).
    encloser, next_closer = qname.parent(), qname
    while encloser.is_subdomain(zone):
        found = chain.matching(encloser)
        if found is not None:
            break
        encloser, next_closer = encloser.parent(), encloser
    else:
        return None
    if _cut_above(encloser, found, qname):
        return None
    span = chain.covering(next_closer)
    if span is None:
        return None
    if span.flags & NSEC3_OPT_OUT:
        return Denial.OPT_OUT
    wildcard = dns.name.Name(("*",) + encloser.labels)
    if not nxdomain:
        # RFC 5155 8.7: no such name, but the wildcard that stands for it lacks the type.
        own = chain.matching(wildcard)
        return _nodata_types(own, rdtype) if own is not None else None
    if chain.covering(wildcard) is None:
        return None
    return Denial.NXDOMAIN


def prove_wildcard(qname: dns.name.Name, encloser: dns.name.Name, zone: dns.name.Name,
                   rrsets: Iterable[dns.rrset.RRset]) -> Denial | None:
    """What the validated NSEC/NSEC3 `rrsets` of `zone` prove about an answer at `qname`
    synthesised from the wildcard `*.<encloser>`: NXDOMAIN when `qname` itself does not exist
    and `encloser` is its closest encloser, so no closer match was passed over (RFC 4035
    5.3.4, RFC 5155 8.8); None when they prove nothing."""
    if not qname.is_subdomain(encloser) or qname == encloser:
        return None
    nsec = [r for r in rrsets if r.rdtype == dns.rdatatype.NSEC and r.name.is_subdomain(zone)]
    if nsec:
        proven = any(_between(r.name, qname, r[0].next) and not _cut_above(r.name, r[0], qname)
                     and encloser == max(_common(qname, r.name), _common(qname, r[0].next), key=len)
                     for r in nsec)
        return Denial.NXDOMAIN if proven else None
    nsec3 = [r for r in rrsets if r.rdtype == dns.rdatatype.NSEC3 and r.name.parent() == zone]
    if not nsec3:
        return None
    if nsec3[0][0].iterations > MAX_NSEC3_ITERATIONS:
        return Denial.TOO_COSTLY
    next_closer = dns.name.Name(qname.labels[-len(encloser.labels) - 1:])
    return Denial.NXDOMAIN if _Nsec3Chain(nsec3).covering(next_closer) is not None else None


def _between(owner: Ordered, name: Ordered, following: Ordered) -> bool:
    """Does the span from `owner` to `following` (canonical order, wrapping at the zone's
    end) cover `name`?"""
    if owner < following:
        return owner < name < following
    return name > owner or name < following


def _common(a: dns.name.Name, b: dns.name.Name) -> dns.name.Name:
    """The longest common ancestor of two names (both absolute: they share the root)."""
    common = a.fullcompare(b)[2]
    return dns.name.Name(a.labels[-common:])
