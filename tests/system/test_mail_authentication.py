"""Inbound SPF, DKIM, DMARC and ARC on port 25 against a real DNS server (Knot on loopback):
the DMARC matrix, sp= for subdomains, DNS timeouts → 451 4.4.3, one Authentication-Results
header, and a message OpenDKIM signed verified by us."""

from __future__ import annotations

import email
import smtplib
import subprocess

import pytest

from mailforge.mailauth.keys import KeyStore
from mailforge.mailauth.signing import Signer
from tests.system import opendkim
from tests.system.dns_server import txt

from .conftest import USER
from .test_outbound import wait_until

HOSTNAME = "mx.example.test"
SPF_PASS = txt("@", "v=spf1 ip4:127.0.0.1 -all")
SPF_FAIL = txt("@", "v=spf1 ip4:192.0.2.1 -all")


def message(from_domain: str, subject: str, extra: bytes = b"") -> bytes:
    return (f"From: sender@{from_domain}\r\nTo: {USER}\r\nSubject: {subject}\r\n"
            f"Date: Fri, 04 Dec 2026 19:00:00 +0000\r\nMessage-ID: <{subject}@{from_domain}>\r\n"
            ).encode() + extra + b"\r\nbody\r\n"


def send(server, from_domain: str, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=60) as client:
        client.ehlo("client.test")
        try:
            client.sendmail(f"sender@{from_domain}", [USER], data)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error
    return 250, b""


def delivered_subjects(server, folder: str = "") -> dict[str, email.message.Message]:
    new = server.maildir() / folder / "new"
    found = {}
    for path in (sorted(new.iterdir()) if new.is_dir() else []):
        parsed = email.message_from_bytes(path.read_bytes())
        found[parsed["Subject"]] = parsed
    return found


def our_results(parsed: email.message.Message) -> str:
    mine = [v for v in parsed.get_all("Authentication-Results", [])
            if v.split(";")[0].strip() == HOSTNAME]
    assert len(mine) == 1, mine
    return " ".join(mine[0].split())


@pytest.fixture
def keys(tmp_path):
    """A signer with RSA keys for the domains that sign, and their DNS records."""
    store = KeyStore(tmp_path / "sender-keys")
    records = {}
    for domain in ("aligned.test", "dkimonly.test"):
        key = store.generate(domain, "s1", "rsa")
        records[domain] = txt("s1._domainkey", key.dns_record())
    return Signer(store), records


