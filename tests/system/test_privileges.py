"""Least privilege: `init --system` makes the service account and owns the data dir for it;
`serve` as root binds privileged ports, then every child runs as that account with no
supplementary groups, no capabilities, no way back to root; protocol and delivery workers run
no program and write nowhere but the data dir (delivery still relays out to any port). `check-config` names permission mistakes."""

from __future__ import annotations

import errno
import json
import os
import poplib
import pwd
import secrets
import shutil
import smtplib
import socket
import ssl
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from mailforge import config as configuration
from mailforge.process import privileges, sandbox

from tests.smtp_sinks import Behaviour, Sink

from .conftest import MAILFORGE, PASSWORD, USER, Server, cli

LATER = "carol@example.test"
OUTBOUND = "ok@remote.test"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates users, binds ports < 1024")


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def free_privileged_ports(count: int) -> list[int]:
    """The well-known ports if free (25, 110...), else others below 1024."""
    found: list[int] = []
    for port in (25, 110, 587, 995, *range(600, 1024)):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    pytest.skip("no free ports below 1024")


@pytest.fixture
def account():
    """A unique service account and store group, removed afterwards."""
    name = f"mft{secrets.token_hex(4)}"
    user, group = name, f"{name}-store"
    yield user, group
    subprocess.run(["userdel", user], capture_output=True, timeout=60)
    subprocess.run(["groupdel", group], capture_output=True, timeout=60)


