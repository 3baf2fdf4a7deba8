"""METADATA (RFC 5464) over a real server: server and folder annotations, private and shared,
their limits, the rights a shared folder needs, and that they follow the folder (RENAME,
DELETE) and outlive a restart."""

from __future__ import annotations

import imaplib

import pytest

from .conftest import PASSWORD, cli
from .imap_helpers import RawSession, login

BOB = "bob@example.test"
imaplib.Commands.setdefault("GETMETADATA", ("AUTH", "SELECTED"))
imaplib.Commands.setdefault("SETMETADATA", ("AUTH", "SELECTED"))


@pytest.fixture
def server(make_server):
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    cli(server.conf, "user", "add", BOB, "--password-stdin", input=PASSWORD + "\n")
    server.start()
    return server


def bob_of(server) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=20)
    client.login(BOB, PASSWORD)
    return client


def get(client: imaplib.IMAP4, *args: str) -> tuple[str, list]:
    typ, _ = client._simple_command("GETMETADATA", *args)
    return typ, client.untagged_responses.pop("METADATA", [])


def set_(client: imaplib.IMAP4, mailbox: str, pairs: str) -> str:
    return client._simple_command("SETMETADATA", mailbox, pairs)[0]


def test_server_and_folder_annotations_with_depth_and_maxsize(server):
    alice = login(server)
    caps = alice.capability()[1][0].split()
    assert b"METADATA" in caps and b"METADATA-SERVER" in caps
    assert set_(alice, '""', '(/private/vendor/mua/theme "dark" /shared/comment "hi")') == "OK"
    assert set_(alice, "INBOX", '(/private/comment "mine" /shared/comment "ours")') == "OK"
    assert get(alice, "INBOX", "(/private/comment /shared/comment /shared/absent)") == (
        "OK", [b'INBOX (/private/comment "mine" /shared/comment "ours" /shared/absent NIL)'])
    assert get(alice, "(DEPTH infinity)", '""', "/private") == (
        "OK", [b'"" (/private/vendor/mua/theme "dark")'])
    assert get(alice, "(DEPTH 1)", '""', "/private/vendor")[1] == [b'"" (/private/vendor NIL)']
    # Too long for MAXSIZE: no METADATA response, only the OK's [METADATA LONGENTRIES 4]
    # (which imaplib files under the code's name).
    assert get(alice, "(MAXSIZE 3)", "INBOX", "/shared/comment") == ("OK", [b"LONGENTRIES 4"])
    assert get(alice, "Sent", "/private/specialuse")[1] == [b'Sent (/private/specialuse "\\\\Sent")']
    assert set_(alice, "INBOX", "(/private/comment NIL)") == "OK"
    assert get(alice, "INBOX", "/private/comment")[1] == [b"INBOX (/private/comment NIL)"]
    alice.logout()


def test_bad_names_limits_and_the_read_only_special_use(server):
    session = RawSession(server.imap_port)
    session.login()
    assert session.command(b"A", b'SETMETADATA INBOX (/bogus "x")')[-1].startswith(b"A BAD")
    assert session.command(b"B", b'SETMETADATA INBOX (/private/a* "x")')[-1].startswith(b"B BAD")
    big = b"x" * 70000
    lines = session.command(b"C", b"SETMETADATA INBOX (/private/big ~{%d+}\r\n%s)"
                            % (len(big), big))
    assert lines[-1].startswith(b"C NO [METADATA MAXSIZE 65536]")
    many = b" ".join(b'/private/e%d "v"' % n for n in range(100))
    assert session.command(b"D", b"SETMETADATA INBOX (%s)" % many)[-1].startswith(b"D OK")
    assert session.command(b"E", b"SETMETADATA INBOX (%s)" % many.replace(b"/e", b"/f")
                           )[-1].startswith(b"E OK")  # 200 entries: the limit
    lines = session.command(b"T", b'SETMETADATA INBOX (/private/one-more "v")')
    assert lines[-1].startswith(b"T NO [METADATA TOOMANY]")
    lines = session.command(b"F", b'SETMETADATA Sent (/private/specialuse "\\\\Trash")')
    assert lines[-1].startswith(b"F NO [NOPERM]")
    assert session.command(b"G", b'GETMETADATA Nope /private/x')[-1].startswith(
        b"G NO [NONEXISTENT]")
    session.close()


def test_shared_folder_annotations_need_a_right_beyond_lookup(server):
    alice, bob = login(server), bob_of(server)
    alice.create("Projects")
    assert set_(alice, "Projects", '(/shared/comment "team folder")') == "OK"
    shared = '"#shared/alice/Projects"'
    alice._simple_command("SETACL", "Projects", BOB, "l")
    assert get(bob, shared, "/shared/comment")[0] == "NO"  # "l" alone (RFC 5464 3.3)
    alice._simple_command("SETACL", "Projects", BOB, "lr")
    assert get(bob, shared, "/shared/comment")[1] == [
        b'#shared/alice/Projects (/shared/comment "team folder")']
    assert set_(bob, shared, '(/private/comment "bob\'s note")') == "OK"
    # bob's private entry is his: alice does not see it.
    assert get(alice, "Projects", "/private/comment")[1] == [b"Projects (/private/comment NIL)"]
    alice.logout()
    bob.logout()


def test_annotations_follow_rename_vanish_with_delete_and_outlive_a_restart(server):
    alice = login(server)
    alice.create("Old")
    assert set_(alice, "Old", '(/private/comment "kept")') == "OK"
    alice.rename("Old", "New")
    alice.logout()
    server.stop()
    server.start()
    alice = login(server)
    assert get(alice, "New", "/private/comment")[1] == [b'New (/private/comment "kept")']
    alice.delete("New")
    alice.create("New")
    assert get(alice, "New", "/private/comment")[1] == [b"New (/private/comment NIL)"]
    alice.logout()
