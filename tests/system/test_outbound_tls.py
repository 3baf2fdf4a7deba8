"""Outbound transport security end to end: a real `mailforge serve` relays to a second one
(the MX of every test domain, on loopback) through Knot DNS serving DNSSEC-signed zones, with
MTA-STS policies and TLS-RPT reports over an HTTPS server on loopback and certificates from a
throw-away CA. The servers are started once for the module (each test uses its own domains).

    mx-good   certificate of the CA for its name       mx-other  names itself mx-good (mismatch)
    mx-dane   TLSA 3 1 1 of the certificate (match)    mx-danebad, mx-untrusted  TLSA of another key
    mx-plain2 an SMTP sink on 127.0.0.2 without STARTTLS, on the same port as the receiver
    zones: mail.test signed (NSEC, anchored) · n3.test signed (NSEC3, anchored) ·
           insecure.mail.test unsigned, delegated without DS · _tcp.mx-stripped.mail.test
           unsigned, served but never delegated (what an attacker stripping signatures answers) ·
           bogus.test signed, but anchored by a key that is not its own
    aliases: mx-alias-insecure CNAME mx.insecure (the unsigned zone; a wrong TLSA at the alias)
             mx-alias-dane CNAME mx-dane · *.wild A in mail.test and n3.test (wildcard MX hosts)
"""

from __future__ import annotations

import contextlib
import datetime
import email
import email.policy
import gzip
import json
import re
import smtplib
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailforge.auth.accounts import open_accounts
from tests.smtp_sinks import Sink
from tests.system.dns_server import DnsServer, txt
from tests.system.mta_sts_server import MtaStsServer, policy_text
from tests.system.throwaway_ca import ThrowawayCA, spki_sha256

from .conftest import USER, Server, cli
from .test_outbound import wait_until

ZONE = "mail.test"
RUA = f"mailto:{USER}"
# Recipient domain under ZONE → (its MX host, its MTA-STS policy or None).
DOMAINS = {
    "sts-ok": ("mx-good", policy_text("enforce", [f"mx-good.{ZONE}"])),
    "sts-bad": ("mx-other", policy_text("enforce", [f"mx-other.{ZONE}"])),
    "sts-testing": ("mx-other", policy_text("testing", [f"mx-other.{ZONE}"])),
    "dane-ok": ("mx-dane", None),
    "dane-bad": ("mx-danebad", None),
    "dane-denied": ("mx-other", None),
    "stripped": ("mx-stripped", None),
    "plain": ("mx-other", None),
    # RFC 8461 3.2: max_age is 1*10DIGIT; "²" is a digit to str.isdigit, not to int().
    "sts-oddage": ("mx-other", policy_text("enforce", [f"mx-other.{ZONE}"], "\u00b2")),
    "sts-slow": ("mx-good", policy_text("enforce", [f"mx-good.{ZONE}"])),  # in two halves
}
# Recipient domains in the other zones, all received by the receiver.
OTHER_DOMAINS = ["insecure.mail.test", "n3.test", "bogus.test", f"req-two.{ZONE}",
                 f"addr-insecure.{ZONE}", f"cname-dane.{ZONE}", f"addr-bogus.{ZONE}",
                 f"wild.{ZONE}", "wild.n3.test", f"rua-odd.{ZONE}"]
HOSTS = {"mx-good": "127.0.0.1", "mx-other": "127.0.0.1", "mx-dane": "127.0.0.1",
         "mx-danebad": "127.0.0.1", "mx-untrusted": "127.0.0.1", "mx-stripped": "127.0.0.1",
         "mx-plain2": "127.0.0.2", "tlsrpt": "127.0.0.1"}
REPORT_PATH = "/v1/tlsrpt"


def domain(name: str) -> str:
    return f"{name}.{ZONE}"


