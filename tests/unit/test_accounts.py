import os
import sqlite3
import stat
import threading

import pytest

from mailforge.addresses import AddressError
from mailforge.auth.accounts import Accounts, open_accounts
from mailforge.auth.api import AccountsUnavailable, Lookup
from mailforge.auth.sqlite import database as accounts_database
from mailforge.auth.sql import directory
from mailforge.auth.sql import schema as accounts_schema
from mailforge.errors import MailforgeError, UsageError


pytestmark = [pytest.mark.usefixtures("cheap_scrypt"), pytest.mark.both_backends]


# -- opening

def test_missing_database_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no accounts database at .*nope.sqlite3"):
        Accounts(tmp_path / "nope.sqlite3")
    assert not (tmp_path / "nope.sqlite3").exists()


def test_create_sets_wal_version_and_mode(tmp_path):
    path = tmp_path / "accounts.sqlite3"
    Accounts(path, create=True).close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == accounts_schema.SCHEMA_VERSION
    raw.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == accounts_database.DB_MODE


def test_create_twice_keeps_data(tmp_path):
    path = tmp_path / "accounts.sqlite3"
    with Accounts(path, create=True) as first:
        first.directory.domain_add("example.com")
    with Accounts(path, create=True) as second:
        assert second.directory.domains() == ["example.com"]
    with Accounts(path) as third:
        assert third.directory.domains() == ["example.com"]


