"""What NSEC and NSEC3 records prove (tlspolicy/denial.py), on hand-made zones; the signatures
are the system tests' business (tests/system/test_outbound_tls.py against Knot)."""

from __future__ import annotations

import base64

import dns.dnssec
import dns.name
import dns.rdatatype
import dns.rrset

from mailforge.tlspolicy.denial import MAX_NSEC3_ITERATIONS, Denial, prove

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


def _covers(rrset: dns.rrset.RRset, digest: str) -> bool:
    owner = rrset.name.labels[0].decode().upper()
    following = base64.b32encode(rrset[0].next).translate(_TO_HEX).decode()
    return owner < digest < following if owner < following else digest > owner or digest < following
