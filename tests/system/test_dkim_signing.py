"""DKIM signing end to end: `mailforge dkim generate|list|remove`, then mail submitted with AUTH
and a DSN the server writes are relayed to a sink signed (RSA and Ed25519 both), verified by
Debian's OpenDKIM and by dkimpy against the keys served by a real DNS server (Knot)."""

from __future__ import annotations

import os
import smtplib
import stat

import dkim
import pytest

from mailforge.config import DnsConfig
from mailforge.mailauth.keys import KeyStore
from mailforge.resolver import Resolver
from tests.smtp_sinks import Behaviour, Sink
from tests.system import opendkim
from tests.system.dns_server import txt
from tests.system.postfix_peer import PostfixPeer, PostfixUnavailable

from .conftest import DOMAIN, PASSWORD, USER, cli
from .test_outbound import send, to, wait_until
from .test_submission import client_context

REMOTE = "remote.test"
HOSTNAME = "mx.example.test"


@pytest.fixture
def sink():
    instance = Sink(Behaviour())
    yield instance
    instance.stop()


def published(server, dns_server) -> None:
    """Every key's TXT record, in the zones of example.test (users) and the host (DSNs)."""
    keys = [line.split() for line in cli(server.conf, "dkim", "list").stdout.splitlines()[1:]]
    zones: dict[str, list[str]] = {DOMAIN: [], HOSTNAME: []}
    for domain, selector, *_ in keys:
        record = next(k for k in _store(server).keys(domain) if k.selector == selector)
        zones[domain].append(txt(f"{selector}._domainkey", record.dns_record()))
    for zone, records in zones.items():
        dns_server.zone(zone, records)


def started_with_keys(server, dns_server, keys: list[tuple[str, str]]) -> None:
    """The server started with a key of each (domain, algorithm), published in Knot."""
    for domain, algorithm in keys:
        cli(server.conf, "dkim", "generate", domain, "--algorithm", algorithm)
    published(server, dns_server)
    server.start()


def submit(server, rcpt: str, body: bytes) -> None:
    """`body` sent by USER over submission with STARTTLS and AUTH: ours to sign."""
    with smtplib.SMTP("127.0.0.1", server.submission_port, timeout=30) as client:
        client.starttls(context=client_context(server))
        client.login(USER, PASSWORD)
        client.sendmail(USER, [rcpt], body)


def _store(server) -> KeyStore:
    return KeyStore(server.config.dkim_dir)


def verified_by_dkimpy(data: bytes, nameserver: str) -> list[bool]:
    resolver = Resolver(DnsConfig(nameservers=[nameserver]))
    lookup = lambda name, timeout=5: (resolver.txt_blocking(name.decode()) or [""])[0].encode()  # noqa: E731
    count = sum(1 for line in data.split(b"\r\n\r\n")[0].split(b"\r\n")
                if line.lower().startswith(b"dkim-signature:"))
    return [dkim.DKIM(data).verify(i, dnsfunc=lookup) for i in range(count)]


def test_cli_keys_and_rotation(make_server):
    server = make_server()
    made = cli(server.conf, "dkim", "generate", DOMAIN, "--selector", "old")
    assert "old._domainkey.example.test. IN TXT" in made.stdout and "k=rsa; p=" in made.stdout
    cli(server.conf, "dkim", "generate", DOMAIN, "--selector", "new")
    cli(server.conf, "dkim", "generate", DOMAIN, "--algorithm", "ed25519", "--selector", "ed")
    key = server.config.dkim_dir / DOMAIN / "new.rsa.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    rows = {line.split()[1]: line.split()[3] for line in
            cli(server.conf, "dkim", "list").stdout.splitlines()[1:]}
    assert rows == {"old": "no", "new": "yes", "ed": "yes"}  # two RSA selectors live at once
    taken = cli(server.conf, "dkim", "generate", DOMAIN, "--selector", "new", check=False)
    assert taken.returncode == 2 and taken.stderr.count("\n") == 1 and "already" in taken.stderr
    cli(server.conf, "dkim", "remove", DOMAIN, "old")
    gone = cli(server.conf, "dkim", "remove", DOMAIN, "old", check=False)
    assert gone.returncode == 2 and "no key" in gone.stderr
    bad = cli(server.conf, "dkim", "generate", DOMAIN, "--algorithm", "dsa", check=False)
    assert bad.returncode == 2


