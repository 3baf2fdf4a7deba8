"""A domain's catch-all (`alias add @domain TARGET`) and subaddressing (alice+tag@...), over
SMTP into the Maildirs, with the folder of a subaddress made and read over IMAP."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

from .conftest import DOMAIN, USER, cli
from .imap_helpers import login

BOB = f"bob@{DOMAIN}"


def send(server, rcpt: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        message = f"Subject: {subject}\r\nTo: {rcpt}\r\n\r\nbody\r\n".encode()
        assert client.sendmail("carol@remote.test", [rcpt], message) == {}


def wait_for_file(directory: Path, timeout: float = 30) -> None:
    """Delivery is asynchronous: until a message is in `directory`."""
    deadline = time.monotonic() + timeout
    while not any(directory.iterdir()):
        assert time.monotonic() < deadline, f"nothing delivered into {directory}"
        time.sleep(0.05)


def test_a_catch_all_takes_the_domains_unknown_addresses(server):
    cli(server.conf, "user", "add", BOB, "--password-stdin", input="pw\n")
    added = cli(server.conf, "alias", "add", f"@{DOMAIN}", BOB)
    assert added.stdout == f"added alias @{DOMAIN} -> {BOB}\n"
    assert f"@{DOMAIN}" in cli(server.conf, "alias", "list").stdout
    send(server, f"nobody-in-particular@{DOMAIN}", "to anyone")
    (caught,) = server.wait_delivered(1, BOB)
    assert f"Delivered-To: nobody-in-particular@{DOMAIN}\n" in caught.read_text()
    send(server, USER, "to alice")  # a mailbox keeps its own mail
    server.wait_delivered(1, USER)
    assert len(server.delivered(BOB)) == 1


def test_a_star_source_is_refused_with_the_spelling_to_use(server):
    refused = cli(server.conf, "alias", "add", f"*@{DOMAIN}", USER, check=False)
    assert refused.returncode == 2
    assert refused.stderr == (f"mailforge: '*@{DOMAIN}' is not a wildcard: write a domain's "
                              f"catch-all as @{DOMAIN}\n")
    assert cli(server.conf, "alias", "list").stdout.strip() == ""


def test_a_subaddress_lands_in_the_inbox_or_in_the_folder_of_its_name(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    send(server, "alice+nofolder@example.test", "to the inbox")
    (inbox,) = server.wait_delivered(1)
    assert "Delivered-To: alice+nofolder@example.test\n" in inbox.read_text()
    client = login(server)
    assert client.create("Lists")[0] == "OK"
    send(server, "alice+lists@example.test", "to the folder")
    wait_for_file(server.maildir() / ".Lists" / "new")
    assert client.select("Lists") == ("OK", [b"1"])
    status, fetched = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"Subject: to the folder" in fetched[0][1]
    client.logout()
    assert len(server.delivered()) == 1


def test_without_a_delimiter_a_subaddress_is_an_unknown_user(make_server):
    server = make_server(server={"recipient_delimiter": ""})
    server.start()
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        client.mail("carol@remote.test")
        code, text = client.rcpt("alice+tag@example.test")
    assert (code, text[:5]) == (550, b"5.1.1")