def test_dmarc_matrix(make_server, dns_server, keys):
    signer, records = keys
    dmarc = lambda policy: txt("_dmarc", f"v=DMARC1; {policy}")  # noqa: E731
    zones = {
        "aligned.test": [SPF_PASS, records["aligned.test"], dmarc("p=reject")],
        "spfonly.test": [SPF_PASS, dmarc("p=reject")],
        "dkimonly.test": [SPF_FAIL, records["dkimonly.test"], dmarc("p=reject")],
        "none.test": [SPF_FAIL, dmarc("p=none")],
        "quarantine.test": [SPF_FAIL, dmarc("p=quarantine")],
        "reject.test": [SPF_FAIL, dmarc("p=reject")],
        # The organizational domain's record covers its subdomains, with sp= for them.
        "parent.test": [SPF_FAIL, dmarc("p=none; sp=reject"), txt("sub", "v=spf1 -all")],
    }
    for name, records_of_zone in zones.items():
        dns_server.zone(name, records_of_zone)
    server = make_server(dns={"nameservers": [dns_server.nameserver], "lifetime": 3.0},
                         authentication={"inbound_checks": True},
                         server={"hostname": HOSTNAME})
    server.start()
    forged = b"Authentication-Results: mx.example.test; dkim=pass header.d=aligned.test\r\n"
    theirs = b"Authentication-Results: elsewhere.test; spf=pass\r\n"
    outcomes = {
        "aligned": send(server, "aligned.test",
                        signer.sign(message("aligned.test", "aligned", forged + theirs))),
        "spfonly": send(server, "spfonly.test", message("spfonly.test", "spfonly")),
        "dkimonly": send(server, "dkimonly.test",
                         signer.sign(message("dkimonly.test", "dkimonly"))),
        "none": send(server, "none.test", message("none.test", "none")),
        "quarantine": send(server, "quarantine.test", message("quarantine.test", "quarantine")),
        "reject": send(server, "reject.test", message("reject.test", "reject")),
        "sub": send(server, "sub.parent.test", message("sub.parent.test", "sub")),
        "parent": send(server, "parent.test", message("parent.test", "parent")),
    }
    assert outcomes["reject"][0] == 550 and b"5.7.1" in outcomes["reject"][1]
    assert outcomes["sub"][0] == 550, "sp=reject applies to the subdomain"
    accepted = [k for k, (code, _) in outcomes.items() if code == 250]
    assert sorted(accepted) == ["aligned", "dkimonly", "none", "parent", "quarantine", "spfonly"]
    inbox = server.wait_delivered(5)
    assert len(inbox) == 5
    got = delivered_subjects(server)
    assert set(got) == {"aligned", "spfonly", "dkimonly", "none", "parent"}
    aligned = our_results(got["aligned"])
    assert "spf=pass smtp.mailfrom=sender@aligned.test" in aligned
    assert "dkim=pass header.d=aligned.test header.s=s1" in aligned
    assert "dmarc=pass (p=reject) header.from=aligned.test" in aligned
    assert "arc=none" in aligned
    assert got["aligned"].get_all("Authentication-Results")[-1].startswith("elsewhere.test")
    assert "spf=pass" in our_results(got["spfonly"]) and "dmarc=pass" in our_results(got["spfonly"])
    dkimonly = our_results(got["dkimonly"])
    assert "spf=fail" in dkimonly and "dkim=pass" in dkimonly and "dmarc=pass" in dkimonly
    assert "dmarc=fail (p=none) header.from=none.test" in our_results(got["none"])
    assert "dmarc=fail (p=none) header.from=parent.test" in our_results(got["parent"])
    junk = wait_until(lambda: delivered_subjects(server, ".Junk"), what="the quarantined copy")
    assert list(junk) == ["quarantine"]
    assert "dmarc=fail (p=quarantine)" in our_results(junk["quarantine"])


def test_dns_timeout_is_451_and_enforce_off_only_marks(make_server, silent_nameserver):
    server = make_server(dns={"nameservers": [silent_nameserver.nameserver], "timeout": 0.3,
                              "lifetime": 0.6},
                         authentication={"inbound_checks": True}, server={"hostname": HOSTNAME})
    server.start()
    code, text = send(server, "slow.test", message("slow.test", "slow"))
    assert (code, text.split()[0]) == (451, b"4.4.3")
    server.stop()
    server.reconfigure({"authentication": {"dmarc_enforce": False}})
    server.start()
    assert send(server, "slow.test", message("slow.test", "logged"))[0] == 250
    (path,) = server.wait_delivered(1)
    results = our_results(email.message_from_bytes(path.read_bytes()))
    assert "spf=temperror" in results and "dmarc=temperror" in results


def test_we_verify_what_opendkim_signed(make_server, dns_server, tmp_path):
    keydir = tmp_path / "opendkim"
    keydir.mkdir()
    subprocess.run(["opendkim-genkey", "-D", str(keydir), "-d", "odk.test", "-s", "od",
                    "-b", "2048"], check=True, timeout=60)
    record = "".join(part for part in (keydir / "od.txt").read_text().split('"')[1::2])
    dns_server.zone("odk.test", [txt("od._domainkey", record), SPF_FAIL,
                                 txt("_dmarc", "v=DMARC1; p=reject")])
    signed = opendkim.sign(message("odk.test", "opendkim"), "odk.test", "od",
                           keydir / "od.private")
    assert signed.startswith(b"DKIM-Signature:")
    server = make_server(dns={"nameservers": [dns_server.nameserver]},
                         authentication={"inbound_checks": True}, server={"hostname": HOSTNAME})
    server.start()
    assert send(server, "odk.test", signed)[0] == 250  # SPF fails: only DKIM can pass DMARC
    (path,) = server.wait_delivered(1)
    results = our_results(email.message_from_bytes(path.read_bytes()))
    assert "dkim=pass header.d=odk.test header.s=od" in results and "dmarc=pass" in results
