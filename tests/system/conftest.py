"""A real `mailforge serve` on loopback for system tests, stopped by its pid afterwards."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailforge import config as configuration
from mailforge.store.maildir import mailbox_path
from tests.ports import free_port
from tests.system.dns_server import DnsServer, SilentNameserver
from tests.system.fullfs import small_disk_factory  # noqa: F401  (a fixture for the tests)

MAILFORGE = [sys.executable, "-m", "mailforge"]
DOMAIN = "example.test"
USER = f"alice@{DOMAIN}"
PASSWORD = "correct horse"


def cli(conf: Path, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(MAILFORGE + ["-c", str(conf), *args], input=input, text=True,
                            capture_output=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"mailforge {' '.join(args)} failed: {result.stderr}")
    return result


def add_alice(conf: Path) -> None:
    cli(conf, "domain", "add", DOMAIN)
    cli(conf, "user", "add", USER, "--password-stdin", input=PASSWORD + "\n")


# Data dirs as `init` leaves them, with example.test and alice added (True) or not (False):
# made once per test process and copied for each Server, because the three CLI runs cost about
# two seconds and a copy a few milliseconds.
_templates: dict[bool, Path] = {}


def _initialised(accounts: bool) -> Path:
    if accounts not in _templates:
        template = Path(tempfile.mkdtemp(prefix="mailforge-test-template-")) / "var"
        subprocess.run(MAILFORGE + ["init", "--dir", str(template), "--hostname", "mx.example.test"],
                       check=True, capture_output=True, timeout=60)
        if accounts:
            add_alice(template / "mailforge.toml")
        _templates[accounts] = template
    return _templates[accounts]


@pytest.fixture(scope="session", autouse=True)
def _remove_templates():
    yield
    for template in _templates.values():
        shutil.rmtree(template.parent, ignore_errors=True)


class Server:
    """One mailforge instance: its data dir, config, and supervisor process."""

    def __init__(self, root: Path, tls_services: bool = False, pop3_services: bool = False,
                 imap_services: bool = False, accounts: bool = True, admin_console: bool = False,
                 **overrides: dict) -> None:
        self.dir = root / "var"
        # Accounts in the database the test configures are added after the overrides below.
        accounts_from_template = accounts and "accounts" not in overrides
        shutil.copytree(_initialised(accounts_from_template), self.dir, symlinks=True)
        self.conf = self.dir / "mailforge.toml"
        self.port, self.submission_port, self.smtps_port = free_port(), free_port(), free_port()
        self.pop3_port, self.pop3s_port = free_port(), free_port()
        self.imap_port, self.imaps_port = free_port(), free_port()
        self.admin_port = free_port()
        # Submission, SMTPS, POP3(S) and IMAP(S) only where a test asks: every worker costs
        # start-up time.
        optional = [("submission", self.submission_port, tls_services),
                    ("smtps", self.smtps_port, tls_services),
                    ("pop3", self.pop3_port, pop3_services), ("pop3s", self.pop3s_port, pop3_services),
                    ("imap", self.imap_port, imap_services), ("imaps", self.imaps_port, imap_services),
                    ("admin", self.admin_port, admin_console)]
        listen = {name: {"listen": [f"127.0.0.1:{port}"] if wanted else [], "workers": 1}
                      for name, port, wanted in optional}
        base = {**listen,
                "smtp": {"listen": [f"127.0.0.1:{self.port}"], "workers": 2, "idle_timeout": 30},
                "server": {"grace_period": 5, "worker_timeout": 10},
                "delivery": {"workers": 1},
                "metrics": {"listen": ""},
                # SPF/DKIM/DMARC would ask the machine's resolver about every test sender:
                # the mail-authentication tests turn them on with a DNS server of their own.
                "authentication": {"inbound_checks": False}}
        for section, values in overrides.items():
            base.setdefault(section, {}).update(values)
        self.reconfigure(base)
        if accounts and not accounts_from_template:  # else the test makes its own
            add_alice(self.conf)
        self.proc: subprocess.Popen | None = None
        self.output: list[str] = []

    def copy(self, root: Path) -> Server:
        """A server, not started, on a copy of this stopped one's data dir under `root`: the
        same config and ports. For a module whose tests each change what a costly set-up (many
        CLI runs) made, one test at a time."""
        assert self.proc is None, "copy a stopped server"
        server = copy.copy(self)
        server.dir = root / "var"
        shutil.copytree(self.dir, server.dir, symlinks=True)
        server.conf = server.dir / "mailforge.toml"
        server.config = configuration.load(server.conf)
        server.output = []
        return server

    @contextlib.contextmanager
    def running_copy(self, root: Path) -> Iterator[Server]:
        """copy(root), started, and stopped when done: a test's own server on the data dir a
        module's costly set-up made once."""
        server = self.copy(root)
        server.start()
        try:
            yield server
        finally:
            server.stop()

    @classmethod
    def existing(cls, data_dir: Path) -> Server:
        """A server on a data dir made some other way (`backup restore`), on its config's ports."""
        server = cls.__new__(cls)
        server.dir, server.conf = data_dir, data_dir / "mailforge.toml"
        server.config = configuration.load(server.conf)
        for name, attribute in (("smtp", "port"), ("submission", "submission_port"),
                                ("smtps", "smtps_port"), ("pop3", "pop3_port"), ("pop3s", "pop3s_port")):
            listen = getattr(server.config, name).listen
            setattr(server, attribute, configuration.parse_hostport(listen[0])[1] if listen else 0)
        server.proc, server.output = None, []
        return server

    def reconfigure(self, changes: dict) -> None:
        config = configuration.load(self.conf)
        for section, values in changes.items():
            setattr(config, section, dataclasses.replace(getattr(config, section), **values))
        self.conf.write_text(configuration.render_toml(config))
        self.config = configuration.load(self.conf)

    def start(self, timeout: float = 20) -> None:
        self.proc = subprocess.Popen(MAILFORGE + ["-c", str(self.conf), "serve"],
                                     stdout=subprocess.PIPE, stderr=open(self.dir / "log" / "serve.log", "ab"),
                                     text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"mailforge serve exited: {self.log()}")
            self.output.append(line)
            if "ready" in line:
                self.wait_for_port()
                return
        raise AssertionError("mailforge serve did not become ready")

    def wait_for_port(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                    if self.config.smtp.proxy_protocol:
                        sock.sendall(b"PROXY UNKNOWN\r\n")  # a load balancer's health check
                    if sock.recv(100).startswith(b"220"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("SMTP port never greeted")

    @property
    def ca_file(self) -> str:
        """The self-signed certificate `init` made: what a client trusts to check the server."""
        return str(self.config.data_dir / self.config.tls.cert)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def children(self) -> list[int]:
        """Pids of the supervisor's child processes (workers, delivery, rate-keeper)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except FileNotFoundError:
            return []
        return [int(p) for p in text.split()]

    def worker_pids(self, service: str = "smtp") -> list[int]:
        status = self.status()
        return [w["pid"] for w in status["services"][service]["workers"]]

    def status(self) -> dict:
        import json
        return json.loads(cli(self.conf, "status", "--json").stdout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        try:
            proc.send_signal(sig)
            return proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            return None
        finally:
            _kill_group(proc.pid)
            proc.stdout.close()

    def kill_tree(self) -> None:
        """kill -9 of the supervisor and every process of its group at once."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        _kill_group(proc.pid)
        proc.wait(timeout=10)
        proc.stdout.close()

    def log(self) -> str:
        return (self.dir / "log" / "serve.log").read_text(errors="replace")

    def maildir(self, address: str = USER) -> Path:
        return mailbox_path(self.config.store_dir, address)

    def delivered(self, address: str = USER) -> list[Path]:
        new = self.maildir(address) / "new"
        return sorted(new.iterdir()) if new.is_dir() else []

    def wait_delivered(self, count: int, address: str = USER, timeout: float = 60) -> list[Path]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            files = self.delivered(address)
            if len(files) >= count:
                return files
            time.sleep(0.05)
        raise AssertionError(f"{len(self.delivered(address))} of {count} messages delivered; "
                             f"server log ends:\n{self.log()[-4000:]}")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _server_factory(directory: Callable[[int], Path]) -> tuple[Callable[..., Server], list[Server]]:
    """make_server's factory, its servers' data dirs from `directory(n)`; and the servers it
    made, for the fixture to stop."""
    servers: list[Server] = []

    def factory(tls_services: bool = False, pop3_services: bool = False,
                imap_services: bool = False, root: Path | None = None, accounts: bool = True,
                admin_console: bool = False, **overrides) -> Server:
        """`root`: where the data dir goes (a file system of the test's own); else tmp_path.
        `accounts`: add example.test and alice (else the data dir has no account yet).
        `admin_console`: serve the web console too, on `admin_port`."""
        server = Server(root or directory(len(servers)), tls_services, pop3_services,
                        imap_services, accounts, admin_console, **overrides)
        servers.append(server)
        return server

    return factory, servers


@pytest.fixture
def make_server(tmp_path):
    factory, servers = _server_factory(lambda number: tmp_path / f"s{number}")
    yield factory
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def make_module_server(tmp_path_factory):
    """make_server for a server that a module's tests share: a server start costs a second or
    two, and parametrised cases that change nothing it serves need only one."""
    factory, servers = _server_factory(lambda number: tmp_path_factory.mktemp(f"module-s{number}"))
    yield factory
    for server in servers:
        server.stop()


# IMAP beside SMTP and LOGIN allowed without TLS (as imaptest and the Dovecot anchor use it).
IMAP_SERVER = {"imap_services": True, "server": {"allow_plaintext_auth": True}}


@pytest.fixture
def imap_server(make_server) -> Server:
    """A started server with IMAP_SERVER's settings."""
    instance = make_server(**IMAP_SERVER)
    instance.start()
    return instance


@pytest.fixture(scope="module")
def shared_imap_server(make_module_server) -> Server:
    """imap_server for a module's tests that change nothing another of them reads."""
    instance = make_module_server(**IMAP_SERVER)
    instance.start()
    return instance


@pytest.fixture
def server(make_server) -> Server:
    instance = make_server()
    instance.start()
    return instance


@pytest.fixture(scope="module")
def shared_server(make_module_server) -> Server:
    """server for a module's tests that change nothing another of them reads."""
    instance = make_module_server()
    instance.start()
    return instance


@pytest.fixture
def dns_server(tmp_path) -> DnsServer:
    """Knot DNS on loopback serving the zones the test gives it (dns_server.py)."""
    instance = DnsServer(tmp_path / "dns")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def silent_nameserver() -> SilentNameserver:
    """A nameserver address where nothing ever answers: every lookup times out."""
    instance = SilentNameserver()
    yield instance
    instance.close()
