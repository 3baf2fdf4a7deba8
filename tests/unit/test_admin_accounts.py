"""The console's administrators in the accounts database (auth/sql/admins.py): roles and
domains, password checks, sessions that end, API tokens, the audit trail; and the mailbox
listing the console pages through (Directory.users_page)."""

from __future__ import annotations

import sqlite3
import time

import pytest

from mailforge.auth.accounts import Accounts
from mailforge.auth.sql import schema as accounts_database
from mailforge.errors import UsageError

pytestmark = pytest.mark.usefixtures("cheap_scrypt")


@pytest.fixture
def accounts(tmp_path):
    with Accounts(tmp_path / "accounts.sqlite3", create=True) as opened:
        opened.directory.domain_add("one.test")
        opened.directory.domain_add("two.test")
        yield opened


def test_roles_domains_and_password_checks(accounts):
    admins = accounts.admins
    admins.admin_add("Boss", "pw1", "system", [])
    admins.admin_add("host1", "pw2", "domain", ["ONE.test"])
    assert [(a.name, a.role, a.domains) for a in admins.admins()] == \
        [("boss", "system", ()), ("host1", "domain", ("one.test",))]
    host = admins.check_admin_password("host1", "pw2")
    assert host.manages("one.test") and not host.manages("two.test") and not host.is_system
    assert admins.check_admin_password("boss", "pw1").manages("two.test")
    for name, password in (("boss", "wrong"), ("nobody", "pw1"), ("bad name!", "pw1")):
        assert admins.check_admin_password(name, password) is None


@pytest.mark.parametrize("name, role, domains, message", [
    ("x", "domain", [], "needs --domain"),
    ("x", "system", ["one.test"], "takes none"),
    ("x", "root", [], "role must be one of"),
    ("x", "domain", ["three.test"], "not hosted here"),
    ("has space", "system", [], "bad administrator name"),
])
def test_bad_administrators_are_refused_in_one_line(accounts, name, role, domains, message):
    with pytest.raises(UsageError, match=message):
        accounts.admins.admin_add(name, "pw", role, domains)
    assert accounts.admins.admins() == []


def test_a_session_ends_when_it_expires_when_closed_and_with_its_administrator(accounts, monkeypatch):
    admins = accounts.admins
    admins.admin_add("boss", "pw", "system", [])
    secret, csrf = admins.open_session("boss", 60)
    login = admins.session(secret)
    assert login.admin.name == "boss" and login.csrf == csrf and len(csrf) >= 40
    assert admins.session(secret + "x") is None and admins.token(secret) is None
    with sqlite3.connect(accounts.database.path) as raw:  # only the hash is stored
        assert secret not in str(raw.execute("SELECT * FROM admin_sessions").fetchall())
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert admins.session(secret) is None
    monkeypatch.undo()
    second, _ = admins.open_session("boss", 60)
    admins.close_session(second)
    assert admins.session(second) is None
    token = admins.issue_token("boss")
    assert admins.token(token).admin.name == "boss" and admins.session(token) is None
    admins.admin_remove("boss")
    assert admins.token(token) is None
    with pytest.raises(UsageError, match="no such administrator"):
        admins.admin_remove("boss")


def test_the_audit_trail_keeps_who_what_when_and_where(accounts):
    admins = accounts.admins
    admins.admin_add("boss", "pw", "domain", ["one.test"])
    admins.record("boss", "192.0.2.1", "user add", "a@one.test")
    admins.record("host1", "192.0.2.2", "alias add", "b@one.test -> a@one.test")
    newest, oldest = admins.recent(10)
    assert (newest.admin, newest.client, newest.action) == ("host1", "192.0.2.2", "alias add")
    assert oldest.detail == "a@one.test" and oldest.time <= newest.time
    (boss,) = admins.admins()
    assert [e.admin for e in admins.recent(10, boss)] == ["boss"]


def test_a_name_given_again_does_not_inherit_its_former_holders_audit_entries(accounts):
    """A domain administrator sees its own entries by name: not those of a removed one of
    that name, who may have managed another domain."""
    admins = accounts.admins
    admins.admin_add("joe", "pw", "domain", ["one.test"])
    admins.record("joe", "192.0.2.1", "user add", "secret@one.test")
    admins.admin_remove("joe")
    time.sleep(0.01)  # the new one is created later than the old one's entry
    admins.admin_add("joe", "pw", "domain", ["two.test"])
    admins.record("joe", "192.0.2.1", "user add", "b@two.test")
    (joe,) = admins.admins()
    assert [e.detail for e in admins.recent(10, joe)] == ["b@two.test"]
    assert len(admins.recent(10)) == 2  # a system administrator sees both


def test_schema_6_migrates_to_7_with_the_console_tables(tmp_path):
    path = tmp_path / "accounts.sqlite3"
    Accounts(path, create=True).close()
    with sqlite3.connect(path) as raw:
        raw.executescript("DROP TABLE admin_domains; DROP TABLE admin_sessions; "
                          "DROP TABLE admin_audit; DROP TABLE admins; DROP TABLE nodes; "
                          "ALTER TABLE domains DROP COLUMN node; "
                          "ALTER TABLE mailboxes DROP COLUMN node; PRAGMA user_version = 6;")
    raw.close()
    with Accounts(path) as migrated:
        assert migrated.database.fetchone("PRAGMA user_version")[0] == accounts_database.SCHEMA_VERSION
        migrated.directory.domain_add("one.test")
        migrated.admins.admin_add("boss", "pw", "system", [])
        assert migrated.admins.check_admin_password("boss", "pw") is not None


def test_the_mailbox_listing_searches_and_pages_in_sql(accounts):
    for n in range(120):
        accounts.directory.user_add(f"user{n:03d}@one.test", "pw")
    accounts.directory.user_add("user_x@two.test", "pw")
    page = accounts.directory.users_page(None, "", 50, 50)
    assert page.total == 121 and [u.address for u in page.users][:2] == ["user050@one.test", "user051@one.test"]
    scoped = accounts.directory.users_page(["two.test"], "", 0, 50)
    assert [u.address for u in scoped.users] == ["user_x@two.test"] and scoped.total == 1
    # LIKE's wildcards are the search's own characters, not patterns.
    assert accounts.directory.users_page(None, "_x", 0, 50).total == 1
    assert accounts.directory.users_page(None, "USER11", 0, 50).total == 10
    assert accounts.directory.users_page(["one.test"], "%", 0, 50).total == 0


def test_a_new_password_ends_logins_and_a_new_role_is_checked_as_at_add(accounts):
    admins = accounts.admins
    admins.admin_add("host1", "pw", "domain", ["one.test"])
    secret, _ = admins.open_session("host1", 60)
    token = admins.issue_token("host1")
    admins.admin_passwd("host1", "pw2")
    assert admins.session(secret) is None and admins.token(token) is not None
    assert admins.check_admin_password("host1", "pw2") is not None
    admins.admin_set_role("host1", "domain", ["TWO.test", "one.test"])
    assert admins.token(token).admin.domains == ("one.test", "two.test")
    for role, domains, message in (("system", ["one.test"], "takes none"), ("domain", ["x.test"], "not hosted")):
        with pytest.raises(UsageError, match=message):
            admins.admin_set_role("host1", role, domains)
    assert admins.admins()[0].domains == ("one.test", "two.test")
    with pytest.raises(UsageError, match="no such administrator"):
        admins.admin_passwd("nobody", "pw")


def test_an_administrator_removed_during_its_login_fails_it_like_a_wrong_password(
        accounts, tmp_path, monkeypatch):
    """The password check is slow on purpose; an administrator removed meanwhile (from the
    CLI, another process) must get None, not a TypeError the console answers with a 500."""
    from mailforge.auth.sql import admins as admins_module

    accounts.admins.admin_add("leaving", "pw", "system", [])
    real_verify = admins_module.verify_password

    def removed_meanwhile(password: str, hashed: str) -> bool:
        with Accounts(tmp_path / "accounts.sqlite3") as other:
            other.admins.admin_remove("leaving")
        return real_verify(password, hashed)

    monkeypatch.setattr(admins_module, "verify_password", removed_meanwhile)
    assert accounts.admins.check_admin_password("leaving", "pw") is None


def test_the_last_system_administrator_is_kept_when_asked_in_the_change_itself(accounts):
    """The console asks (keep_a_system_admin) and the check is made in the change's own write
    transaction: of two system administrators demoting each other at once, one is refused."""
    admins = accounts.admins
    for name in ("ann", "bob"):
        admins.admin_add(name, "pw", "system", [])
    admins.admin_set_role("ann", "domain", ["one.test"], keep_a_system_admin=True)
    with pytest.raises(UsageError, match="bob is the last system administrator"):
        admins.admin_set_role("bob", "domain", ["one.test"], keep_a_system_admin=True)
    with pytest.raises(UsageError, match="bob is the last system administrator"):
        admins.admin_remove("bob", keep_a_system_admin=True)
    assert [(a.name, a.is_system) for a in admins.admins()] == [("ann", False), ("bob", True)]
    admins.admin_remove("bob")  # the command line still may
    assert [a.name for a in admins.admins()] == ["ann"]
