"""A throw-away PostgreSQL cluster for tests: `initdb` in a temp dir, `postgres` on 127.0.0.1
at a free high port, stopped by its pid (and started again, for outage tests).

initdb and postgres refuse to run as root, and CI runs as root: then both run as `nobody`
(setpriv, which execs in place, so the pid we hold is the postmaster's), in a directory of
their own under /tmp (pytest's tmp dirs sit under a root-only 0700 parent). The superuser
logs in over TCP with a password (scram-sha-256), which is how mailforge's password_file gets
tested.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from tests.ports import free_port

SUPERUSER = "mailforge"
PASSWORD = "pg-test-password"
BINARY_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/local/bin")
UNPRIVILEGED = "nobody"
START_TIMEOUT = 30.0


def bindir() -> Path | None:
    """Where initdb and postgres are: pg_config's answer, else the usual places."""
    candidates = []
    if shutil.which("pg_config"):
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(result.stdout.strip())
    for directory in (*candidates, *BINARY_DIRS):
        if directory and all((Path(directory) / name).exists() for name in ("initdb", "postgres")):
            return Path(directory)
    return None


class Cluster:
    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.root = Path(tempfile.mkdtemp(prefix="mailforge-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password_file = self.root / "superuser.password"
        self.password_file.write_text(PASSWORD + "\n")
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam(UNPRIVILEGED)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            os.chown(self.password_file, entry.pw_uid, entry.pw_gid)
            self._as_user = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                             "--clear-groups"]
        self.proc: subprocess.Popen | None = None
        subprocess.run([*self._as_user, str(binaries / "initdb"), "-D", str(self.data),
                        "-U", SUPERUSER, f"--pwfile={self.password_file}", "--no-locale",
                        "-E", "UTF8", "--auth-host=scram-sha-256", "--auth-local=trust"],
                       check=True, capture_output=True, timeout=120)

    def dsn(self, dbname: str = "postgres") -> str:
        """Without the password: mailforge reads it from password_file."""
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={SUPERUSER}"

    def start(self) -> None:
        # fsync off: a test cluster's durability is not the test's subject, its speed is.
        self.proc = subprocess.Popen(
            [*self._as_user, str(self.binaries / "postgres"), "-D", str(self.data),
             "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={self.root}", "-c", "fsync=off"],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "postgres.log", "ab"))
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.dsn(), password=PASSWORD, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None:
                    raise AssertionError(f"postgres exited: {self.log()[-2000:]}") from None
                time.sleep(0.1)
        raise AssertionError(f"postgres did not start: {self.log()[-2000:]}")

    def stop(self) -> None:
        """A fast shutdown (SIGINT): sessions are cut, as when a database server goes down."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def create_database(self, name: str) -> str:
        """A new empty database; its dsn."""
        with psycopg.connect(self.dsn(), password=PASSWORD, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def log(self) -> str:
        return (self.root / "postgres.log").read_text(errors="replace")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> Cluster:
    """A started cluster, or the test skipped where PostgreSQL is not installed."""
    binaries = bindir()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (Debian: postgresql, see the Makefile's TEST_DEBS)")
    cluster = Cluster(binaries)
    try:
        cluster.start()
    except BaseException:
        cluster.remove()
        raise
    return cluster
