"""ACL (RFC 4314) over real sockets: alice shares a folder with bob of her domain; a user of
another domain never reaches it; public-folder rights set from the CLI."""

from __future__ import annotations

import imaplib

import pytest

from .conftest import PASSWORD, USER, cli
from .imap_helpers import fill, login

BOB, CAROL = "bob@example.test", "carol@other.test"
imaplib.Commands.setdefault("LISTRIGHTS", ("AUTH", "SELECTED"))  # imaplib knows the others


@pytest.fixture(scope="module")
def server_data(make_module_server):
    """The accounts every test starts from, added once; not started."""
    server = make_module_server(imap_services=True, server={"allow_plaintext_auth": True})
    cli(server.conf, "domain", "add", "other.test")
    for address in (BOB, CAROL):
        cli(server.conf, "user", "add", address, "--password-stdin", input=PASSWORD + "\n")
    return server


@pytest.fixture
def server(server_data, tmp_path):
    """A server of its own on a copy of server_data: the tests share folders and set rights."""
    with server_data.running_copy(tmp_path) as server:
        yield server


def client_of(server, address: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=20)
    client.login(address, PASSWORD)
    return client


def test_alice_shares_a_folder_with_bob(server):
    alice, bob = login(server), client_of(server, BOB)
    assert b"ACL" in alice.capability()[1][0].split()
    assert alice.create("Projects")[0] == "OK"
    fill(alice, 2, "Projects")
    shared = '"#shared/alice/Projects"'
    # Nothing granted: the folder does not exist for bob.
    assert bob.select(shared)[0] == "NO"
    assert b"#shared/alice" not in b"".join(bob.list()[1])

    assert alice._simple_command("SETACL", "Projects", BOB, "l")[0] == "OK"
    assert b"#shared/alice/Projects" in b"".join(bob.list()[1])
    status, data = bob.select(shared)
    assert status == "NO" and b"NOPERM" in data[0]

    assert alice._simple_command("SETACL", "Projects", "bob", "+r")[0] == "OK"
    assert alice._untagged_response(*alice._simple_command("GETACL", "Projects"), "ACL")[1] == [
        b"Projects alice@example.test lrswipkxtea bob@example.test lr"]
    assert bob.select(shared, readonly=True)[0] == "OK"  # no s, w, t, e: READ-ONLY
    assert bob._untagged_response(*bob._simple_command("MYRIGHTS", shared), "MYRIGHTS")[1] == [
        b'#shared/alice/Projects lr']
    assert bob.fetch("1", "(FLAGS)")[0] == "OK"
    assert bob.store("1", "+FLAGS", "(\\Deleted)")[0] == "NO"
    assert bob.expunge()[0] == "NO"
    assert bob._simple_command("SETACL", shared, BOB, "lrswipkxtea")[0] == "NO"  # no "a"

    # With "s" bob may mark messages seen, but \Deleted is silently left alone.
    assert alice._simple_command("SETACL", "Projects", BOB, "+s")[0] == "OK"
    assert bob.select(shared)[0] == "OK"
    assert bob.store("1", "+FLAGS", "(\\Seen \\Deleted)")[0] == "OK"
    flags = alice.select("Projects") and alice.fetch("1", "(FLAGS)")[1][0]
    assert b"\\Seen" in flags and b"\\Deleted" not in flags
    assert bob.expunge()[0] == "NO"

    # "i": bob may COPY into it, into his own folders from it too.
    fill(bob, 1)
    assert bob.select("INBOX")[0] == "OK"
    assert bob.copy("1", shared)[0] == "NO"
    assert alice._simple_command("SETACL", "Projects", BOB, "+i")[0] == "OK"
    assert bob.copy("1", shared)[0] == "OK"
    assert alice.select("Projects")[1] == [b"3"]
    assert bob.delete(shared)[0] == "NO"
    assert alice._simple_command("DELETEACL", "Projects", BOB)[0] == "OK"
    assert bob.status(shared, "(MESSAGES)")[0] == "NO"


def test_another_domain_never_sees_it(server):
    alice, carol = login(server), client_of(server, CAROL)
    assert alice.create("Projects")[0] == "OK"
    assert alice._simple_command("SETACL", "Projects", "anyone", "lr")[0] == "OK"
    assert alice._simple_command("SETACL", "Projects", CAROL, "lr")[0] == "NO"
    assert b"#shared" not in b"".join(carol.list()[1])
    assert carol.select('"#shared/alice/Projects"')[0] == "NO"
    assert carol.select('"#shared/alice@example.test/Projects"')[0] == "NO"


def test_negative_rights_and_unknown_letters_are_refused(server):
    alice = login(server)
    assert alice._simple_command("SETACL", "INBOX", "-bob", "r")[0] == "NO"
    with pytest.raises(imaplib.IMAP4.error):
        alice._simple_command("SETACL", "INBOX", "bob", "rz")
    assert alice._untagged_response(*alice._simple_command("LISTRIGHTS", "INBOX", "bob"),
                                    "LISTRIGHTS")[1] == [b'INBOX bob "" l r s w i p k x t e a']


def test_public_folder_rights_from_the_cli(server):
    cli(server.conf, "public", "set", "example.test", "on", "--writers", "nobody")
    alice, bob = login(server), client_of(server, BOB)
    assert alice.create('"#public/News"')[0] == "NO"
    server_root = server.maildir(USER).parent.parent / "public"
    (server_root / ".News").mkdir()
    for sub in ("cur", "new", "tmp"):
        (server_root / ".News" / sub).mkdir()
    (server_root / ".News" / "maildirfolder").touch()
    assert bob.select('"#public/News"', readonly=True)[0] == "OK"  # everyone reads ("lr")
    assert bob.append('"#public/News"', None, None, b"Subject: x\r\n\r\nx\r\n")[0] == "NO"
    out = cli(server.conf, "acl", "set", "example.test", "News", BOB, "lrswi").stdout
    assert f"{BOB}\tlrswi" in out and "anyone\tlr" in out
    assert bob.append('"#public/News"', None, None, b"Subject: x\r\n\r\nx\r\n")[0] == "OK"
    assert alice.append('"#public/News"', None, None, b"Subject: x\r\n\r\nx\r\n")[0] == "NO"
    assert "anyone\tlr" in cli(server.conf, "acl", "delete", "example.test", "News", BOB).stdout
    assert bob.append('"#public/News"', None, None, b"Subject: x\r\n\r\nx\r\n")[0] == "NO"


def test_append_and_copy_into_a_shared_folder_keep_only_the_flags_the_rights_allow(server):
    """RFC 4314 4: the flags an APPEND or COPY brings in need the rights a STORE would."""
    alice, bob = login(server), client_of(server, BOB)
    assert alice.create("Drop")[0] == "OK"
    assert alice._simple_command("SETACL", "Drop", BOB, "lris")[0] == "OK"  # \Seen, no w or t
    shared = '"#shared/alice/Drop"'
    message = b"From: bob@example.test\r\nSubject: flags\r\n\r\nbody\r\n"
    assert bob.append(shared, "(\\Seen \\Flagged \\Deleted $Work)", None, message)[0] == "OK"
    assert bob.append("INBOX", "(\\Seen \\Answered \\Deleted $Work)", None, message)[0] == "OK"
    assert bob.select("INBOX")[0] == "OK"
    assert bob.copy("1", shared)[0] == "OK"
    assert alice.select("Drop")[0] == "OK"
    flags = alice.fetch("1:2", "(FLAGS)")[1]
    assert all(line.endswith(b"FLAGS (\\Seen \\Recent))") for line in flags), flags
