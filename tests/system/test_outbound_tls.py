"""Outbound transport security end to end: a real `mailforge serve` relays to a second one
(the MX of every test domain, on loopback) through Knot DNS serving a DNSSEC-signed zone, with
MTA-STS policies from an HTTPS server on loopback and certificates from a throw-away CA.

    mx-good   certificate of the CA for its name       mx-other  names itself mx-good (mismatch)
    mx-dane   TLSA 3 1 1 of the certificate (match)    mx-danebad TLSA 3 1 1 of another key
"""

from __future__ import annotations

import email
import email.policy
import gzip
import json
import re
import smtplib
import ssl

import pytest

from tests.system.dns_server import txt
from tests.system.mta_sts_server import MtaStsServer, policy_text
from tests.system.throwaway_ca import ThrowawayCA, spki_sha256

from .conftest import USER, Server, cli
from .test_outbound import wait_until

ZONE = "mail.test"
RUA = f"mailto:{USER}"
# Recipient domain → (its MX host, its MTA-STS policy or None).
DOMAINS = {
    "sts-ok": ("mx-good", policy_text("enforce", [f"mx-good.{ZONE}"])),
    "sts-bad": ("mx-other", policy_text("enforce", [f"mx-other.{ZONE}"])),
    "sts-testing": ("mx-other", policy_text("testing", [f"mx-other.{ZONE}"])),
    "dane-ok": ("mx-dane", None),
    "dane-bad": ("mx-danebad", None),
    "plain": ("mx-other", None),
}


def domain(name: str) -> str:
    return f"{name}.{ZONE}"


@pytest.fixture
def world(tmp_path, make_server, dns_server):
    """(sending server, receiving MX server), the DNS and HTTPS servers behind them."""
    ca = ThrowawayCA(tmp_path / "ca")
    receiver = make_server()
    cert, key = ca.issue("mx", [f"mx-good.{ZONE}"])
    (receiver.config.data_dir / receiver.config.tls.cert).write_bytes(cert.read_bytes())
    (receiver.config.data_dir / receiver.config.tls.key).write_bytes(key.read_bytes())
    for name in DOMAINS:
        cli(receiver.conf, "domain", "add", domain(name))
        cli(receiver.conf, "alias", "add", f"@{domain(name)}", USER)
    receiver.start()
    other, _ = ca.issue("other", ["unrelated.test"])
    https = MtaStsServer(*ca.issue("https", [f"mta-sts.{domain(n)}" for n in DOMAINS]))
    tlsa = f"_{receiver.port}._tcp"
    records = [f"{host} A 127.0.0.1" for host in ("mx-good", "mx-other", "mx-dane", "mx-danebad")]
    records += [f"{tlsa}.mx-dane TLSA 3 1 1 {spki_sha256(cert)}",
                f"{tlsa}.mx-danebad TLSA 3 1 1 {spki_sha256(other)}"]
    for name, (mx, policy) in DOMAINS.items():
        records += [f"{name} MX 10 {mx}.{ZONE}.", txt(f"_smtp._tls.{name}", f"v=TLSRPTv1; rua={RUA}")]
        if policy:
            https.policies[domain(name)] = policy
            records += [txt(f"_mta-sts.{name}", "v=STSv1; id=20261201"), f"mta-sts.{name} A 127.0.0.1"]
    dns_server.zone(ZONE, records, signed=True)
    anchor = tmp_path / "anchor.txt"
    anchor.write_text(dns_server.trust_anchor(ZONE))
    sender = make_server(
        relay={"mode": "networks", "networks": ["127.0.0.0/8"]},
        delivery={"workers": 1, "retry_schedule": [600.0], "mx_port": receiver.port,
                  "connect_timeout": 5.0, "command_timeout": 5.0},
        dns={"nameservers": [dns_server.nameserver], "trust_anchor": str(anchor)},
        outbound_tls={"ca_file": str(ca.ca_file), "mta_sts_port": https.port})
    sender.start()
    yield sender, receiver
    https.stop()


def send(server: Server, rcpt: str, subject: str, requiretls: bool = False,
         header: str = "") -> None:
    body = f"From: {USER}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n{header}\r\nbody\r\n"
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.starttls(context=_unverified())
        client.sendmail(USER, [rcpt], body, ["REQUIRETLS"] if requiretls else [])


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def subjects(server: Server) -> set[str]:
    return {email.message_from_bytes(p.read_bytes(), policy=email.policy.default)["Subject"]
            for p in server.delivered()}


