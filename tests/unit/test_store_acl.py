"""The rights model (store/acl.py) and which right each IMAP flag change needs."""

from __future__ import annotations

import pytest

from mailforge.store.acl import permitted_flags
from mailforge.store import acl, shared
from mailforge.store.maildir import ensure_maildir, mailbox_path
from mailforge.store.api import InvalidName, NotPermitted


def test_rights_parse_render_and_change():
    assert acl.render(acl.parse_rights("rl")) == "lr"
    assert acl.parse_rights("cd") == frozenset("kxte")  # RFC 4314 2.1.1
    with pytest.raises(ValueError):
        acl.parse_rights("lz")
    assert acl.changed(frozenset("lr"), "+s") == frozenset("lrs")
    assert acl.changed(frozenset("lrs"), "-rs") == frozenset("l")
    assert acl.changed(frozenset("lrs"), "i") == frozenset("i")


def test_identifiers_stay_in_the_domain():
    assert acl.identifier("Bob", "example.test") == "bob@example.test"
    assert acl.identifier("ANYONE", "example.test") == "anyone"
    with pytest.raises(NotPermitted):
        acl.identifier("carol@other.test", "example.test")
    with pytest.raises(InvalidName):
        acl.identifier("-bob", "example.test")


def test_rights_of_unions_anyone_authenticated_and_the_user():
    entries = {"anyone": frozenset("l"), "authenticated": frozenset("r"),
               "bob@example.test": frozenset("i")}
    assert acl.rights_of("bob@example.test", entries) == frozenset("lri")
    assert acl.rights_of("carl@example.test", entries) == frozenset("lr")


def test_public_setting_as_rights():
    assert acl.public_defaults("*", "*") == {"anyone": acl.PUBLIC_WRITER_RIGHTS}
    assert acl.public_defaults("", "*") == {"anyone": frozenset("lr")}
    assert acl.public_defaults("bob@example.test", "*")["bob@example.test"] == frozenset("lrswipkxte")


def test_entries_survive_on_disk_and_the_owner_cannot_be_changed(tmp_path):
    acl.set_entry(tmp_path, "example.test", "alice@example.test", "bob", "lr")
    acl.set_entry(tmp_path, "example.test", "alice@example.test", "bob", "+i")
    assert acl.load(tmp_path) == {"bob@example.test": frozenset("lri")}
    with pytest.raises(InvalidName):
        acl.set_entry(tmp_path, "example.test", "alice@example.test", "alice", "l")
    acl.delete_entry(tmp_path, "example.test", "alice@example.test", "bob")
    assert acl.load(tmp_path) == {}


@pytest.mark.parametrize("rights, allowed", [
    ("lrswipkxtea", ["\\Seen", "\\Deleted", "\\Flagged", "$Work"]),
    ("lrs", ["\\Seen"]),            # \Seen needs s
    ("lrt", ["\\Deleted"]),         # \Deleted needs t
    ("lrw", ["\\Flagged", "$Work"]),  # every other flag needs w
])
def test_store_flags_need_their_rights(rights, allowed):
    flags = ["\\Seen", "\\Deleted", "\\Flagged", "$Work"]
    assert permitted_flags(flags, frozenset(rights)) == allowed


def test_sharers_are_remembered_once_each_and_only_for_personal_folders(tmp_path):
    """LIST looks for #shared folders only in the mailboxes that set an ACL entry."""
    for local in ("alice", "bob", "carol"):
        ensure_maildir(mailbox_path(tmp_path, f"{local}@example.test"))
    assert list(shared.sharers(tmp_path, "example.test")) == []
    alice = mailbox_path(tmp_path, "alice@example.test")
    shared.set_entry(tmp_path, alice, "example.test", "alice@example.test", "bob", "lr")
    shared.set_entry(tmp_path, alice, "example.test", "alice@example.test", "carol", "lr")
    public = tmp_path / "public"
    public.mkdir()
    shared.set_entry(tmp_path, public, "example.test", None, "bob", "lrs")
    assert [owner for owner, _ in shared.sharers(tmp_path, "example.test")] == ["alice@example.test"]
    assert acl.load(alice) == {"bob@example.test": frozenset("lr"),
                               "carol@example.test": frozenset("lr")}