def test_foreign_and_newer_databases_refused(tmp_path):
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    empty.touch()
    with pytest.raises(UsageError, match="not a mailforge accounts database"):
        Accounts(empty)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MailforgeError, match="garbage.sqlite3"):
        Accounts(garbage)
    newer = tmp_path / "newer.sqlite3"
    Accounts(newer, create=True).close()
    with sqlite3.connect(newer) as raw:
        raw.execute(f"PRAGMA user_version = {accounts_schema.SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(UsageError, match="newer"):
        Accounts(newer)


# -- domains

def test_domains(db):
    db.directory.domain_add("Bücher.Example")
    assert db.directory.domains() == ["example.com", "xn--bcher-kva.example"]
    with pytest.raises(UsageError, match="exists already"):
        db.directory.domain_add("Example.Com")
    with pytest.raises(AddressError):
        db.directory.domain_add("bad_domain.com")
    with pytest.raises(UsageError, match="address literal"):
        db.directory.domain_add("[192.0.2.1]")


def test_domain_remove(db):
    db.directory.user_add("bob@example.com", "pw")
    db.directory.domain_add("example.org")
    db.directory.alias_add("info@example.org", "bob@example.com")
    with pytest.raises(UsageError, match="1 mailbox"):
        db.directory.domain_remove("example.com")
    with pytest.raises(UsageError, match="1 alias"):
        db.directory.domain_remove("example.org")
    with pytest.raises(UsageError, match="not hosted"):
        db.directory.domain_remove("example.net")
    db.directory.alias_remove("info@example.org")
    db.directory.domain_remove("EXAMPLE.org")
    assert db.directory.domains() == ["example.com"]


# -- mailboxes

def test_user_add_and_list(db):
    db.directory.domain_add("example.org")
    db.directory.user_add("Bob@Example.COM", "pw")
    db.directory.user_add("alice@example.com", "pw")
    db.directory.user_add("carol@example.org", "pw")
    assert [u.address for u in db.directory.users()] == ["alice@example.com", "bob@example.com",
                                                "carol@example.org"]
    assert [u.address for u in db.directory.users("example.org")] == ["carol@example.org"]
    (bob,) = [u for u in db.directory.users() if u.address == "bob@example.com"]
    assert bob.disabled is False and bob.created > 0
    with pytest.raises(UsageError, match="not hosted"):
        db.directory.users("example.net")


def test_user_add_refusals(db):
    db.directory.user_add("bob@example.com", "pw")
    with pytest.raises(UsageError, match="exists already"):
        db.directory.user_add("BOB@example.com", "other")
    with pytest.raises(UsageError, match="domain example.org is not hosted"):
        db.directory.user_add("bob@example.org", "pw")
    with pytest.raises(UsageError, match="empty password"):
        db.directory.user_add("carol@example.com", "")
    with pytest.raises(AddressError):
        db.directory.user_add("no-at-sign", "pw")
    db.directory.alias_add("info@example.com", "bob@example.com")
    with pytest.raises(UsageError, match="is an alias"):
        db.directory.user_add("info@example.com", "pw")


def test_passwords(db):
    db.directory.user_add("bob@example.com", "s3cret")
    row = db.database.fetchone("SELECT password FROM mailboxes")[0]
    assert row.startswith("$scrypt$") and "s3cret" not in row
    assert db.credentials.check_password("BOB@example.com", "s3cret")
    assert not db.credentials.check_password("bob@example.com", "S3cret")
    assert not db.credentials.check_password("nobody@example.com", "s3cret")
    assert not db.credentials.check_password("not an address", "s3cret")
    db.credentials.user_passwd("bob@example.com", "new")
    assert db.credentials.check_password("bob@example.com", "new")
    assert not db.credentials.check_password("bob@example.com", "s3cret")
    db.directory.user_disable("bob@example.com")
    assert not db.credentials.check_password("bob@example.com", "new")
    db.directory.user_enable("bob@example.com")
    assert db.credentials.check_password("bob@example.com", "new")
    with pytest.raises(UsageError, match="no such mailbox"):
        db.credentials.user_passwd("nobody@example.com", "x")


def test_user_remove(db):
    db.directory.user_add("bob@example.com", "pw")
    db.directory.user_remove("Bob@example.com")
    assert db.directory.users() == []
    assert db.directory.lookup_recipient("bob@example.com") == Lookup("unknown")
    for method in (db.directory.user_remove, db.directory.user_disable, db.directory.user_enable):
        with pytest.raises(UsageError, match="no such mailbox: bob@example.com"):
            method("bob@example.com")


# -- aliases

def test_alias_add_and_list(db):
    db.directory.domain_add("example.org")
    db.directory.user_add("bob@example.com", "pw")
    db.directory.alias_add("Postmaster@example.com", "BOB@example.com")
    db.directory.alias_add("postmaster@example.com", "someone@remote.test")
    db.directory.alias_add("info@example.org", "postmaster@example.com")
    assert db.directory.aliases() == [("info@example.org", "postmaster@example.com"),
                            ("postmaster@example.com", "bob@example.com"),
                            ("postmaster@example.com", "someone@remote.test")]
    assert db.directory.aliases("example.org") == [("info@example.org", "postmaster@example.com")]


def test_alias_refusals(db):
    db.directory.user_add("bob@example.com", "pw")
    db.directory.alias_add("info@example.com", "bob@example.com")
    with pytest.raises(UsageError, match="exists already"):
        db.directory.alias_add("INFO@example.com", "bob@EXAMPLE.com")
    with pytest.raises(UsageError, match="is a mailbox"):
        db.directory.alias_add("bob@example.com", "info@example.com")
    with pytest.raises(UsageError, match="not hosted"):
        db.directory.alias_add("info@example.org", "bob@example.com")
    with pytest.raises(UsageError, match="itself"):
        db.directory.alias_add("self@example.com", "Self@example.com")
    with pytest.raises(UsageError, match="neither a mailbox nor an alias"):
        db.directory.alias_add("sales@example.com", "bbo@example.com")
    with pytest.raises(UsageError, match="not a wildcard: write a domain's catch-all as @example"):
        db.directory.alias_add("*@example.com", "bob@example.com")
    with pytest.raises(UsageError, match="not hosted"):
        db.directory.alias_add("@example.org", "bob@example.com")


def test_an_unchecked_alias_target_is_taken_on_trust_like_a_remote_one(db):
    """check_target=False (the console's, for a domain administrator's target in a domain not
    its own): an address of ours that does not exist is stored, and reaches nobody, as a
    target removed after its alias was made."""
    db.directory.domain_add("example.org")
    db.directory.alias_add("fwd@example.com", "nobody@example.org", check_target=False)
    assert db.directory.aliases() == [("fwd@example.com", "nobody@example.org")]
    assert db.directory.lookup_recipient("fwd@example.com") == Lookup("unknown")


def test_alias_remove(db):
    db.directory.user_add("bob@example.com", "pw")
    db.directory.user_add("alice@example.com", "pw")
    db.directory.alias_add("team@example.com", "bob@example.com")
    db.directory.alias_add("team@example.com", "alice@example.com")
    db.directory.alias_remove("team@example.com", "Bob@example.com")
    assert db.directory.aliases() == [("team@example.com", "alice@example.com")]
    with pytest.raises(UsageError, match="no such alias: team@example.com -> bob@example.com"):
        db.directory.alias_remove("team@example.com", "bob@example.com")
    db.directory.alias_remove("TEAM@example.com")
    assert db.directory.aliases() == []
    with pytest.raises(UsageError, match="no such alias: team@example.com$"):
        db.directory.alias_remove("team@example.com")


# -- lookup

def test_lookup_mailbox_case_insensitive(db):
    db.directory.user_add("Bob@example.com", "pw")
    assert db.directory.lookup_recipient("BOB@EXAMPLE.COM") == Lookup("ok", ["bob@example.com"])
    assert db.directory.lookup_recipient('"bob"@example.com') == Lookup("ok", ["bob@example.com"])


def test_lookup_statuses(db):
    db.directory.user_add("bob@example.com", "pw")
    assert db.directory.lookup_recipient("nobody@example.com") == Lookup("unknown")
    assert db.directory.lookup_recipient("bob@example.org") == Lookup("not_local")
    assert db.directory.lookup_recipient("bob@[192.0.2.1]") == Lookup("not_local")
    db.directory.user_disable("bob@example.com")
    assert db.directory.lookup_recipient("bob@example.com") == Lookup("disabled")
    with pytest.raises(AddressError):
        db.directory.lookup_recipient("bob")


def test_lookup_alias_expansion_deduplicates(db):
    for user in ("alice", "bob", "carol"):
        db.directory.user_add(f"{user}@example.com", "pw")
    db.directory.alias_add("devs@example.com", "alice@example.com")
    db.directory.alias_add("devs@example.com", "bob@example.com")
    db.directory.alias_add("ops@example.com", "bob@example.com")
    db.directory.alias_add("ops@example.com", "carol@example.com")
    db.directory.alias_add("all@example.com", "devs@example.com")
    db.directory.alias_add("all@example.com", "ops@example.com")
    db.directory.alias_add("all@example.com", "alice@example.com")
    assert db.directory.lookup_recipient("All@example.com") == Lookup(
        "ok", ["alice@example.com", "bob@example.com", "carol@example.com"])


def test_lookup_alias_to_disabled_and_remote(db):
    db.directory.user_add("bob@example.com", "pw")
    db.directory.user_add("alice@example.com", "pw")
    db.directory.alias_add("team@example.com", "bob@example.com")
    db.directory.alias_add("team@example.com", "alice@example.com")
    db.directory.alias_add("team@example.com", "friend@remote.test")
    db.directory.user_disable("bob@example.com")
    assert db.directory.lookup_recipient("team@example.com") == Lookup(
        "ok", ["alice@example.com"], forwards=["friend@remote.test"])
    db.directory.user_disable("alice@example.com")
    # The remote target still takes the mail.
    assert db.directory.lookup_recipient("team@example.com") == Lookup(
        "ok", [], forwards=["friend@remote.test"])
    db.directory.alias_remove("team@example.com", "friend@remote.test")
    assert db.directory.lookup_recipient("team@example.com") == Lookup("disabled")


def test_lookup_alias_forwards_to_remote_targets_through_aliases(db):
    db.directory.user_add("bob@example.com", "pw")
    db.directory.alias_add("fwd@example.com", "Friend@Remote.test")
    assert db.directory.lookup_recipient("fwd@example.com") == Lookup(
        "ok", forwards=["friend@remote.test"])
    db.directory.alias_add("list@example.com", "fwd@example.com")
    db.directory.alias_add("list@example.com", "bob@example.com")
    db.directory.alias_add("list@example.com", "other@elsewhere.test")
    assert db.directory.lookup_recipient("list@example.com") == Lookup(
        "ok", ["bob@example.com"], forwards=["other@elsewhere.test", "friend@remote.test"])
    db.directory.alias_add("fwd@example.com", "list@example.com")  # a loop: each reached once
    assert db.directory.lookup_recipient("fwd@example.com") == Lookup(
        "ok", ["bob@example.com"], forwards=["friend@remote.test", "other@elsewhere.test"])


def test_lookup_alias_loop(db):
    db.directory.user_add("bob@example.com", "pw")
    db.directory.alias_add("a@example.com", "bob@example.com")
    db.directory.alias_add("b@example.com", "a@example.com")
    db.directory.alias_add("a@example.com", "b@example.com")           # a -> b -> a
    assert db.directory.lookup_recipient("a@example.com") == Lookup("ok", ["bob@example.com"])
    assert db.directory.lookup_recipient("b@example.com") == Lookup("ok", ["bob@example.com"])
    db.directory.alias_remove("a@example.com", "bob@example.com")
    assert db.directory.lookup_recipient("a@example.com") == Lookup("unknown")


def test_lookup_depth_bound(db, monkeypatch):
    monkeypatch.setattr(directory, "MAX_ALIAS_DEPTH", 3)
    db.directory.user_add("bob@example.com", "pw")
    db.directory.alias_add("l1@example.com", "bob@example.com")
    for level in range(2, 5):
        db.directory.alias_add(f"l{level}@example.com", f"l{level - 1}@example.com")
    assert db.directory.lookup_recipient("l3@example.com") == Lookup("ok", ["bob@example.com"])
    assert db.directory.lookup_recipient("l4@example.com") == Lookup("unknown")


def test_usable_from_other_threads(db):
    db.directory.user_add("bob@example.com", "pw")
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        db.directory.lookup_recipient("bob@example.com").status)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["ok"] * 8


def test_second_connection_sees_writes(db, accounts_config):
    with open_accounts(accounts_config) as other:
        other.directory.user_add("bob@example.com", "pw")
    assert db.directory.lookup_recipient("bob@example.com").status == "ok"


# -- catch-all and subaddressing

def test_a_catch_all_takes_only_what_no_mailbox_or_alias_has(db):
    for user in ("alice", "bob"):
        db.directory.user_add(f"{user}@example.com", "pw")
    db.directory.alias_add("@Example.COM", "bob@example.com")
    db.directory.alias_add("fwd@example.com", "friend@remote.test")
    assert db.directory.aliases() == [("@example.com", "bob@example.com"),
                                      ("fwd@example.com", "friend@remote.test")]
    assert db.directory.lookup_recipient("anyone@example.com") == Lookup("ok", ["bob@example.com"])
    assert db.directory.lookup_recipient("alice@example.com") == Lookup("ok", ["alice@example.com"])
    # An alias that matches stays matched: it forwards, the catch-all has no say.
    assert db.directory.lookup_recipient("fwd@example.com") == Lookup(
        "ok", forwards=["friend@remote.test"])
    db.directory.alias_remove("@example.com")
    assert db.directory.lookup_recipient("anyone@example.com") == Lookup("unknown")


def test_a_subaddress_reaches_its_base_before_the_catch_all(db):
    subaddressed = directory.Directory(db.database, recipient_delimiter="+-")
    for user in ("alice", "bob", "c+d"):
        db.directory.user_add(f"{user}@example.com", "pw")
    assert subaddressed.lookup_recipient("Alice+Lists@example.com") == Lookup(
        "ok", ["alice@example.com"], "lists")
    assert subaddressed.lookup_recipient("alice-x+y@example.com") == Lookup(
        "ok", ["alice@example.com"], "x+y")
    # The whole address first: a mailbox whose name holds the delimiter keeps its mail.
    assert subaddressed.lookup_recipient("c+d@example.com") == Lookup("ok", ["c+d@example.com"])
    assert subaddressed.lookup_recipient("+x@example.com") == Lookup("unknown")
    db.directory.alias_add("@example.com", "bob@example.com")
    assert subaddressed.lookup_recipient("nobody+x@example.com") == Lookup(
        "ok", ["bob@example.com"])
    # Without a delimiter, alice+lists is an address of its own: the catch-all's.
    assert db.directory.lookup_recipient("alice+lists@example.com") == Lookup(
        "ok", ["bob@example.com"])


def test_driver_failures_are_accounts_unavailable(tmp_path):
    with Accounts(tmp_path / "a.sqlite3", create=True) as accounts:
        accounts.database._connection.close()
        with pytest.raises(AccountsUnavailable, match="a.sqlite3: Cannot operate on a closed"):
            accounts.directory.lookup_recipient("bob@example.com")
        with pytest.raises(AccountsUnavailable):
            accounts.directory.domain_add("example.com")