def deferred_entry(server: Server, rcpt: str) -> str:
    """`queue show` of the message to `rcpt`, once it has been deferred."""
    entry = wait_until(lambda: re.search(rf"^(\S+) .* {re.escape(rcpt)} ",
                                         cli(server.conf, "queue", "list").stdout, re.M),
                       what=f"the message to {rcpt} queued")
    return wait_until(lambda: (lambda shown: "attempts: 1" in shown and shown)(
        cli(server.conf, "queue", "show", entry.group(1)).stdout), what=f"a deferral for {rcpt}")


def test_mta_sts_and_dane_deliver_or_defer_and_tls_rpt_reports_it(world):
    sender, receiver = world
    for name in DOMAINS:
        if name != "plain":
            send(sender, f"bob@{domain(name)}", name)
    wait_until(lambda: {"sts-ok", "dane-ok", "sts-testing"} <= subjects(receiver),
               what="the matching destinations' mail")
    shown = deferred_entry(sender, f"bob@{domain('sts-bad')}")
    assert "state: deferred" in shown
    assert re.search(r"4\.7\.5 mx-other\.mail\.test\[127\.0\.0\.1\]:\d+: MTA-STS policy of "
                     r"sts-bad\.mail\.test \(enforce\): .*Hostname mismatch", shown)
    assert "not sent without it" in shown
    shown = deferred_entry(sender, f"bob@{domain('dane-bad')}")
    assert re.search(r"4\.7\.5 mx-danebad\.mail\.test\S+: DANE: certificate does not match the "
                     "TLSA records", shown)
    assert subjects(receiver) == {"sts-ok", "dane-ok", "sts-testing"}
    log = sender.log()
    assert "TLS to mx-good.mail.test" in log and "meets the MTA-STS policy of sts-ok" in log
    assert "TLS to mx-dane.mail.test" in log and "meets the DANE" in log
    assert "sts-testing.mail.test (testing)" in log and "sent with opportunistic TLS" in log
    assert "DANE: certificate does not match" in log

    out = cli(sender.conf, "tlsrpt", "send", "--day", "today").stdout
    assert f"sts-bad.mail.test: report queued to {USER}" in out
    reports = wait_until(lambda: [m for m in sender.delivered() if b"tlsrpt" in m.read_bytes()]
                         if len(sender.delivered()) >= 5 else None, what="5 TLS reports")
    by_domain = {}
    for path in reports:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert message.get_content_type() == "multipart/report"
        assert message.get_param("report-type") == "tlsrpt"
        (part,) = [p for p in message.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
        by_domain[message["TLS-Report-Domain"]] = json.loads(gzip.decompress(part.get_content()))
    assert set(by_domain) == {domain(n) for n in DOMAINS if n != "plain"}
    (bad,) = by_domain[domain("sts-bad")]["policies"]
    assert bad["policy"]["policy-type"] == "sts" and bad["policy"]["mx-host"] == [f"mx-other.{ZONE}"]
    assert bad["summary"]["total-successful-session-count"] == 0
    assert bad["failure-details"][0]["result-type"] == "certificate-host-mismatch"
    assert bad["failure-details"][0]["receiving-mx-hostname"] == f"mx-other.{ZONE}"
    (good,) = by_domain[domain("dane-ok")]["policies"]
    assert good["policy"]["policy-type"] == "tlsa"
    assert good["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 0}
    assert by_domain[domain("dane-bad")]["policies"][0]["failure-details"][0]["result-type"] == \
        "validation-failure"
    # Sent once: the day's results are marked sent.
    again = cli(sender.conf, "tlsrpt", "send", "--day", "today").stdout
    assert again.strip() == "no TLS results waiting to be reported"


def test_requiretls_refused_in_the_clear_and_bounced_without_validated_tls(world):
    sender, receiver = world
    with smtplib.SMTP("127.0.0.1", sender.port, timeout=30) as client:
        client.ehlo("client.test")
        assert "requiretls" not in client.esmtp_features  # offered only inside TLS
        code, text = client.mail(USER, ["REQUIRETLS"])
        assert (code, text[:6]) == (530, b"5.7.10")
        client.rset()
        client.starttls(context=_unverified())
        client.ehlo("client.test")
        assert "requiretls" in client.esmtp_features
    send(sender, f"bob@{domain('dane-ok')}", "required", requiretls=True)
    send(sender, f"bob@{domain('plain')}", "required-plain", requiretls=True)
    send(sender, f"bob@{domain('sts-bad')}", "optional", header="TLS-Required: No\r\n")
    wait_until(lambda: {"required", "optional"} <= subjects(receiver), what="REQUIRETLS delivery")
    bounce = wait_until(lambda: [p for p in sender.delivered() if b"5.7.30" in p.read_bytes()],
                        what="the REQUIRETLS bounce")
    text = bounce[0].read_bytes().decode()
    assert "Status: 5.7.30" in text and "has no TLS validated by DANE or MTA-STS" in text
    assert "required-plain" not in subjects(receiver)
