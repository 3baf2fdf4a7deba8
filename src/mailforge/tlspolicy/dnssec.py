"""DNSSEC-secured lookups for DANE: records with a verdict, secure or insecure, or bogus.

"validate" checks the RRSIGs here (dnspython's dns.dnssec) up a chain of DS records to a
trust anchor, each zone's DNSKEY set checked once and kept for its TTL (at most KEYS_KEPT: a
set kept longer would miss a key rollover's new key, and the zone's answers would be bogus);
"trust-ad" takes the AD bit of a validating resolver the operator names; "off" calls nothing
secure. Under a trust anchor nothing is taken at its word (RFC 4035 5): a "no such record"
answer needs a signed NSEC/NSEC3 proof (denial.py), and an answer without signatures is
insecure only where a signed proof shows the zone it comes from is an unsigned delegation;
else it is bogus, as are signatures that do not validate, and an answer synthesised from a
wildcard without the proof that no closer name exists (RFC 4035 5.3.4): `DnssecError`, which
DANE turns into a deferral (RFC 7672 2.2). A name under no trust anchor is insecure. A CNAME
chain the server did not follow to its end (an authoritative server follows one only inside
its own zones) is followed here, and is secure only when every part of it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..config import DnsConfig
from ..resolver import Resolver
from . import denial
from .denial import Denial

# The root zone's key-signing key since 2018 (KSK-2017), as IANA publishes it.
ROOT_ANCHOR = ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"
# Zones whose validated DNSKEY sets are kept; a busy relay meets a few thousand zones a day.
MAX_ZONES = 5_000
# Seconds a zone's validated DNSKEY set (or its being unsigned) is trusted without asking again.
KEYS_KEPT = 3600.0
# A chain of DS records longer than this is a loop or an attack, not a real delegation path.
MAX_CHAIN = 16


class DnssecError(Exception):
    """Bogus: signatures that do not validate, none where the zone is signed, a denial
    without its proof; or no way to tell. Never an insecure pass."""


def load_anchors(text: str) -> dict[dns.name.Name, list[dns.rdata.Rdata]]:
    """DS or DNSKEY records in zone-file form, by owner name."""
    anchors: dict[dns.name.Name, list[dns.rdata.Rdata]] = {}
    for line in text.splitlines():
        line = line.split(";", 1)[0].strip()
        if not line:
            continue
        owner, _, rest = line.partition(" ")
        fields = rest.split()
        while fields and (fields[0].isdigit() or fields[0].upper() == "IN"):
            fields.pop(0)  # the TTL and class, when given
        rdtype = dns.rdatatype.from_text(fields[0])
        if rdtype not in (dns.rdatatype.DS, dns.rdatatype.DNSKEY):
            raise ValueError(f"a trust anchor is a DS or DNSKEY record, not {fields[0]}")
        rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, " ".join(fields[1:]))
        anchors.setdefault(dns.name.from_text(owner), []).append(rdata)
    return anchors


@dataclass(frozen=True)
class SecureAnswer:
    records: list[dns.rdata.Rdata]
    secure: bool  # signed and valid, or securely denied
    nxdomain: bool = False
    denial: Denial | None = None  # what a signed "no such record" answer proved
    # Where the CNAME chain led: the name asked for when there was none (None: not known).
    expanded: dns.name.Name | None = None


class SecureLookup:
    def __init__(self, resolver: Resolver, config: DnsConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.resolver = resolver
        self.clock = clock
        self.mode = config.dnssec
        anchor_text = ROOT_ANCHOR
        if config.trust_anchor:
            with open(config.trust_anchor, encoding="ascii") as fh:
                anchor_text = fh.read()
        self.anchors = load_anchors(anchor_text)
        self._keys: dict[dns.name.Name, tuple[float, dns.rrset.RRset | None]] = {}  # until, keys

    async def lookup(self, name: str, rdtype: str, depth: int = 0) -> SecureAnswer:
        """The records of `rdtype` at `name` and whether they are secure. TemporaryDnsError
        when no answer came; DnssecError when the answer is bogus."""
        if self.mode == "off":
            return SecureAnswer(await self.resolver.lookup(name, rdtype), False)
        response, nxdomain = await self.resolver.query_signed(name, rdtype)
        qname, qtype = dns.name.from_text(name), dns.rdatatype.from_text(rdtype)
        target, records = _chase(response, qname, qtype)
        if self.mode == "trust-ad":
            return SecureAnswer(records, bool(response.flags & dns.flags.AD), nxdomain,
                                expanded=target)
        if self._anchor_above(qname) is None:
            return SecureAnswer(records, False, nxdomain, expanded=target)
        secure = True
        for rrset in response.answer:
            if rrset.rdtype != dns.rdatatype.RRSIG:
                secure = await self._check_rrset(rrset, response, depth) and secure
        if records:
            return SecureAnswer(records, secure, expanded=target)
        if target != qname:
            return await self._follow(target, rdtype, secure, depth)
        denial = await self._check_denial(response, target, qtype, nxdomain, depth)
        return SecureAnswer([], secure and denial is not None and not denial.insecure,
                            nxdomain, denial, target)

    async def _follow(self, target: dns.name.Name, rdtype: str, chain_secure: bool,
                      depth: int) -> SecureAnswer:
        """The rest of a CNAME chain that ended at `target` without its records."""
        if depth > MAX_CHAIN:
            raise DnssecError(f"CNAME chain to {target} is too long")
        rest = await self.lookup(target.to_text(), rdtype, depth + 1)
        return SecureAnswer(rest.records, chain_secure and rest.secure, rest.nxdomain,
                            rest.denial, rest.expanded)

    def _anchor_above(self, name: dns.name.Name) -> dns.name.Name | None:
        """The deepest trust anchor at or above `name`."""
        found = [a for a in self.anchors if name.is_subdomain(a)]
        return max(found, key=len) if found else None

    async def _check_rrset(self, rrset: dns.rrset.RRset, response: dns.message.Message,
                           depth: int) -> bool:
        """Is the answer's RRset secure (False: insecure)? DnssecError when bogus."""
        sigs = _signatures(response, response.answer, rrset)
        if not sigs:
            await self._require_insecure(rrset.name, rrset.rdtype, depth)
            return False
        signer = sigs[0].signer
        if not rrset.name.is_subdomain(signer):
            raise DnssecError(f"{rrset.name} signed by {signer}, a zone it is not in")
        keys = await self._zone_keys(signer, depth)
        if keys is None:
            return False
        _validate(rrset, sigs, signer, keys)
        # RRSIG labels (RFC 4034 3.1.3: neither the root's nor a leading "*") fewer than the
        # owner's: synthesised from a wildcard.
        labels = min(sig.labels for sig in sigs)
        if labels >= len(rrset.name) - 1 - rrset.name.is_wild():
            return True
        encloser = dns.name.Name(rrset.name.labels[-labels - 1:])
        found = denial.prove_wildcard(rrset.name, encloser, signer,
                                      _validated_proofs(response, signer, keys))
        if found is None:
            raise DnssecError(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}: synthesised "
                              f"from the wildcard *.{encloser} without proof that no closer "
                              "name exists")
        return not found.insecure

    async def _check_denial(self, response: dns.message.Message, qname: dns.name.Name,
                            rdtype: int, nxdomain: bool, depth: int) -> Denial | None:
        """What the signed authority section proves; None where the zone is insecure."""
        what = f"{qname} {dns.rdatatype.to_text(rdtype)}"
        sigs = [r for r in response.authority if r.rdtype == dns.rdatatype.RRSIG]
        if not sigs:
            await self._require_insecure(qname, rdtype, depth)
            return None
        zone = sigs[0][0].signer
        if not qname.is_subdomain(zone):
            raise DnssecError(f"{what}: denied by {zone}, a zone it is not in")
        keys = await self._zone_keys(zone, depth)
        if keys is None:
            return None
        proofs = _validated_proofs(response, zone, keys)
        # A referral (from an authoritative server named as resolver): the name lies below a
        # delegation, and what counts is whether that delegation is signed.
        cut = next((r.name for r in response.authority if r.rdtype == dns.rdatatype.NS
                    and r.name != zone and qname.is_subdomain(r.name)), None)
        if cut is not None:
            found = denial.prove(cut, dns.rdatatype.DS, False, zone, proofs)
            if found is not None and found.insecure:
                return found
            raise DnssecError(f"{what}: referred to {cut} without proof that it is unsigned")
        found = denial.prove(qname, rdtype, nxdomain, zone, proofs)
        if found is None:
            raise DnssecError(f"{what}: the signed zone {zone} gives no valid NSEC/NSEC3 proof "
                              f"of {'NXDOMAIN' if nxdomain else 'its absence'}")
        return found

    async def _require_insecure(self, name: dns.name.Name, rdtype: int, depth: int) -> None:
        """Unsigned data at `name` is insecure only when the zone it comes from is unsigned
        (below an unsigned delegation); from a signed zone it is bogus (stripped signatures)."""
        # DS records are the parent's: they come from the zone above the name's own.
        owner = name.parent() if rdtype == dns.rdatatype.DS and name != dns.name.root else name
        zone = await self._zone_of(owner)
        if await self._zone_keys(zone, depth + 1) is not None:
            raise DnssecError(f"{name} {dns.rdatatype.to_text(rdtype)}: answer without "
                              f"signatures from the signed zone {zone}")

    async def _zone_of(self, name: dns.name.Name) -> dns.name.Name:
        """The zone holding `name`, by the SOA the server names; never above the name's trust
        anchor (a zone claimed above it would dodge the anchor)."""
        response, _ = await self.resolver.query_signed(name.to_text(), "SOA")
        owners = [r.name for r in response.answer + response.authority
                  if r.rdtype == dns.rdatatype.SOA and name.is_subdomain(r.name)]
        anchor = self._anchor_above(name)
        zone = max(owners, key=len) if owners else anchor
        if anchor is not None and (zone is None or not zone.is_subdomain(anchor)):
            return anchor
        if zone is None:
            raise DnssecError(f"no zone of {name} could be found (no SOA)")
        return zone

    async def _zone_keys(self, zone: dns.name.Name, depth: int) -> dns.rrset.RRset | None:
        """The zone's DNSKEY set, validated from an anchor; None when the zone is insecure."""
        until, keys = self._keys.get(zone, (0.0, None))
        if until > self.clock():
            return keys
        if depth > MAX_CHAIN:
            raise DnssecError(f"DNSSEC chain to {zone} is too long")
        if zone in self.anchors:
            anchors = self.anchors[zone]
        elif self._anchor_above(zone) is None:
            return self._keep(zone, None)  # under no anchor: nothing to validate from
        else:
            ds = await self.lookup(zone.to_text(), "DS", depth + 1)
            if ds.nxdomain or ds.denial is Denial.NODATA:
                raise DnssecError(f"{zone} answers as a zone, but its parent delegates no "
                                  "such zone")
            if not ds.secure:
                return self._keep(zone, None)  # an unsigned delegation: not ours to judge
            anchors = ds.records
        response, _ = await self.resolver.query_signed(zone.to_text(), "DNSKEY")
        keyset = response.get_rrset(response.answer, zone, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
        if keyset is None:
            raise DnssecError(f"{zone} signs records but publishes no DNSKEY")
        trusted = [k for k in keyset if _anchored(zone, k, anchors)]
        if not trusted:
            raise DnssecError(f"no DNSKEY of {zone} matches its trust anchor or DS")
        anchor_set = dns.rrset.from_rdata_list(zone, keyset.ttl, trusted)
        _validate(keyset, _signatures(response, response.answer, keyset), zone, anchor_set)
        return self._keep(zone, keyset, keyset.ttl)

    def _keep(self, zone: dns.name.Name, keys: dns.rrset.RRset | None,
              ttl: float = KEYS_KEPT) -> dns.rrset.RRset | None:
        if len(self._keys) >= MAX_ZONES:
            self._keys.clear()
        self._keys[zone] = (self.clock() + min(ttl, KEYS_KEPT), keys)
        return keys


def _chase(response: dns.message.Message, qname: dns.name.Name,
           rdtype: int) -> tuple[dns.name.Name, list[dns.rdata.Rdata]]:
    """Where the answer's CNAME chain ends, and the records of `rdtype` there."""
    name = qname
    for _ in range(MAX_CHAIN):
        cname = response.get_rrset(response.answer, name, dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None or rdtype == dns.rdatatype.CNAME:
            break
        name = cname[0].target
    found = response.get_rrset(response.answer, name, dns.rdataclass.IN, rdtype)
    return name, list(found) if found is not None else []


def _signatures(response: dns.message.Message, section: list[dns.rrset.RRset],
                rrset: dns.rrset.RRset) -> dns.rrset.RRset | None:
    return response.get_rrset(section, rrset.name, rrset.rdclass, dns.rdatatype.RRSIG,
                              rrset.rdtype)


def _validated_proofs(response: dns.message.Message, zone: dns.name.Name,
                      keys: dns.rrset.RRset) -> list[dns.rrset.RRset]:
    """The authority section's NSEC/NSEC3 records, each checked against the zone's keys."""
    proofs = [r for r in response.authority
              if r.rdtype in (dns.rdatatype.NSEC, dns.rdatatype.NSEC3)]
    for rrset in proofs:
        _validate(rrset, _signatures(response, response.authority, rrset), zone, keys)
    return proofs


def _anchored(zone: dns.name.Name, key: dns.rdata.Rdata, anchors: list[dns.rdata.Rdata]) -> bool:
    for anchor in anchors:
        if anchor.rdtype == dns.rdatatype.DNSKEY and anchor == key:
            return True
        if anchor.rdtype == dns.rdatatype.DS:
            try:
                if dns.dnssec.make_ds(zone, key, anchor.digest_type) == anchor:
                    return True
            except (dns.dnssec.UnsupportedAlgorithm, ValueError):
                continue
    return False


def _validate(rrset: dns.rrset.RRset, sigs: dns.rrset.RRset | None, signer: dns.name.Name,
              keys: dns.rrset.RRset) -> None:
    if not sigs:
        raise DnssecError(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}: no signature")
    try:
        dns.dnssec.validate(rrset, sigs, {signer: keys})
    except dns.dnssec.ValidationFailure as exc:
        raise DnssecError(f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}: "
                          f"bad DNSSEC signature ({exc})") from None
