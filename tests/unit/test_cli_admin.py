"""`mailforge admin add|list|remove|token` as a person types it: real processes, one line and
exit status 2 for a mistake, a generated password shown once (what `make run` does first)."""

from __future__ import annotations

import subprocess
import sys

import pytest

MAILFORGE = [sys.executable, "-m", "mailforge"]


@pytest.fixture
def conf(tmp_path):
    subprocess.run([*MAILFORGE, "init", "--dir", str(tmp_path / "var")], check=True,
                   capture_output=True, timeout=60)
    return str(tmp_path / "var" / "mailforge.toml")


def mailforge(conf: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*MAILFORGE, "-c", conf, *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def test_add_list_token_remove(conf):
    assert mailforge(conf, "domain", "add", "one.test").returncode == 0
    made = mailforge(conf, "admin", "add", "admin", "--generate")
    assert made.returncode == 0 and "its password (shown this once): " in made.stdout
    host = mailforge(conf, "admin", "add", "host", "--password-stdin", "--role", "domain",
                     "--domain", "one.test", stdin="pw\n")
    assert host.stdout == "added administrator host (domain)\n"
    listing = mailforge(conf, "admin", "list").stdout.splitlines()
    assert [line.split()[:3] for line in listing] == [["admin", "system", "-"], ["host", "domain", "one.test"]]
    assert mailforge(conf, "admin", "token", "host").stdout.startswith("mft_")
    assert mailforge(conf, "admin", "remove", "host").returncode == 0
    assert [line.split()[0] for line in mailforge(conf, "admin", "list").stdout.splitlines()] == ["admin"]


@pytest.mark.parametrize("args, stdin, message", [
    (("add", "x", "--password-stdin", "--role", "domain"), "pw\n", "needs --domain"),
    (("add", "x", "--password-stdin", "--role", "domain", "--domain", "no.test"), "pw\n", "not hosted here"),
    (("add", "a b", "--password-stdin"), "pw\n", "bad administrator name"),
    (("add", "x", "--password-stdin"), "\n", "empty password refused"),
    (("add", "x", "--password-stdin"), "nul\0inside\n", "must not contain NUL, CR or LF"),
    (("passwd", "x", "--password-stdin"), "windows\r\n", "must not contain NUL, CR or LF"),
    (("remove", "ghost"), "", "no such administrator: ghost"),
    (("token", "ghost"), "", "no such administrator: ghost"),
])
def test_mistakes_are_one_line_and_exit_2(conf, args, stdin, message):
    result = mailforge(conf, "admin", *args, stdin=stdin)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr
