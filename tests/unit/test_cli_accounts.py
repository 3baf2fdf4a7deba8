import argparse
import io

import pytest

from mailforge.cli import accounts as accounts_cli
from mailforge.auth.accounts import open_accounts
from mailforge.auth.api import AccountsUnavailable
from mailforge.errors import MailforgeError, UsageError
from mailforge.store.maildir import mailbox_path


pytestmark = [pytest.mark.usefixtures("cheap_scrypt"), pytest.mark.both_backends]


@pytest.fixture
def config(accounts_config):
    return accounts_config


@pytest.fixture
def run(config, capsys, monkeypatch):
    parser = argparse.ArgumentParser(prog="mailforge")
    accounts_cli.register(parser.add_subparsers(dest="command", required=True))

    def run(*argv, stdin=None):
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        args = parser.parse_args(argv)
        assert args.handler(args, config) == 0
        return capsys.readouterr().out

    return run


def accounts(config):
    return open_accounts(config)


def test_domain_commands(run, config):
    assert run("domain", "add", "Example.COM") == "added domain example.com\n"
    run("domain", "add", "bücher.example")
    assert run("domain", "list") == "example.com\nxn--bcher-kva.example\n"
    assert run("domain", "remove", "example.com") == "removed domain example.com\n"
    assert run("domain", "list") == "xn--bcher-kva.example\n"


def test_duplicate_domain_is_a_usage_error(run):
    run("domain", "add", "example.com")
    with pytest.raises(UsageError, match="exists already"):
        run("domain", "add", "example.com")


def test_user_add_creates_maildir(run, config):
    run("domain", "add", "example.com")
    out = run("user", "add", "Bob@Example.com", "--password-stdin", stdin="pa ss\nignored\n")
    maildir = mailbox_path(config.store_dir, "bob@example.com")
    assert out == f"added mailbox bob@example.com (Maildir {maildir})\n"
    assert all((maildir / sub).is_dir() for sub in ("tmp", "new", "cur"))
    with accounts(config) as db:
        assert db.credentials.check_password("bob@example.com", "pa ss")


def test_password_stdin_strips_only_the_newline(run, config):
    run("domain", "add", "example.com")
    run("user", "add", "bob@example.com", "--password-stdin", stdin=" spaced \t\n")
    with accounts(config) as db:
        assert db.credentials.check_password("bob@example.com", " spaced \t")
    run("user", "passwd", "bob@example.com", "--password-stdin", stdin="no-newline")
    with accounts(config) as db:
        assert db.credentials.check_password("bob@example.com", "no-newline")


def test_empty_password_refused(run, config):
    run("domain", "add", "example.com")
    with pytest.raises(UsageError, match="empty password"):
        run("user", "add", "bob@example.com", "--password-stdin", stdin="\n")
    with accounts(config) as db:
        assert db.directory.users() == []


@pytest.mark.parametrize("line", ["nul\0inside\n", "windows\r\n", "two\rlines\n"])
def test_a_password_no_login_can_carry_is_refused(run, config, line):
    """NUL is AUTH PLAIN's separator, CR and LF end a POP3 PASS line: such a password could
    never be typed at a login. A line from a Windows file keeps its CR, and is refused too."""
    run("domain", "add", "example.com")
    with pytest.raises(UsageError, match="NUL, CR or LF"):
        run("user", "add", "bob@example.com", "--password-stdin", stdin=line)
    run("user", "add", "bob@example.com", "--password-stdin", stdin="pw\n")
    with pytest.raises(UsageError, match="NUL, CR or LF"):
        run("user", "passwd", "bob@example.com", "--password-stdin", stdin=line)
    with accounts(config) as db:
        assert db.credentials.check_password("bob@example.com", "pw")


def test_password_without_tty_needs_password_stdin(run):
    run("domain", "add", "example.com")
    with pytest.raises(UsageError, match="--password-stdin"):
        run("user", "add", "bob@example.com", stdin="")


