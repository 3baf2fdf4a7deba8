"""A throw-away Valkey/Redis for tests: Debian's server on 127.0.0.1 at a port of our own, in a
temp dir, nothing saved to disk, stopped by its pid (and started again on the same port when a
test wants the server back)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.ports import free_port

SERVER_PROGRAMS = ("valkey-server", "redis-server")


class RedisServer:
    def __init__(self, directory: Path) -> None:
        program = next((p for p in map(shutil.which, SERVER_PROGRAMS) if p), None)
        if program is None:
            pytest.skip("needs valkey-server or redis-server (make test-debs)")
        self.program, self.dir, self.port = program, directory, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.program, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{self.program} did not start: {(self.dir / 'redis.log').read_text()}")

    def stop(self) -> None:
        if self.proc is not None:
            proc, self.proc = self.proc, None
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
