"""The console behind the reverse proxy that `[admin] allow_plain_http` is for: Debian's HAProxy
on loopback does TLS with the server's certificate and hands requests on over plain HTTP with
X-Forwarded-For. The brute-force defence then counts and blocks each client by the address
the proxy names, not the proxy's loopback address (exempt as the operator's own browser), so
an attacker is blocked and an administrator from elsewhere still logs in; the audit trail
names the client too. Stopped by its pid."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.ports import free_port

from .conftest import cli
from .console_client import ConsoleClient

BOSS = ("boss", "boss secret")
BLOCK_AFTER = 3
ATTACKER, COLLEAGUE = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def proxied_console(make_server, tmp_path):
    """A console on plain HTTP, loopback only, and HAProxy in front of it with TLS: the port
    clients reach."""
    program = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(program).exists():
        pytest.skip("needs haproxy (make test-debs)")
    server = make_server(admin_console=True, admin={"allow_plain_http": True},
                         abuse={"exempt_networks": ["127.0.0.1/32"],
                                "block_after": BLOCK_AFTER, "tarpit_after": 100})
    cli(server.conf, "admin", "add", BOSS[0], "--password-stdin", input=BOSS[1] + "\n")
    server.start()
    data = server.config.data_dir
    pem = tmp_path / "console.pem"  # HAProxy takes the certificate and its key in one file
    pem.write_bytes((data / server.config.tls.cert).read_bytes()
                    + (data / server.config.tls.key).read_bytes())
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text("\n".join([
        "global", "    noreuseport", "",
        "defaults", "    mode http", "    timeout connect 5s", "    timeout client 30s",
        "    timeout server 30s", "",
        "frontend console", f"    bind 127.0.0.1:{port} ssl crt {pem}", "    option forwardfor",
        "    default_backend mailforge", "",
        "backend mailforge", f"    server console 127.0.0.1:{server.admin_port}", ""]))
    log = tmp_path / "haproxy.log"
    with log.open("ab") as output:
        proxy = subprocess.Popen([program, "-db", "-f", str(config)], stdout=output,
                                 stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if ConsoleClient(port, server.ca_file).get("/login").status == 200:
                    break
            except OSError:
                pass  # HAProxy is not listening yet
            if proxy.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"HAProxy did not serve the console: {log.read_text()}")
            time.sleep(0.1)
        yield server, port
    finally:
        proxy.terminate()
        try:
            proxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(timeout=10)


def test_behind_a_proxy_each_client_is_counted_and_blocked_by_its_own_address(proxied_console):
    server, port = proxied_console
    attacker = ConsoleClient(port, server.ca_file, ATTACKER)
    answers = [attacker.login(BOSS[0], f"guess {n}").status for n in range(BLOCK_AFTER)]
    assert answers == [401] * (BLOCK_AFTER - 1) + [403]
    assert attacker.login(*BOSS).status == 403  # blocked: the right password does not help
    blocks = json.loads(cli(server.conf, "abuse", "list", "--json").stdout)
    assert [(b["address"], b["services"]) for b in blocks] == [(ATTACKER, ["admin"])]
    # The proxy's own address is not blocked: an administrator elsewhere still logs in.
    colleague = ConsoleClient(port, server.ca_file, COLLEAGUE)
    assert colleague.login(*BOSS).status == 303
    assert COLLEAGUE in colleague.get("/audit").text  # the login's entry names the client
