"""The pure parts of outbound transport security: DANE matching, MTA-STS records and
policies, TLS-RPT aggregation and addresses, the TLS-Required header."""

from __future__ import annotations

import datetime
import hashlib
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from mailforge.queue.relay import says_tls_not_required
from mailforge.resolver import TemporaryDnsError, _addresses
from mailforge.tlspolicy.dane import Tlsa, check_chain, name_matches
from mailforge.tlspolicy.mtasts import PolicyError, parse_policy, txt_id
from mailforge.tlspolicy.report_post import _connect
from mailforge.tlspolicy.tlsrpt import build_report, rua_uris

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)


def certificate(name: str, key, issuer_name: str, issuer_key, ca: bool = False) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(1)
               .not_valid_before(NOW).not_valid_after(NOW + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def chain():
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("ca", ca_key, "ca", ca_key, ca=True)
    leaf = certificate("mx.example.net", leaf_key, "ca", ca_key)
    return leaf, ca


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def test_dane_ee_matches_by_spki_or_whole_certificate_without_names(chain):
    leaf, ca = chain
    for record in (Tlsa(3, 1, 1, hashlib.sha256(spki(leaf)).digest()),
                   Tlsa(3, 1, 2, hashlib.sha512(spki(leaf)).digest()),
                   Tlsa(3, 0, 0, der(leaf))):
        assert check_chain([record], [der(leaf)], ["other.example"]) == ""
    wrong = Tlsa(3, 1, 1, hashlib.sha256(spki(ca)).digest())
    assert "no certificate" in check_chain([wrong], [der(leaf), der(ca)], ["mx.example.net"])


def test_dane_ta_needs_the_chain_and_a_name(chain):
    leaf, ca = chain
    record = Tlsa(2, 1, 1, hashlib.sha256(spki(ca)).digest())
    assert check_chain([record], [der(leaf), der(ca)], ["mx.example.net", "example.net"],
                       NOW) == ""
    assert "names none" in check_chain([record], [der(leaf), der(ca)], ["mx.other.net"], NOW)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    stranger = certificate("mx.example.net", stranger_key, "ca", stranger_key)
    assert "does not lead" in check_chain([record], [der(stranger), der(ca)],
                                          ["mx.example.net"], NOW)


def test_dane_ta_checks_the_dates_below_the_anchor_and_dane_ee_ignores_them(chain):
    """RFC 7672 3.1.1: a DANE-EE match ignores expiry; RFC 7671 5.2: below a DANE-TA
    anchor the chain is validated as under a root, dates included (the anchor's not)."""
    leaf, ca = chain  # valid from NOW for one day, both
    ta = Tlsa(2, 1, 1, hashlib.sha256(spki(ca)).digest())
    ee = Tlsa(3, 1, 1, hashlib.sha256(spki(leaf)).digest())
    later, earlier = NOW + datetime.timedelta(days=2), NOW - datetime.timedelta(days=1)
    assert "expired 2026-12-02" in check_chain([ta], [der(leaf), der(ca)], ["mx.example.net"], later)
    assert "not valid before" in check_chain([ta], [der(leaf), der(ca)], ["mx.example.net"], earlier)
    assert check_chain([ee], [der(leaf), der(ca)], ["mx.example.net"], later) == ""
    # The anchor's own dates do not count: the TLSA record vouches for its key.
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    old_ca = certificate("old-ca", ca_key, "old-ca", ca_key, ca=True)  # expired at `later`
    fresh_leaf = (x509.CertificateBuilder()
                  .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example.net")]))
                  .issuer_name(old_ca.subject).public_key(leaf_key.public_key()).serial_number(2)
                  .not_valid_before(NOW).not_valid_after(later + datetime.timedelta(days=1))
                  .add_extension(x509.SubjectAlternativeName([x509.DNSName("mx.example.net")]),
                                 critical=False)
                  .sign(ca_key, hashes.SHA256()))
    old_ta = Tlsa(2, 1, 1, hashlib.sha256(spki(old_ca)).digest())
    assert check_chain([old_ta], [der(fresh_leaf), der(old_ca)], ["mx.example.net"], later) == ""


def test_names_and_wildcards():
    assert name_matches("*.example.net", "mx1.example.net")
    assert not name_matches("*.example.net", "a.mx1.example.net")
    assert not name_matches("*.example.net", "example.net")
    assert name_matches("MX.Example.net.", "mx.example.net")


def test_mta_sts_record_and_policy():
    assert txt_id(["v=STSv1; id=2026-01-01;"]) is None  # an id is letters and digits only
    assert txt_id(["v=STSv1; id=abc123", "v=spf1 -all"]) == "abc123"
    assert txt_id(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # two records: none (3.1)
    policy = parse_policy("example.net", "abc", "version: STSv1\r\nmode: enforce\r\n"
                          "mx: *.example.net\r\nmx: backup.example.org\r\nmax_age: 999999999\r\n", 10.0)
    assert policy.mode == "enforce" and policy.max_age == 31_557_600
    assert policy.allows("mx1.example.net") and policy.allows("backup.example.org")
    assert not policy.allows("evil.example.com")
    assert not policy.expired(10.0 + 31_557_599) and policy.expired(10.0 + 31_557_600)
    for bad in ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",
                "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
                "version: STSv1\nmode: enforce\nmax_age: 1\n"):
        with pytest.raises(PolicyError) as error:
            parse_policy("example.net", "abc", bad, 0.0)
        assert error.value.result_type == "sts-policy-invalid"


def test_tls_rpt_report_adds_up_each_policy():
    sts = {"policy_type": "sts", "policy_string": ["version: STSv1", "mode: enforce"],
           "mx_host": ["mx.example.net"]}
    lines = [{**sts, "result": "success", "receiving_mx": "", "receiving_ip": "", "reason": "",
              "count": 3},
             {**sts, "result": "certificate-expired", "receiving_mx": "mx.example.net",
              "receiving_ip": "192.0.2.1", "reason": "expired", "count": 1},
             {**sts, "result": "certificate-expired", "receiving_mx": "mx.example.net",
              "receiving_ip": "192.0.2.1", "reason": "expired", "count": 2}]
    report = build_report("example.net", "2026-12-01", lines, "mx.sender.test", "postmaster@x")
    assert report["date-range"] == {"start-datetime": "2026-12-01T00:00:00Z",
                                    "end-datetime": "2026-12-01T23:59:59Z"}
    (policy,) = report["policies"]
    assert policy["policy"]["policy-domain"] == "example.net"
    assert policy["summary"] == {"total-successful-session-count": 3,
                                 "total-failure-session-count": 3}
    assert policy["failure-details"] == [{
        "result-type": "certificate-expired", "receiving-mx-hostname": "mx.example.net",
        "receiving-ip": "192.0.2.1", "failure-reason-code": "expired", "failed-session-count": 3}]


def test_tls_rpt_uris():
    assert rua_uris(["v=TLSRPTv1; rua=mailto:a@example.net,https://r.example/x, ftp://f, mailto:b@x"]) \
        == ["mailto:a@example.net", "https://r.example/x", "mailto:b@x"]
    assert rua_uris(["v=spf1 -all"]) == []


def test_tls_required_no_header():
    assert says_tls_not_required(b"Subject: x\r\nTLS-Required:  NO \r\n\r\nbody")
    assert not says_tls_not_required(b"Subject: x\r\n\r\nTLS-Required: No\r\n")
    assert not says_tls_not_required(b"TLS-Required: yes\r\n\r\n")


def test_an_address_lookup_takes_what_either_family_found():
    found = [SimpleNamespace(address="127.0.0.1")]
    assert _addresses([TemporaryDnsError("AAAA: timeout"), found]) == ["127.0.0.1"]
    assert _addresses([[SimpleNamespace(address="::1")], found]) == ["::1", "127.0.0.1"]
    assert _addresses([[], []]) == []
    with pytest.raises(TemporaryDnsError, match="A: timeout"):
        _addresses([[], TemporaryDnsError("A: timeout")])


def test_a_report_post_goes_on_to_the_next_address_when_one_refuses():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with _connect(["127.0.0.3", "127.0.0.1"], port, 5) as connection:
            assert connection.getpeername() == ("127.0.0.1", port)
        with pytest.raises(ConnectionRefusedError):
            _connect(["127.0.0.3"], port, 5)


def test_the_command_line_leaves_aiohttp_to_the_first_policy_fetch():
    """aiohttp costs every `mailforge` command a tenth of a second to import: MTA-STS (which
    the CLI reaches through tlsrpt) imports it only to fetch a policy."""
    probe = "import sys, mailforge.cli; print('aiohttp' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True, timeout=60)
    assert found.stdout.strip() == "False"
