"""ARC sealing of forwarded mail (RFC 8617), end to end: a message an outside domain signed
reaches a forwarding alias over port 25, is checked, and is relayed to a sink with our ARC set;
dkimpy verifies the chain against the keys Knot serves, and a next hop's seal over ours."""

from __future__ import annotations

import email
import re
import smtplib

import dkim
import pytest

from mailforge.config import DnsConfig
from mailforge.mailauth.keys import KeyStore
from mailforge.mailauth.signing import Signer
from mailforge.resolver import Resolver
from tests.smtp_sinks import Behaviour, Sink
from tests.system.dns_server import txt

from .conftest import DOMAIN, cli
from .test_outbound import to, wait_until

HOSTNAME = "mx.example.test"
OUTSIDE, NEXT_HOP, REMOTE = "outside.test", "nexthop.test", "remote.test"
SPF_PASS = txt("@", "v=spf1 ip4:127.0.0.1 -all")


@pytest.fixture
def sink():
    instance = Sink(Behaviour())
    yield instance
    instance.stop()


@pytest.fixture
def outside_keys(tmp_path) -> KeyStore:
    """RSA keys of the outside sender's domain and of the hop after us."""
    store = KeyStore(tmp_path / "outside-keys")
    for domain in (OUTSIDE, NEXT_HOP):
        store.generate(domain, "s1", "rsa")
    return store


def record(store: KeyStore, domain: str) -> str:
    (key,) = store.keys(domain)
    return txt(f"{key.selector}._domainkey", key.dns_record())


def private_key(store: KeyStore, domain: str) -> bytes:
    (key,) = store.keys(domain)
    return key.path.read_bytes()


def message(subject: str) -> bytes:
    return (f"From: sender@{OUTSIDE}\r\nTo: fwd@{DOMAIN}\r\nSubject: {subject}\r\n"
            f"Date: Fri, 04 Dec 2026 19:00:00 +0000\r\nMessage-ID: <{subject}@{OUTSIDE}>\r\n"
            f"\r\nbody of {subject}\r\n").encode()


def sealed_by_outside(data: bytes, store: KeyStore) -> bytes:
    """`data` as a mailing list at outside.test would pass it on: its verdict, ARC set i=1."""
    data = f"Authentication-Results: {OUTSIDE}; spf=pass smtp.mailfrom={OUTSIDE}\r\n".encode() + data
    return b"".join(dkim.arc_sign(data, b"s1", OUTSIDE.encode(), private_key(store, OUTSIDE),
                                  OUTSIDE.encode())) + data


def txt_lookup(nameserver: str):
    resolver = Resolver(DnsConfig(nameservers=[nameserver]))
    return lambda name, timeout=5: (resolver.txt_blocking(name.decode()) or [""])[0].encode()


def methods(results: str) -> list[str]:
    return re.findall(r"\b(?:spf|dkim|dmarc|arc)=\w+", results)


def header(data: bytes, name: str) -> list[str]:
    return [" ".join(v.split()) for v in email.message_from_bytes(data).get_all(name, [])]


def test_forwarded_mail_is_arc_sealed_and_a_next_hop_can_seal_over_it(
        make_server, sink, dns_server, outside_keys):
    server = make_server(server={"hostname": HOSTNAME},
                         dns={"nameservers": [dns_server.nameserver], "lifetime": 3.0},
                         authentication={"inbound_checks": True},
                         delivery={"mx_override": {REMOTE: sink.address}})
    cli(server.conf, "dkim", "generate", DOMAIN, "--algorithm", "rsa")
    cli(server.conf, "dkim", "generate", DOMAIN, "--algorithm", "ed25519")  # signs, never seals
    cli(server.conf, "alias", "add", f"fwd@{DOMAIN}", f"friend@{REMOTE}")
    ours = KeyStore(server.config.dkim_dir)
    dns_server.zone(DOMAIN, [txt(f"{k.selector}._domainkey", k.dns_record()) for k in ours.keys()])
    dns_server.zone(OUTSIDE, [SPF_PASS, record(outside_keys, OUTSIDE)])
    dns_server.zone(NEXT_HOP, [record(outside_keys, NEXT_HOP)])
    server.start()
    signer = Signer(outside_keys)
    signed = signer.sign(message("direct"))
    listed = sealed_by_outside(signer.sign(message("listed")), outside_keys)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        for data in (signed, listed):
            assert client.sendmail(f"sender@{OUTSIDE}", [f"fwd@{DOMAIN}"], data) == {}
    wait_until(lambda: len(to(sink, f"friend@{REMOTE}")) == 2, what="both forwarded messages")
    lookup = txt_lookup(dns_server.nameserver)
    relayed = {email.message_from_bytes(m.data)["Subject"]: m.data for m in sink.received}

    direct = relayed["direct"]
    assert direct.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.test")
    (results,) = header(direct, "ARC-Authentication-Results")
    (verdict,) = [v for v in header(direct, "Authentication-Results") if v.startswith(HOSTNAME)]
    assert methods(results) == methods(verdict)  # our Authentication-Results' verdict
    assert results.startswith(f"i=1; {HOSTNAME};") and "spf=pass" in results
    assert f"dkim=pass header.d={OUTSIDE}" in results and "arc=none" in results
    assert dkim.arc_verify(direct, dnsfunc=lookup)[0] == dkim.CV_Pass
    assert dkim.verify(direct, dnsfunc=lookup), "the sender's DKIM signature still verifies"

    chained = relayed["listed"]
    seals = header(chained, "ARC-Seal")
    assert [s.split(";")[0] for s in seals] == ["i=2", "i=1"]  # we continue the chain
    assert "cv=pass" in seals[0] and f"d={DOMAIN}" in seals[0]
    assert "arc=pass" in header(chained, "ARC-Authentication-Results")[0]
    assert dkim.arc_verify(chained, dnsfunc=lookup)[0] == dkim.CV_Pass
    assert dkim.verify(chained, dnsfunc=lookup)

    # The next hop, trusting the chain, seals over ours: i=3 validates too.
    received = f"Authentication-Results: {NEXT_HOP}; arc=pass\r\n".encode() + chained
    onward = b"".join(dkim.arc_sign(received, b"s1", NEXT_HOP.encode(),
                                    private_key(outside_keys, NEXT_HOP), NEXT_HOP.encode())) + received
    assert header(onward, "ARC-Seal")[0].startswith("i=3; cv=pass")
    verdict, per_set, _ = dkim.arc_verify(onward, dnsfunc=lookup)
    assert verdict == dkim.CV_Pass and [s["instance"] for s in per_set] == [3, 2, 1]
