"""What NSEC and NSEC3 records prove (tlspolicy/denial.py), on hand-made zones; the signatures
are the system tests' business (tests/system/test_outbound_tls.py against Knot), except for
answers synthesised from a wildcard, which Knot always sends with their proof: those are
signed here with dnspython and given to SecureLookup by a stand-in resolver."""

from __future__ import annotations

import asyncio
import base64

import dns.dnssec
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mailforge.config import DnsConfig
from mailforge.tlspolicy.denial import MAX_NSEC3_ITERATIONS, Denial, prove, prove_wildcard
from mailforge.tlspolicy.dnssec import DnssecError, SecureLookup

ZONE = dns.name.from_text("example.test")
SALT, ITERATIONS = "", 0
# base32 → base32hex (RFC 4648 7), the NSEC3 owner names' alphabet.
_TO_HEX = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789ABCDEFGHIJKLMNOPQRSTUV")


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text, ZONE)


def nsec(owner: str, following: str, types: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(name(owner), 300, "IN", "NSEC", f"{name(following)} {types}")


def nsec3_hash(text: str) -> str:
    return dns.dnssec.nsec3_hash(name(text), SALT, ITERATIONS, 1)


def nsec3(owner_hash: str, next_hash: str, types: str, opt_out: bool = False,
          iterations: int = ITERATIONS) -> dns.rrset.RRset:
    """An NSEC3 record from one hash to the next (base32hex, as owner labels are)."""
    owner = dns.name.Name((owner_hash.lower().encode(),) + ZONE.labels)
    return dns.rrset.from_text(owner, 300, "IN", "NSEC3",
                               f"1 {int(opt_out)} {iterations} - {next_hash} {types}")


def chain3(existing: list[str], types: dict[str, str], opt_out: bool = False) -> list[dns.rrset.RRset]:
    """The whole NSEC3 chain of a zone whose names are `existing`."""
    hashes = sorted((nsec3_hash(n), n) for n in existing)
    return [nsec3(h, hashes[(i + 1) % len(hashes)][0], types.get(n, "A"), opt_out)
            for i, (h, n) in enumerate(hashes)]


def test_nsec_nodata_only_when_the_names_bitmap_lacks_the_type_and_cname():
    records = [nsec("mx", "www", "A RRSIG NSEC")]
    assert prove(name("mx"), dns.rdatatype.TLSA, False, ZONE, records) is Denial.NODATA
    assert prove(name("mx"), dns.rdatatype.A, False, ZONE, records) is None
    assert prove(name("mx"), dns.rdatatype.TLSA, False, ZONE,
                 [nsec("mx", "www", "CNAME RRSIG NSEC")]) is None
    assert prove(name("other"), dns.rdatatype.TLSA, False, ZONE, records) is None


def test_nsec_ds_at_a_delegation_without_ds_is_an_unsigned_delegation():
    assert prove(name("child"), dns.rdatatype.DS, False, ZONE,
                 [nsec("child", "mx", "NS RRSIG NSEC")]) is Denial.UNSIGNED_DELEGATION
    assert prove(name("child"), dns.rdatatype.DS, False, ZONE,
                 [nsec("child", "mx", "A RRSIG NSEC")]) is Denial.NODATA
    assert prove(ZONE, dns.rdatatype.DS, False, ZONE,
                 [nsec("@", "mx", "NS SOA RRSIG NSEC DNSKEY")]) is Denial.NODATA


def test_nsec_nxdomain_needs_the_name_and_its_wildcard_covered():
    covering = nsec("mx", "www", "A RRSIG NSEC")  # covers _25._tcp.nope
    apex = nsec("@", "mx", "NS SOA RRSIG NSEC DNSKEY")  # covers *.example.test
    qname = name("_25._tcp.nope")
    assert prove(qname, dns.rdatatype.TLSA, True, ZONE, [covering, apex]) is Denial.NXDOMAIN
    assert prove(qname, dns.rdatatype.TLSA, True, ZONE, [covering]) is None  # a wildcard may be
    assert prove(qname, dns.rdatatype.TLSA, True, ZONE, [apex]) is None  # the name may be
    # The last NSEC of the zone wraps round to the apex.
    assert prove(name("zzz"), dns.rdatatype.TLSA, True, ZONE,
                 [nsec("www", "@", "A RRSIG NSEC"), apex]) is Denial.NXDOMAIN


def test_nsec_empty_non_terminal_is_nodata():
    # _tcp.mx exists only as the parent of _25._tcp.mx.
    records = [nsec("mx", "_25._tcp.mx", "A RRSIG NSEC")]
    assert prove(name("_tcp.mx"), dns.rdatatype.TLSA, False, ZONE, records) is Denial.NODATA


def test_nsec3_nodata_and_nxdomain_by_the_closest_encloser_proof():
    records = chain3(["@", "mx", "www"], {"@": "NS SOA RRSIG DNSKEY NSEC3PARAM"})
    assert prove(name("mx"), dns.rdatatype.TLSA, False, ZONE, records) is Denial.NODATA
    assert prove(name("mx"), dns.rdatatype.A, False, ZONE, records) is None
    assert prove(name("_25._tcp.mx"), dns.rdatatype.TLSA, True, ZONE, records) is Denial.NXDOMAIN
    # Without the span covering the next closer name (_tcp.mx), nothing is proven.
    next_closer = nsec3_hash("_tcp.mx")
    partial = [r for r in records if not _covers(r, next_closer)]
    assert prove(name("_25._tcp.mx"), dns.rdatatype.TLSA, True, ZONE, partial) is None


def test_nsec3_opt_out_and_too_many_iterations_leave_it_insecure():
    records = chain3(["@", "mx", "www"], {"@": "NS SOA RRSIG DNSKEY NSEC3PARAM"}, opt_out=True)
    assert prove(name("child"), dns.rdatatype.DS, False, ZONE, records) is Denial.OPT_OUT
    costly = [nsec3(nsec3_hash("mx"), nsec3_hash("mx"), "A", iterations=MAX_NSEC3_ITERATIONS + 1)]
    assert prove(name("mx"), dns.rdatatype.TLSA, False, ZONE, costly) is Denial.TOO_COSTLY
    assert Denial.OPT_OUT.insecure and Denial.TOO_COSTLY.insecure and not Denial.NXDOMAIN.insecure


def test_no_proof_records_prove_nothing():
    assert prove(name("mx"), dns.rdatatype.TLSA, False, ZONE, []) is None


def test_nsec_wildcard_answer_needs_its_name_covered_below_the_wildcards_parent():
    apex_to_wild = nsec("@", "*.wild", "NS SOA RRSIG NSEC DNSKEY")
    wild_to_apex = nsec("*.wild", "@", "A RRSIG NSEC")  # covers x.wild
    qname, encloser = name("x.wild"), name("wild")
    assert prove_wildcard(qname, encloser, ZONE, [wild_to_apex]) is Denial.NXDOMAIN
    assert prove_wildcard(qname, encloser, ZONE, [apex_to_wild]) is None  # x.wild may exist
    assert prove_wildcard(qname, encloser, ZONE, []) is None
    # y.x.wild covered, but x.wild exists (the NSEC runs from it): a closer match was there.
    assert prove_wildcard(name("y.x.wild"), encloser, ZONE,
                          [nsec("x.wild", "@", "A RRSIG NSEC")]) is None


def test_wildcard_nodata_needs_the_name_covered_and_the_wildcards_own_bitmap():
    # What Knot answers for _25._tcp.host.wild TLSA when only *.wild A exists.
    wild_to_apex = nsec("*.wild", "@", "A RRSIG NSEC")
    qname = name("_25._tcp.host.wild")
    assert prove(qname, dns.rdatatype.TLSA, False, ZONE, [wild_to_apex]) is Denial.NODATA
    assert prove(qname, dns.rdatatype.A, False, ZONE, [wild_to_apex]) is None
    # Covered, but no NSEC of the wildcard: it may hold the type.
    assert prove(qname, dns.rdatatype.TLSA, False, ZONE,
                 [nsec("host", "@", "A RRSIG NSEC")]) is None
    records = chain3(["@", "wild", "*.wild"], {"@": "NS SOA RRSIG DNSKEY NSEC3PARAM"})
    assert prove(qname, dns.rdatatype.TLSA, False, ZONE, records) is Denial.NODATA
    assert prove(qname, dns.rdatatype.A, False, ZONE, records) is None
    without_wildcard = chain3(["@", "wild"], {"@": "NS SOA RRSIG DNSKEY NSEC3PARAM"})
    assert prove(qname, dns.rdatatype.TLSA, False, ZONE, without_wildcard) is None


def test_nsec3_wildcard_answer_needs_the_next_closer_name_covered():
    records = chain3(["@", "wild", "*.wild"], {"@": "NS SOA RRSIG DNSKEY NSEC3PARAM"})
    assert prove_wildcard(name("a.b.wild"), name("wild"), ZONE, records) is Denial.NXDOMAIN
    next_closer = nsec3_hash("b.wild")
    partial = [r for r in records if not _covers(r, next_closer)]
    assert prove_wildcard(name("a.b.wild"), name("wild"), ZONE, partial) is None
    costly = [nsec3(nsec3_hash("wild"), nsec3_hash("wild"), "A",
                    iterations=MAX_NSEC3_ITERATIONS + 1)]
    assert prove_wildcard(name("a.b.wild"), name("wild"), ZONE, costly) is Denial.TOO_COSTLY


class SignedZone:
    """ZONE signed by one Ed25519 key, its own trust anchor; answers as a resolver would."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.dnskey = dns.dnssec.make_dnskey(self.key.public_key(),
                                             dns.dnssec.Algorithm.ED25519, flags=257)
        self.responses: dict[tuple[str, str], dns.message.Message] = {}
        keyset = dns.rrset.from_rdata(ZONE, 300, self.dnskey)
        self.respond(ZONE, "DNSKEY", [keyset, self.sign(keyset)])

    def sign(self, rrset: dns.rrset.RRset, owner: dns.name.Name | None = None) -> dns.rrset.RRset:
        """The RRSIG of `rrset`, placed at `owner` (a wildcard's signature stands at the
        name it was expanded to)."""
        sig = dns.dnssec.sign(rrset, self.key, ZONE, self.dnskey, lifetime=3600)
        return dns.rrset.from_rdata(owner or rrset.name, rrset.ttl, sig)

    def respond(self, qname: dns.name.Name, rdtype: str, answer: list[dns.rrset.RRset],
                authority: list[dns.rrset.RRset] = ()) -> None:
        response = dns.message.make_response(dns.message.make_query(qname, rdtype))
        response.answer, response.authority = list(answer), list(authority)
        # Through the wire, as a resolver's answer comes (and so with the message's index).
        self.responses[(qname.to_text(), rdtype)] = dns.message.from_wire(response.to_wire())

    async def query_signed(self, qname: str, rdtype: str) -> tuple[dns.message.Message, bool]:
        return self.responses[(dns.name.from_text(qname).to_text(), rdtype)], False


@pytest.fixture
def signed_zone(tmp_path):
    zone = SignedZone()
    anchor = tmp_path / "anchor.txt"
    anchor.write_text(f"{ZONE} IN DNSKEY {zone.dnskey.to_text()}\n")
    return zone, SecureLookup(zone, DnsConfig(trust_anchor=str(anchor)))


def test_a_wildcard_expanded_answer_is_secure_only_with_its_proof(signed_zone):
    zone, lookup = signed_zone
    wildcard = dns.rrset.from_text(name("*.wild"), 300, "IN", "A", "192.0.2.1")
    expanded = dns.rrset.from_text(name("x.wild"), 300, "IN", "A", "192.0.2.1")
    proof = nsec("*.wild", "@", "A RRSIG NSEC")
    answer = [expanded, zone.sign(wildcard, expanded.name)]
    zone.respond(expanded.name, "A", answer, [proof, zone.sign(proof)])
    found = asyncio.run(lookup.lookup("x.wild.example.test", "A"))
    assert found.secure and [r.address for r in found.records] == ["192.0.2.1"]

    zone.respond(expanded.name, "A", answer)  # the proof left out
    with pytest.raises(DnssecError, match=r"x\.wild\.example\.test\. A: synthesised from the "
                       r"wildcard \*\.wild\.example\.test\. without proof"):
        asyncio.run(lookup.lookup("x.wild.example.test", "A"))

    # Signed as if it were an answer at *.wild: not a wildcard, no proof needed.
    zone.respond(wildcard.name, "A", [wildcard, zone.sign(wildcard)])
    assert asyncio.run(lookup.lookup("*.wild.example.test", "A")).secure


def _covers(rrset: dns.rrset.RRset, digest: str) -> bool:
    owner = rrset.name.labels[0].decode().upper()
    following = base64.b32encode(rrset[0].next).translate(_TO_HEX).decode()
    return owner < digest < following if owner < following else digest > owner or digest < following


def test_a_delegations_own_record_proves_nothing_below_it():
    """RFC 6840 4.1: the parent's NSEC or NSEC3 at a delegation point (NS without SOA), or at
    a DNAME, speaks for the parent side only. Replayed with NXDOMAIN, it would deny a signed
    child zone's TLSA records, and DANE would fall back to opportunistic TLS."""
    qname = name("_25._tcp.mx.child")
    cut = nsec("child", "www", "NS DS RRSIG NSEC")  # covers qname and *.child
    assert prove(qname, dns.rdatatype.TLSA, True, ZONE, [cut]) is None
    assert prove(qname, dns.rdatatype.TLSA, True, ZONE, [nsec("child", "www", "DNAME RRSIG NSEC")]) is None
    assert prove(qname, dns.rdatatype.TLSA, True, ZONE, [nsec("child", "www", "A RRSIG NSEC")]) \
        is Denial.NXDOMAIN  # an ordinary name: its subtree is empty, as proven
    assert prove_wildcard(qname, name("mx.child"), ZONE, [cut]) is None
    records = chain3(["@", "child", "www"], {"@": "NS SOA RRSIG DNSKEY NSEC3PARAM",
                                            "child": "NS DS RRSIG"})
    assert prove(qname, dns.rdatatype.TLSA, True, ZONE, records) is None
    records = chain3(["@", "child", "www"], {"@": "NS SOA RRSIG DNSKEY NSEC3PARAM"})
    assert prove(qname, dns.rdatatype.TLSA, True, ZONE, records) is Denial.NXDOMAIN


def test_a_zones_keys_are_kept_for_their_ttl_not_for_the_process_life(tmp_path):
    """A key rollover: the zone publishes a new signing key and signs with it. The keys kept
    from before are used for their TTL at most; then the new set is fetched, and validates."""
    zone, now = SignedZone(), [0.0]
    anchor = tmp_path / "anchor.txt"
    anchor.write_text(f"{ZONE} IN DNSKEY {zone.dnskey.to_text()}\n")
    lookup = SecureLookup(zone, DnsConfig(trust_anchor=str(anchor)), clock=lambda: now[0])
    first = dns.rrset.from_text(name("mx"), 300, "IN", "A", "192.0.2.1")
    zone.respond(first.name, "A", [first, zone.sign(first)])
    assert asyncio.run(lookup.lookup("mx.example.test", "A")).secure

    new_key = Ed25519PrivateKey.generate()
    new_dnskey = dns.dnssec.make_dnskey(new_key.public_key(), dns.dnssec.Algorithm.ED25519)
    keyset = dns.rrset.from_rdata(ZONE, 300, zone.dnskey, new_dnskey)
    zone.respond(ZONE, "DNSKEY", [keyset, zone.sign(keyset)])
    second = dns.rrset.from_text(name("mx2"), 300, "IN", "A", "192.0.2.2")
    signature = dns.dnssec.sign(second, new_key, ZONE, new_dnskey, lifetime=3600)
    zone.respond(second.name, "A", [second, dns.rrset.from_rdata(second.name, 300, signature)])
    now[0] += 301  # past the DNSKEY set's TTL
    assert asyncio.run(lookup.lookup("mx2.example.test", "A")).secure