def test_submitted_mail_and_dsns_are_signed_and_verify(make_server, sink, dns_server, tmp_path):
    server = make_server(tls_services=True, server={"hostname": HOSTNAME},
                         relay={"mode": "networks", "networks": ["127.0.0.0/8"]},
                         delivery={"mx_override": {REMOTE: sink.address},
                                   "retry_schedule": [0.5], "max_queue_time": 60.0})
    started_with_keys(server, dns_server,
                      [(DOMAIN, "rsa"), (DOMAIN, "ed25519"), (HOSTNAME, "rsa")])
    body = (f"From: {USER}\r\nTo: ok@{REMOTE}\r\nSubject: signed\r\n"
            f"Date: Fri, 04 Dec 2026 19:00:00 +0000\r\nMessage-ID: <s1@{DOMAIN}>\r\n\r\n"
            ".dot line\r\nbody\r\n").encode()
    submit(server, f"ok@{REMOTE}", body)
    # Relayed without AUTH (relay networks): not ours to sign; its bounce is.
    send(server, [f"bad@{REMOTE}"], body=body.replace(b"ok@", b"bad@"), sender=f"who@{REMOTE}")
    (signed,) = wait_until(lambda: to(sink, f"ok@{REMOTE}"), what="the submitted message")
    (bounce,) = wait_until(lambda: to(sink, f"who@{REMOTE}"), what="the bounce")
    assert signed.data.startswith(b"DKIM-Signature:")
    headers = signed.data.split(b"\r\n\r\n")[0]
    assert b"a=ed25519-sha256" in headers and b"a=rsa-sha256" in headers
    assert b"c=relaxed/relaxed" in headers
    assert verified_by_dkimpy(signed.data, dns_server.nameserver) == [True, True]
    assert bounce.data.startswith(b"DKIM-Signature:") and f"d={HOSTNAME}".encode() in bounce.data
    assert verified_by_dkimpy(bounce.data, dns_server.nameserver) == [True]
    # OpenDKIM, an independent implementation, verifies each algorithm's signature.
    keys = tmp_path / "opendkim-keys.txt"
    keys.write_text("".join(f"{k.record_name} {k.dns_record()}\n" for k in _store(server).keys()))
    for algorithm in (b"rsa-sha256", b"ed25519-sha256"):
        only = _one_signature(signed.data, algorithm)
        verdict = opendkim.verify(only, tmp_path / algorithm.decode(), keys)
        assert "verification" in verdict and "succeeded" in verdict, verdict
    tampered = _one_signature(signed.data, b"rsa-sha256").replace(b"body", b"BODY")
    assert "succeeded" not in opendkim.verify(tampered, tmp_path / "tampered", keys)


def _one_signature(data: bytes, algorithm: bytes) -> bytes:
    """The message with only its signature of `algorithm` (OpenDKIM reports on the first)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    fields, current = [], []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            current.append(line)
        else:
            current = [line]
            fields.append(current)
    kept = [f for f in fields if not f[0].lower().startswith(b"dkim-signature:")
            or algorithm in b"".join(f)]
    return b"\r\n".join(b"\r\n".join(f) for f in kept) + b"\r\n\r\n" + rest


@pytest.fixture
def postfix():
    peer = PostfixPeer(REMOTE)
    try:
        peer.start()
    except PostfixUnavailable as exc:
        peer.stop()
        pytest.skip(f"Postfix cannot run here: {exc}")
    yield peer
    peer.stop()


def test_signature_survives_relay_through_postfix(make_server, postfix, dns_server):
    """Postfix, a peer MX, receives our signed message, adds its own trace headers and stores
    it in a Maildir with LF line ends: both signatures still verify on what it stored."""
    server = make_server(tls_services=True, server={"hostname": HOSTNAME},
                         delivery={"mx_override": {REMOTE: postfix.address}})
    started_with_keys(server, dns_server, [(DOMAIN, "rsa"), (DOMAIN, "ed25519")])
    body = (f"From: {USER}\r\nTo: bob@{REMOTE}\r\nSubject: through postfix\r\n"
            f"Date: Fri, 04 Dec 2026 19:00:00 +0000\r\nMessage-ID: <p1@{DOMAIN}>\r\n\r\n"
            ".dot line\r\ntrailing space \r\n\tand a tab\r\n").encode()
    submit(server, f"bob@{REMOTE}", body)
    (stored,) = wait_until(postfix.stored, what=f"Postfix's delivery; its log: {postfix.log()}")
    assert b"by peer.remote.test (Postfix)" in stored
    crlf = stored.replace(b"\n", b"\r\n")
    assert verified_by_dkimpy(crlf, dns_server.nameserver) == [True, True]
    with pytest.raises(dkim.ValidationError, match="body hash mismatch"):
        verified_by_dkimpy(crlf.replace(b"and a tab", b"and a TAB"), dns_server.nameserver)