@pytest.fixture
def open_root():
    """A directory every account may traverse (pytest's own tmp dirs are root-only 0700)."""
    path = Path(tempfile.mkdtemp(prefix="mailforge-priv-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def in_worker_jail(data_dir: Path, user: str, group: str) -> dict[str, int]:
    """Run the probes in a child that takes the same steps as a protocol worker
    (privileges.drop, then sandbox.confine); errno of each probe, 0 for success."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            privileges.drop(user, group)
            sandbox.confine(data_dir)
            os.write(write_end, json.dumps(_probes(data_dir)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(answer)


def _probes(data_dir: Path) -> dict[str, int]:
    def attempt(action) -> int:
        try:
            action()
        except OSError as exc:
            return exc.errno
        return 0

    def write(path: Path) -> None:
        with open(path, "w") as fh:
            fh.write("x")
        path.unlink()

    return {
        "exec_sh": attempt(lambda: os.execv("/bin/sh", ["sh", "-c", "exit 0"])),
        "write_tmp": attempt(lambda: write(Path("/tmp") / f"mailforge-escape-{os.getpid()}")),
        "write_beside_data": attempt(lambda: write(data_dir.parent / "escape")),
        "write_store": attempt(lambda: write(data_dir / "store" / "probe")),
        "setuid_root": attempt(lambda: os.setuid(0)),
    }


@root_only
def test_init_system_creates_the_account_and_owns_a_new_data_dir(account, open_root):
    user, group = account
    data = open_root / "var"
    result = subprocess.run([*MAILFORGE, "init", "--system", "--dir", str(data), "--user", user,
                             "--group", group, "--hostname", "mx.example.test"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    entry = pwd.getpwnam(user)
    uid, gid = entry.pw_uid, entry.pw_gid
    assert os.getgrouplist(user, gid) == [gid]
    assert entry.pw_shell.endswith(("nologin", "false"))
    config = configuration.load(data / "mailforge.toml")
    assert (config.server.user, config.server.group) == (user, group)
    assert config.smtp.listen == ["*:25"] and config.pop3s.listen == ["*:995"]
    expect = {data: (0, 0o1770), data / "mailforge.toml": (0, 0o640),
              data / "tls" / "key.pem": (0, 0o640), data / "tls" / "cert.pem": (0, 0o644),
              data / "store": (uid, 0o2770), data / "queue": (uid, 0o2770),
              data / "log": (uid, 0o2770), data / "accounts.sqlite3": (uid, 0o660),
              data / "backup": (0, 0o700)}
    for path, (owner, mode) in expect.items():
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (owner, gid, mode), path
    checked = cli(data / "mailforge.toml", "check-config", check=False)
    assert checked.returncode == 0, checked.stderr
    assert "permission problem" not in checked.stderr


@root_only
def test_serve_as_root_drops_every_child_to_the_service_account(account, open_root):
    user, group = account
    smtp_port, pop3_port = free_privileged_ports(2)
    sink = Sink(Behaviour())  # a remote MTA on a high port: the sandbox must let delivery reach it
    server = Server(open_root, pop3_services=True,
                    relay={"mode": "networks", "networks": ["127.0.0.0/8"]},
                    delivery={"mx_override": {"remote.test": sink.address}},
                    log={"level": "debug"})  # each process's sandbox line is a debug one
    try:
        cli(server.conf, "init", "--system", "--dir", str(server.dir), "--user", user, "--group", group)
        # A mailbox root adds afterwards is handed to the service account too.
        cli(server.conf, "user", "add", LATER, "--password-stdin", input=PASSWORD + "\n")
        server.reconfigure({"smtp": {"listen": [f"127.0.0.1:{smtp_port}"]},
                            "pop3": {"listen": [f"127.0.0.1:{pop3_port}"]}})
        server.port, server.pop3_port = smtp_port, pop3_port
        server.start()
        uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
        status = server.status()
        workers = [w["pid"] for name in ("smtp", "pop3") for w in status["services"][name]["workers"]]
        others = [w["pid"] for w in status["delivery"]] + [status["ratekeeper"]["pid"]]
        assert len(workers) == 3 and len(others) == 2
        for pid in workers + others:
            fields = proc_status(pid)
            assert fields["Uid"].split() == [str(uid)] * 4, (pid, fields["Uid"])
            assert fields["Gid"].split() == [str(gid)] * 4, (pid, fields["Gid"])
            assert fields["Groups"] == "", (pid, fields["Groups"])
            assert fields["CapEff"] == fields["CapPrm"] == "0000000000000000", pid
        delivery = [w["pid"] for w in status["delivery"]]
        for pid in workers + others:
            fields = proc_status(pid)
            assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("1", "2"), pid
        assert "sandbox" in status and "seccomp: no exec" in status["sandbox"]
        # The real workers took the steps the jail below repeats, and said so.
        assert server.log().count("worker sandbox: seccomp: no exec; landlock") >= 3 + len(delivery)
        assert "delivery worker sandbox: seccomp: no exec; landlock" in server.log()
        assert "rate-keeper sandbox: seccomp: no exec; landlock" in server.log()

        _mail_flows_under_the_service_account(server, sink, uid, gid)
        probes = in_worker_jail(server.config.data_dir, user, group)
        assert probes == {"exec_sh": errno.EPERM, "write_tmp": errno.EACCES,
                          "write_beside_data": errno.EACCES, "write_store": 0,
                          "setuid_root": errno.EPERM}
    finally:
        server.stop()
        sink.stop()


def _mail_flows_under_the_service_account(server: Server, sink: Sink, uid: int, gid: int) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.sendmail("bob@remote.test", [USER, LATER], b"Subject: low port\r\n\r\nhello\r\n")
        client.sendmail(USER, [OUTBOUND], b"Subject: relayed\r\n\r\nout\r\n")
    for address in (USER, LATER):
        (delivered,) = server.wait_delivered(1, address)
        info = delivered.stat()
        assert (info.st_uid, info.st_gid) == (uid, gid)
        assert stat.S_IMODE(info.st_mode) & 0o007 == 0  # the service umask: nothing for others
    deadline = time.monotonic() + 30
    while not any(OUTBOUND in m.recipients for m in sink.received):
        assert time.monotonic() < deadline, "the sandboxed delivery worker relayed nothing"
        time.sleep(0.1)
    pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=10)
    try:
        # STLS: the worker loaded the key that only root and the store group may read.
        context = ssl.create_default_context(cafile=server.ca_file)
        context.check_hostname = False  # poplib names 127.0.0.1; the certificate names the host
        pop.stls(context)
        pop.user(USER)
        pop.pass_(PASSWORD)
        assert pop.stat()[0] == 1
    finally:
        pop.quit()


def test_check_config_reports_permission_mistakes(make_server):
    server = make_server()
    data = server.config.data_dir
    assert cli(server.conf, "check-config").returncode == 0
    (data / "tls" / "key.pem").chmod(0o644)
    (data / "store").chmod(0o777)
    result = cli(server.conf, "check-config", check=False)
    assert result.returncode == 2
    assert f"{data / 'tls' / 'key.pem'} is readable by others" in result.stderr
    assert f"{data / 'store'} is writable by others" in result.stderr
    (data / "tls" / "key.pem").chmod(0o600)
    (data / "store").chmod(0o750)
    assert cli(server.conf, "check-config").returncode == 0


@root_only
def test_check_config_reports_what_the_service_account_cannot_reach(account, make_server):
    user, group = account
    server = make_server()
    privileges.ensure_account(user, group, server.dir)
    server.reconfigure({"server": {"user": user, "group": group}})
    result = cli(server.conf, "check-config", check=False)
    assert result.returncode == 2
    assert f"[server] user {user} cannot write {server.config.store_dir}" in result.stderr
    assert "init --system" in result.stderr