def test_password_prompted_twice_on_a_tty(run, config, monkeypatch):
    run("domain", "add", "example.com")
    tty = io.StringIO()
    tty.isatty = lambda: True
    monkeypatch.setattr("sys.stdin", tty)
    answers = iter(["one", "two", "typed", "typed"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    with pytest.raises(UsageError, match="do not match"):
        run("user", "add", "bob@example.com")
    run("user", "add", "bob@example.com")
    with accounts(config) as db:
        assert db.credentials.check_password("bob@example.com", "typed")


def test_user_add_errors(run):
    with pytest.raises(UsageError, match="not hosted"):
        run("user", "add", "bob@example.com", "--password-stdin", stdin="pw\n")
    with pytest.raises(UsageError, match="invalid address"):
        run("user", "add", "bob@", "--password-stdin", stdin="pw\n")
    run("domain", "add", "example.com")
    run("user", "add", "bob@example.com", "--password-stdin", stdin="pw\n")
    with pytest.raises(UsageError, match="exists already"):
        run("user", "add", "BOB@example.com", "--password-stdin", stdin="pw\n")


def test_user_list_disable_enable_remove(run, config):
    run("domain", "add", "example.com")
    run("domain", "add", "example.org")
    for address in ("bob@example.com", "alexandra@example.com", "carol@example.org"):
        run("user", "add", address, "--password-stdin", stdin="pw\n")
    assert run("user", "disable", "BOB@example.com") == "disabled bob@example.com\n"
    lines = run("user", "list").splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["alexandra@example.com", "enabled"], ["bob@example.com", "disabled"],
        ["carol@example.org", "enabled"]]
    assert len({line.index("20") for line in lines}) == 1       # the date column is aligned
    assert run("user", "list", "example.org").split()[0] == "carol@example.org"
    assert run("user", "enable", "bob@example.com") == "enabled bob@example.com\n"
    out = run("user", "remove", "bob@example.com")
    maildir = mailbox_path(config.store_dir, "bob@example.com")
    assert "stays on disk" in out and str(maildir) in out
    assert maildir.is_dir()
    with pytest.raises(UsageError, match="no such mailbox"):
        run("user", "remove", "bob@example.com")


def test_alias_commands(run):
    run("domain", "add", "example.com")
    run("user", "add", "bob@example.com", "--password-stdin", stdin="pw\n")
    assert run("alias", "add", "Postmaster@example.com", "bob@example.com") == \
        "added alias postmaster@example.com -> bob@example.com\n"
    run("alias", "add", "info@example.com", "friend@remote.test")
    assert run("alias", "list") == (
        "info@example.com        ->  friend@remote.test\n"
        "postmaster@example.com  ->  bob@example.com\n")
    assert run("alias", "list", "example.com").count("\n") == 2
    assert run("alias", "remove", "info@example.com", "friend@remote.test") == \
        "removed alias info@example.com -> friend@remote.test\n"
    assert run("alias", "remove", "postmaster@example.com") == \
        "removed alias postmaster@example.com\n"
    assert run("alias", "list") == ""


def test_missing_database(tmp_path, run, config, accounts_backend):
    if accounts_backend == "sqlite":
        config.accounts_db.unlink()
        with pytest.raises(UsageError, match="no accounts database"):
            run("domain", "list")
        return
    config.accounts.dsn = config.accounts.dsn.replace("dbname=", "dbname=no") + " password=leak"
    config.accounts.password_file = ""
    config.accounts.timeout = 1.0
    with pytest.raises(AccountsUnavailable, match="accounts database .*password=\\*\\*\\*") as caught:
        run("domain", "list")
    assert "leak" not in str(caught.value)


def test_maildir_failure_is_reported(run, config):
    run("domain", "add", "example.com")
    config.store_dir.write_text("not a directory")
    with pytest.raises(MailforgeError, match="could not create its Maildir"):
        run("user", "add", "bob@example.com", "--password-stdin", stdin="pw\n")


def test_every_leaf_has_a_handler():
    parser = argparse.ArgumentParser()
    accounts_cli.register(parser.add_subparsers(dest="command", required=True))
    for argv in (["domain", "list"], ["user", "list"], ["alias", "list"],
                 ["user", "passwd", "a@b.c"], ["alias", "remove", "a@b.c"]):
        assert callable(parser.parse_args(argv).handler)
    with pytest.raises(SystemExit):
        parser.parse_args(["user"])
