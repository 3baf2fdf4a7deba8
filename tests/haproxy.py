"""Debian's HAProxy on loopback in front of mailforge nodes, as README "Scaling out" sets it
up: one frontend per service, round-robin, `send-proxy-v2` to each node, and each node checked
with `option httpchk GET /health` on its metrics listener. Stopped by its pid."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.ports import free_port

# Checks every 200 ms, a node in or out after one: the test waits little for the checks.
CHECK = "check port {metrics} inter 200ms rise 1 fall 1"


def configuration(services: dict[str, int], nodes: list[dict[str, int]], stats: Path,
                  check: str = CHECK) -> str:
    """`services`: service name → frontend port; `nodes`: each node's port per service and
    its "metrics" port; `check`: each server's check options ({metrics}: its metrics port)."""
    # noreuseport: a port another test's HAProxy took at the same moment is an error at
    # start, not a listener that silently shares its connections with that one.
    lines = ["global", f"    stats socket {stats} mode 600 level admin", "    noreuseport", "",
             "defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 60s",
             "    timeout server 60s", ""]
    for service, port in services.items():
        lines += [f"frontend {service}", f"    bind 127.0.0.1:{port}",
                  f"    default_backend {service}_nodes", "",
                  f"backend {service}_nodes", "    balance roundrobin",
                  "    option httpchk GET /health"]
        for number, node in enumerate(nodes, 1):
            lines.append(f"    server node{number} 127.0.0.1:{node[service]} send-proxy-v2 "
                         + check.format(metrics=node["metrics"]))
        lines.append("")
    return "\n".join(lines)


class HAProxy:
    def __init__(self, directory: Path, services: list[str], nodes: list[dict[str, int]],
                 check: str = CHECK) -> None:
        program = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
        if program is None:
            pytest.skip("needs haproxy (make test-debs)")
        directory.mkdir(parents=True, exist_ok=True)
        self.ports = {service: free_port() for service in services}
        self.stats = directory / "stats.sock"
        self.config = directory / "haproxy.cfg"
        self.config.write_text(configuration(self.ports, nodes, self.stats, check))
        self.log = directory / "haproxy.log"
        # -db: in the foreground, so the pid we hold is HAProxy's own.
        self.proc = subprocess.Popen([program, "-db", "-f", str(self.config)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

    def servers_up(self) -> int:
        """How many (backend, server) pairs HAProxy's checks have found up."""
        if self.proc.poll() is not None:
            raise AssertionError(f"haproxy exited: {self.log.read_text()}")
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(self.stats))
                sock.sendall(b"show servers state\n")
                text = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
        except OSError:
            return 0
        # Columns: be_id be_name srv_id srv_name srv_addr srv_op_state (2 = running) ...
        rows = [line.split() for line in text.splitlines()[2:] if line.strip()]
        return sum(1 for row in rows if len(row) > 5 and row[5] == "2")

    def wait_all_up(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.servers_up() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy: {self.servers_up()} of {count} servers up")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
