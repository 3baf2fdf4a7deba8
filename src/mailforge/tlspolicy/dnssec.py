"""DNSSEC-secured lookups for DANE: records with a verdict, secure or not.

"validate" checks the RRSIGs here (dnspython's dns.dnssec) up a chain of DS records to a
trust anchor, each zone's DNSKEY set checked once and kept for the process's life (bounded);
"trust-ad" takes the AD bit of a validating resolver the operator names; "off" calls nothing
secure. An answer without signatures is insecure (no DANE); one whose signatures do not
validate is bogus: `DnssecError`, which DANE turns into a deferral (RFC 7672 2.2).
"""

from __future__ import annotations

import dns.dnssec
import dns.flags
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..config import DnsConfig
from ..resolver import Resolver

# The root zone's key-signing key since 2018 (KSK-2017), as IANA publishes it.
ROOT_ANCHOR = ". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D"
# Zones whose validated DNSKEY sets are kept; a busy relay meets a few thousand zones a day.
MAX_ZONES = 5_000
# A chain of DS records longer than this is a loop or an attack, not a real delegation path.
MAX_CHAIN = 16


class DnssecError(Exception):
    """Signatures present but not valid (bogus), or no way to tell: never an insecure pass."""


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


class SecureLookup:
    def __init__(self, resolver: Resolver, config: DnsConfig) -> None:
        self.resolver = resolver
        self.mode = config.dnssec
        anchor_text = ROOT_ANCHOR
        if config.trust_anchor:
            with open(config.trust_anchor, encoding="ascii") as fh:
                anchor_text = fh.read()
        self.anchors = load_anchors(anchor_text)
        self._keys: dict[dns.name.Name, dns.rrset.RRset | None] = {}

    async def records(self, name: str, rdtype: str, depth: int = 0) -> tuple[list[dns.rdata.Rdata], bool]:
        """The records of `rdtype` at `name` and whether they are secure."""
        if self.mode == "off":
            return list(await self.resolver.lookup(name, rdtype)), False
        answer = await self.resolver.lookup_signed(name, rdtype)
        if answer is None or answer.rrset is None:
            return [], False
        rrset = answer.rrset
        if self.mode == "trust-ad":
            return list(rrset), bool(answer.response.flags & dns.flags.AD)
        sigs = answer.response.get_rrset(answer.response.answer, rrset.name, rrset.rdclass,
                                         dns.rdatatype.RRSIG, rrset.rdtype)
        if not sigs:
            return list(rrset), False
        signer = sigs[0].signer
        keys = await self._zone_keys(signer, depth)
        if keys is None:
            return list(rrset), False
        _validate(rrset, sigs, signer, keys)
        return list(rrset), True

    async def _zone_keys(self, zone: dns.name.Name, depth: int) -> dns.rrset.RRset | None:
        """The zone's DNSKEY set, validated from an anchor; None when the chain is insecure."""
        if zone in self._keys:
            return self._keys[zone]
        if depth > MAX_CHAIN:
            raise DnssecError(f"DNSSEC chain to {zone} is too long")
        answer = await self.resolver.lookup_signed(zone.to_text(), "DNSKEY")
        if answer is None or answer.rrset is None:
            raise DnssecError(f"{zone} signs records but publishes no DNSKEY")
        keyset = answer.rrset
        if zone in self.anchors:
            trusted = [k for k in keyset if _anchored(zone, k, self.anchors[zone])]
        else:
            ds, secure = await self.records(zone.to_text(), "DS", depth + 1)
            if not secure:
                return self._keep(zone, None)  # an insecure delegation: not ours to judge
            trusted = [k for k in keyset if _anchored(zone, k, ds)]
        if not trusted:
            raise DnssecError(f"no DNSKEY of {zone} matches its trust anchor or DS")
        sigs = answer.response.get_rrset(answer.response.answer, zone, keyset.rdclass,
                                         dns.rdatatype.RRSIG, dns.rdatatype.DNSKEY)
        anchor_set = dns.rrset.from_rdata_list(zone, keyset.ttl, trusted)
        _validate(keyset, sigs, zone, anchor_set)
        return self._keep(zone, keyset)

    def _keep(self, zone: dns.name.Name, keys: dns.rrset.RRset | None) -> dns.rrset.RRset | None:
        if len(self._keys) >= MAX_ZONES:
            self._keys.clear()
        self._keys[zone] = keys
        return keys


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