@dataclass
class World:
    sender: Server
    receiver: Server
    https: MtaStsServer
    second_mx: Sink  # mx-plain2, without STARTTLS


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Started once: two mailforge servers, Knot and the HTTPS server are most of the cost."""
    root = tmp_path_factory.mktemp("outbound_tls")
    with contextlib.ExitStack() as stack:
        ca = ThrowawayCA(root / "ca")
        receiver = Server(root / "receiver")
        cert, key = ca.issue("mx", [f"mx-good.{ZONE}"])
        (receiver.config.data_dir / receiver.config.tls.cert).write_bytes(cert.read_bytes())
        (receiver.config.data_dir / receiver.config.tls.key).write_bytes(key.read_bytes())
        # In process: two CLI runs per domain would cost a second or more each.
        with open_accounts(receiver.config) as accounts:
            for name in [domain(n) for n in DOMAINS] + OTHER_DOMAINS:
                accounts.directory.domain_add(name)
                accounts.directory.alias_add(f"@{name}", USER)
        stack.callback(receiver.stop)
        receiver.start()
        second_mx = Sink(host=HOSTS["mx-plain2"], port=receiver.port)
        stack.callback(second_mx.stop)
        https = MtaStsServer(*ca.issue("https", [f"mta-sts.{domain(n)}" for n in DOMAINS]
                                       + [f"tlsrpt.{ZONE}"]))
        stack.callback(https.stop)
        dns = DnsServer(root / "dns")
        stack.callback(dns.stop)
        dns.start()
        anchor = root / "anchor.txt"
        other, _ = ca.issue("other", ["unrelated.test"])
        anchor.write_text(_zones(dns, https, receiver.port, cert, other))
        sender = Server(
            root / "sender", relay={"mode": "networks", "networks": ["127.0.0.0/8"]},
            delivery={"workers": 1, "retry_schedule": [600.0], "mx_port": receiver.port,
                      "connect_timeout": 5.0, "command_timeout": 5.0},
            dns={"nameservers": [dns.nameserver], "trust_anchor": str(anchor)},
            outbound_tls={"ca_file": str(ca.ca_file), "mta_sts_port": https.port})
        stack.callback(sender.stop)
        sender.start()
        yield World(sender, receiver, https, second_mx)


def _zones(dns: DnsServer, https: MtaStsServer, port: int, cert: Path, other_cert: Path) -> str:
    """Every test zone served, and the MTA-STS policies; the trust anchors to validate from."""
    tlsa = f"_{port}._tcp"
    records = [f"{host} A {address}" for host, address in HOSTS.items()]
    # Tried first and refused (nothing listens there): the report's POST goes on to the next.
    records.append("tlsrpt AAAA ::1")
    records += [f"{tlsa}.mx-dane TLSA 3 1 1 {spki_sha256(cert)}",
                f"{tlsa}.mx-danebad TLSA 3 1 1 {spki_sha256(other_cert)}",
                f"{tlsa}.mx-untrusted TLSA 3 1 1 {spki_sha256(other_cert)}",
                "insecure NS ns.insecure", "ns.insecure A 127.0.0.1",  # no DS: unsigned below
                "req-two MX 10 mx-plain2", "req-two MX 20 mx-dane",
                "addr-insecure MX 10 mx-alias-insecure", "mx-alias-insecure CNAME mx.insecure",
                f"{tlsa}.mx-alias-insecure TLSA 3 1 1 {spki_sha256(other_cert)}",
                "cname-dane MX 10 mx-alias-dane", "mx-alias-dane CNAME mx-dane",
                "addr-bogus MX 10 mx.bogus.test.", "wild MX 10 host.wild", "*.wild A 127.0.0.1",
                # RFC 8460 3 with RFC 6068 mailto: URIs: one a header line (a newline in the
                # TXT data), one percent-encoded with a header field.
                "rua-odd MX 10 mx-other", '_smtp._tls.rua-odd TXT "v=TLSRPTv1; rua=mailto:x@'
                f'{ZONE}\\010Bcc: evil@{ZONE},mailto:{USER.replace("@", "%40")}?subject=tls"']
    for name, (mx, policy) in DOMAINS.items():
        rua = RUA + (f",https://tlsrpt.{ZONE}:{https.port}{REPORT_PATH}" if name == "dane-ok" else "")
        records += [f"{name} MX 10 {mx}.{ZONE}.", txt(f"_smtp._tls.{name}", f"v=TLSRPTv1; rua={rua}")]
        if policy:
            https.policies[domain(name)] = policy
            if name == "sts-slow":
                https.slow.add(domain(name))
            records += [txt(f"_mta-sts.{name}", "v=STSv1; id=20261201"), f"mta-sts.{name} A 127.0.0.1"]
    dns.zone(ZONE, records, signed=True)
    dns.zone(f"insecure.{ZONE}", [f"@ MX 10 mx-untrusted.{ZONE}.", "mx A 127.0.0.1"])
    dns.zone(f"_tcp.mx-stripped.{ZONE}", [])
    dns.zone("n3.test", ["@ MX 10 mx", "mx A 127.0.0.1", "wild MX 10 host.wild",
                         "*.wild A 127.0.0.1"], signed=True, nsec3=True)
    dns.zone("bogus.test", [f"@ MX 10 mx-good.{ZONE}.", "mx A 127.0.0.1"], signed=True)
    own = dns.trust_anchor(ZONE)
    return own + dns.trust_anchor("n3.test") + own.replace(f"{ZONE}.", "bogus.test.")


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


def delivered_with_result(world, name: str, subject: str) -> Path:
    """A message to bob@ the test domain `name`, delivered, and today's TLS result file of
    that domain, once its line is in."""
    results = world.sender.config.tls_policy_dir / "tlsrpt" / datetime.datetime.now(
        datetime.timezone.utc).strftime("%Y-%m-%d") / domain(name)
    send(world.sender, f"bob@{domain(name)}", subject)
    wait_until(lambda: subject in subjects(world.receiver) and results.exists(),
               what="the delivery and its result line")
    return results


def deferred_entry(server: Server, rcpt: str) -> str:
    """`queue show` of the message to `rcpt`, once it has been deferred."""
    entry = wait_until(lambda: re.search(rf"^(\S+) .* {re.escape(rcpt)} ",
                                         cli(server.conf, "queue", "list").stdout, re.M),
                       what=f"the message to {rcpt} queued")
    return wait_until(lambda: (lambda shown: "attempts: 1" in shown and shown)(
        cli(server.conf, "queue", "show", entry.group(1)).stdout), what=f"a deferral for {rcpt}")


def reports(server: Server) -> dict[str, dict]:
    """The TLS reports mailed to USER, by the domain they report on."""
    found = {}
    for path in server.delivered():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if message.get_param("report-type") != "tlsrpt":
            continue
        assert message.get_content_type() == "multipart/report"
        (part,) = [p for p in message.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
        found[message["TLS-Report-Domain"]] = json.loads(gzip.decompress(part.get_content()))
    return found


TLS_CASES = ["sts-ok", "sts-bad", "sts-testing", "dane-ok", "dane-bad"]


def test_mta_sts_and_dane_deliver_or_defer_and_tls_rpt_reports_it(world):
    sender, receiver = world.sender, world.receiver
    for name in TLS_CASES:
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
    assert not {"sts-bad", "dane-bad"} & subjects(receiver)
    log = sender.log()
    assert "TLS to mx-good.mail.test" in log and "meets the MTA-STS policy of sts-ok" in log
    assert "TLS to mx-dane.mail.test" in log and "meets the DANE" in log
    assert "sts-testing.mail.test (testing)" in log and "sent with opportunistic TLS" in log
    assert "DANE: certificate does not match" in log

    out = cli(sender.conf, "tlsrpt", "send", "--day", "today").stdout
    assert f"sts-bad.mail.test: report queued to {USER}" in out
    report_uri = f"https://tlsrpt.{ZONE}:{world.https.port}{REPORT_PATH}"
    assert re.search(rf"dane-ok\.mail\.test: report queued to {USER} \(\S+\), posted to "
                     rf"{re.escape(report_uri)}", out)
    wanted = {domain(n) for n in TLS_CASES}
    by_domain = wait_until(lambda: (lambda found: wanted <= set(found) and found)(reports(sender)),
                           what="5 TLS reports")
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
    # RFC 8460 3: the same report, POSTed gzipped to the https: URI of dane-ok's record.
    (post,) = world.https.posts
    assert (post.host, post.path) == (f"tlsrpt.{ZONE}:{world.https.port}", REPORT_PATH)
    assert post.content_type == "application/tlsrpt+gzip"
    assert json.loads(gzip.decompress(post.body)) == by_domain[domain("dane-ok")]
    # Sent once: the day's results are marked sent.
    again = cli(sender.conf, "tlsrpt", "send", "--day", "today").stdout
    assert again.strip() == "no TLS results waiting to be reported"


def test_requiretls_refused_in_the_clear_passes_over_unqualified_mxes_then_bounces(world):
    sender, receiver = world.sender, world.receiver
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
    # RFC 8689 4.2.1: its first MX (mx-plain2) has no STARTTLS; the second (mx-dane) qualifies.
    send(sender, f"bob@{domain('req-two')}", "required-second-mx", requiretls=True)
    send(sender, f"bob@{domain('plain')}", "required-plain", requiretls=True)
    send(sender, f"bob@{domain('sts-bad')}", "optional", header="TLS-Required: No\r\n")
    wait_until(lambda: {"required", "required-second-mx", "optional"} <= subjects(receiver),
               what="REQUIRETLS delivery")
    assert world.second_mx.received == []
    assert re.search(r"REQUIRETLS: mx-plain2\.mail\.test\[127\.0\.0\.2\]:\d+ has no TLS "
                     "validated by DANE or MTA-STS", sender.log())
    bounce = wait_until(lambda: [p for p in sender.delivered() if b"5.7.30" in p.read_bytes()],
                        what="the REQUIRETLS bounce")
    text = bounce[0].read_bytes().decode()
    assert "Status: 5.7.30" in text and "has no TLS validated by DANE or MTA-STS" in text
    assert "required-plain" in text
    assert "required-plain" not in subjects(receiver)


def test_dane_needs_a_secure_mx_and_a_proven_absence_of_tlsa(world):
    sender, receiver = world.sender, world.receiver
    cases = {"insecure.mail.test": "unsigned-mx", f"dane-denied.{ZONE}": "denied-nsec",
             "n3.test": "denied-nsec3", f"stripped.{ZONE}": "stripped", "bogus.test": "bogus"}
    for destination, subject in cases.items():
        send(sender, f"bob@{destination}", subject)
    # An unsigned MX: its host's TLSA records (which do not match) are not used (RFC 7672
    # 2.2.1); a securely denied TLSA (NSEC, NSEC3): opportunistic TLS.
    wait_until(lambda: {"unsigned-mx", "denied-nsec", "denied-nsec3"} <= subjects(receiver),
               what="mail to the destinations without DANE")
    untrusted = [line for line in sender.log().splitlines() if "mx-untrusted" in line]
    assert any("relayed" in line for line in untrusted)
    assert not any("DANE" in line for line in untrusted)
    # "No TLSA" answered without signatures from under a signed zone: bogus, deferred.
    shown = deferred_entry(sender, f"bob@stripped.{ZONE}")
    assert re.search(r"4\.7\.5 mx-stripped\.mail\.test\S+: TLS policy: DANE: "
                     r"_tcp\.mx-stripped\.mail\.test\. answers as a zone, but its parent "
                     "delegates no such zone", shown)
    # An MX RRset signed by a key the anchor does not name: bogus, deferred.
    shown = deferred_entry(sender, "bob@bogus.test")
    assert re.search(r"MX of bogus\.test is DNSSEC-bogus: no DNSKEY of bogus\.test\. "
                     "matches its trust anchor", shown)
    assert not {"stripped", "bogus"} & subjects(receiver)
    log = sender.log()
    assert "parent delegates no such zone" in log and "MX of bogus.test is DNSSEC-bogus" in log


def test_dane_needs_a_secure_address_follows_a_secure_cname_and_proven_wildcards(world):
    sender, receiver = world.sender, world.receiver
    cases = {f"addr-insecure.{ZONE}": "insecure-address", f"cname-dane.{ZONE}": "secure-cname",
             f"wild.{ZONE}": "wildcard-nsec", "wild.n3.test": "wildcard-nsec3",
             f"addr-bogus.{ZONE}": "bogus-address"}
    for destination, subject in cases.items():
        send(sender, f"bob@{destination}", subject)
    wait_until(lambda: set(cases.values()) - {"bogus-address"} <= subjects(receiver),
               what="mail to the secure MXes with insecure, aliased or wildcard hosts")
    log = sender.log()
    # RFC 7672 2.2.2: the MX is secure, but its host's address comes from the unsigned zone
    # behind a CNAME: the host's (wrong) TLSA record is not used, opportunistic TLS is.
    alias = [line for line in log.splitlines() if "mx-alias-insecure" in line]
    assert any("relayed" in line for line in alias)
    assert not any("DANE" in line for line in alias)
    # A secure CNAME chain: the TLSA records are looked up at the expanded name (mx-dane).
    assert re.search(r"TLS to mx-alias-dane\.mail\.test\S+ meets the DANE", log)
    # Wildcard hosts: the expanded A records came with their NSEC/NSEC3 proof, and so did
    # the wildcard's "no TLSA": securely without DANE.
    assert not any("DANE" in line for line in log.splitlines() if "host.wild" in line)
    # The host's address records are bogus: the host is not used, the destination waits.
    shown = deferred_entry(sender, f"bob@addr-bogus.{ZONE}")
    assert re.search(r"no MX host of addr-bogus\.mail\.test has an address: address of mx\.bogus\.test is DNSSEC-bogus: no DNSKEY of "
                     r"bogus\.test\. matches its trust anchor", shown)
    assert "bogus-address" not in subjects(receiver)


def test_odd_policies_and_report_addresses_are_refused_not_tracebacks(world):
    sender, receiver = world.sender, world.receiver
    send(sender, f"bob@{domain('sts-oddage')}", "odd-max-age")
    send(sender, f"bob@rua-odd.{ZONE}", "odd-rua")
    # The unreadable policy is no policy (RFC 8461 5: sts-policy-invalid for TLS-RPT), and
    # the mail goes with opportunistic TLS.
    wait_until(lambda: {"odd-max-age", "odd-rua"} <= subjects(receiver), what="both messages")
    assert "bad max_age" in sender.log()
    out = cli(sender.conf, "tlsrpt", "send", "--day", "today").stdout
    # The header line is not an address: left out; the encoded one is decoded, its ?subject dropped.
    assert re.search(rf"rua-odd\.mail\.test: report queued to {USER} \(\S+\)$", out, re.M), out
    found = wait_until(lambda: (lambda r: f"rua-odd.{ZONE}" in r and r)(reports(sender)),
                       what="the report on rua-odd")
    assert found[f"rua-odd.{ZONE}"]["policies"][0]["policy"]["policy-type"] == "no-policy-found"
    # No header field of the address's query: the reports' headers hold no Bcc (their gzip
    # bodies, in base64, may spell "Bcc" by chance).
    assert not any(email.message_from_bytes(p.read_bytes())["Bcc"] for p in sender.delivered())


def test_a_torn_result_line_costs_that_line_not_the_days_reports(world):
    """A crash or a full disk in the middle of a delivery worker's append leaves a partial
    line in the day's results: the report is sent without it, and the worker that sends the
    reports keeps running."""
    sender = world.sender
    results = delivered_with_result(world, "plain", "before-torn-line")
    with results.open("ab") as torn:
        torn.write(b'{"domain": "plain.mail.test", "policy_type": "no-pol\xc3')
    run = cli(sender.conf, "tlsrpt", "send", "--day", "today")
    assert re.search(rf"plain\.mail\.test: report queued to {USER}", run.stdout), run.stdout
    assert "skipping an unreadable line" in run.stderr + sender.log()


def test_a_policy_that_arrives_in_two_reads_is_read_whole(world):
    send(world.sender, f"bob@{domain('sts-slow')}", "slow-policy")
    wait_until(lambda: "slow-policy" in subjects(world.receiver), what="the message")
    log = world.sender.log()
    assert "meets the MTA-STS policy of sts-slow" in log, log[-2000:]


def test_a_refused_report_post_is_tried_again_without_mailing_the_report_twice(world):
    """dane-ok's record names a mailto: and an https: URI: when the POST is refused, the mail
    copy still goes, and the next run POSTs again without queuing a second mail copy."""
    sender = world.sender
    delivered_with_result(world, "dane-ok", "before-refused-post")
    posts = len(world.https.posts)
    world.https.refuse_posts = True
    try:
        first = cli(sender.conf, "tlsrpt", "send", "--day", "today").stdout
    finally:
        world.https.refuse_posts = False
    assert re.search(rf"dane-ok\.mail\.test: report queued to {USER} \(\S+\), not posted: "
                     r".*HTTP 503; the failed ones tried again later", first), first
    second = cli(sender.conf, "tlsrpt", "send", "--day", "today").stdout
    assert re.search(r"dane-ok\.mail\.test: report posted to https://", second), second
    assert "dane-ok.mail.test: report queued" not in second
    assert len(world.https.posts) == posts + 1
    third = cli(sender.conf, "tlsrpt", "send", "--day", "today").stdout
    assert "dane-ok" not in third  # sent: marked so, nothing left of it
