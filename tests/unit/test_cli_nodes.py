"""Mailbox routing's part of the accounts database, through the CLI: `node add|list|remove`,
`domain set --node`, `user set --node`, `user show` and `user list`; and a database of the
schema before it (7) brought up to date."""

import argparse
import io
import sqlite3

import pytest

from mailforge.auth.accounts import Accounts, open_accounts
from mailforge.auth.api import Node
from mailforge.auth.sql import schema as accounts_schema
from mailforge.cli import accounts as accounts_cli, nodes as nodes_cli
from mailforge.errors import UsageError

pytestmark = pytest.mark.usefixtures("cheap_scrypt")


@pytest.fixture
def run(accounts_config, capsys, monkeypatch):
    parser = argparse.ArgumentParser(prog="mailforge")
    sub = parser.add_subparsers(dest="command", required=True)
    accounts_cli.register(sub)
    nodes_cli.register(sub)

    def run(*argv, stdin=None):
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        args = parser.parse_args(argv)
        assert args.handler(args, accounts_config) == 0
        return capsys.readouterr().out

    run("domain", "add", "example.com")
    for address in ("alice@example.com", "bob@example.com"):
        run("user", "add", address, "--password-stdin", stdin="pw\n")
    return run


def owner(config, address):
    with open_accounts(config) as accounts:
        return accounts.nodes.owner(address)


@pytest.mark.both_backends
def test_nodes_added_listed_and_removed(run):
    assert run("node", "add", "b", "--host", "10.0.0.2", "--pop3-port", "2110") == (
        "added node b (host 10.0.0.2 imap 143 pop3 2110 smtp 25)\n")
    run("node", "add", "a", "--host", "10.0.0.1")
    assert [line.split()[0] for line in run("node", "list").splitlines()] == ["a", "b"]
    assert run("node", "remove", "a") == "removed node a\n"
    assert run("node", "list").split()[0] == "b"


@pytest.mark.both_backends
def test_node_mistakes_are_one_line_errors(run):
    run("node", "add", "b", "--host", "10.0.0.2")
    for argv, message in ((["node", "add", "b", "--host", "h"], "exists already"),
                          (["node", "add", "bad name", "--host", "h"], "invalid node name"),
                          (["node", "add", "c", "--host", "h", "--smtp-port", "70000"],
                           "invalid smtp port"),
                          (["node", "remove", "zz"], "no such node: zz"),
                          (["domain", "set", "example.com", "--node", "zz"], "no such node: zz"),
                          (["user", "set", "alice@example.com", "--node", "zz"], "no such node"),
                          (["user", "set", "carol@example.com", "--node", "b"], "no such mailbox"),
                          (["domain", "set", "example.org", "--node", "b"], "not hosted")):
        with pytest.raises(UsageError, match=message):
            run(*argv)


@pytest.mark.both_backends
def test_user_owner_overrides_domain_default(run, accounts_config):
    run("node", "add", "b", "--host", "10.0.0.2", "--pop3-port", "2110")
    run("node", "add", "c", "--host", "10.0.0.3")
    assert owner(accounts_config, "alice@example.com") is None  # no owner: served anywhere
    assert "node" not in run("user", "list")                   # the listing as before
    run("domain", "set", "example.com", "--node", "b")
    assert owner(accounts_config, "alice@example.com") == Node("b", "10.0.0.2", 143, 2110, 25)
    run("user", "set", "bob@example.com", "--node", "c")
    assert owner(accounts_config, "bob@example.com").name == "c"
    assert [line.split()[-1] for line in run("user", "list").splitlines()] == ["b", "c"]
    assert "c (its own)" in run("user", "show", "bob@example.com")
    assert "b (its domain's)" in run("user", "show", "alice@example.com")
    with pytest.raises(UsageError, match="still owns 1 domain"):
        run("node", "remove", "b")
    run("user", "set", "bob@example.com", "--node", "")         # back to the domain's
    assert owner(accounts_config, "bob@example.com").name == "b"
    run("domain", "set", "example.com", "--node", "")
    assert "none" in run("user", "show", "alice@example.com")
    assert owner(accounts_config, "alice@example.com") is None
    run("node", "remove", "b")


def test_schema_7_database_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite3"
    Accounts(path, create=True).close()
    with sqlite3.connect(path) as raw:  # back to version 7: as an older mailforge made it
        raw.executescript("DROP TABLE nodes; ALTER TABLE domains DROP COLUMN node; "
                          "ALTER TABLE mailboxes DROP COLUMN node; PRAGMA user_version = 7;")
    with Accounts(path) as accounts:
        assert accounts.database.fetchone("PRAGMA user_version")[0] == 8
        assert accounts_schema.SCHEMA_VERSION == 8
        accounts.nodes.node_add(Node("b", "10.0.0.2"))
        assert accounts.nodes.nodes() == [Node("b", "10.0.0.2")]
