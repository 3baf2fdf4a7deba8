"""Hostile command lines over real sockets, for every service: afterwards no worker died (the
pids are the same), none logged a failed session, a real client still gets served, and
each worker's memory grew by less than a bound."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest

from .conftest import COUNT, SEED
from .generators import LineFuzzer, recorded_sessions
from .services import SERVICES, ServiceFuzz, tls_context

# A worker's resident memory may grow this much over a run (caches, allocator arenas); a
# leak per session or an unbounded buffer grows far past it over thousands of sessions.
RSS_GROWTH_LIMIT = 64 * 1024 * 1024
# Fuzz sessions come from these loopback addresses in turn, so per-IP caps and counters
# see many clients, as they would on the internet.
SOURCES = [f"127.0.1.{i}" for i in range(1, 251)]
READ_TIMEOUT = 5.0


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def play(spec: ServiceFuzz, port: int, context: ssl.SSLContext, lines: list[bytes], source: str) -> None:
    """One connection: send every line, say we are done, read until the server closes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT, source_address=(source, 0))
    try:
        payload = b"".join(lines)
        sock.sendall(_over_tls(sock, context, payload) if spec.implicit_tls else payload)
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + READ_TIMEOUT
        while time.monotonic() < deadline and sock.recv(65536):
            pass
    except (OSError, ssl.SSLError):
        pass  # closed on us mid-way: the server is allowed to hang up on garbage
    finally:
        sock.close()


def _over_tls(sock: socket.socket, context: ssl.SSLContext, payload: bytes) -> bytes:
    """Handshake on `sock`, then the payload and a close_notify as TLS records to send.
    A memory BIO because ssl.SSLSocket cannot send close_notify without waiting for the
    server's, and a plain close could reset the connection before the server read it all."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed during the TLS handshake")
            incoming.write(data)
    view = memoryview(payload)
    while view:
        view = view[tls.write(view):]
    try:
        tls.unwrap()
    except ssl.SSLWantReadError:
        pass  # the server's close_notify is not awaited
    return outgoing.read()


@pytest.mark.parametrize("name", list(SERVICES))
def test_service_survives_hostile_input(fuzz_server, name):
    spec = SERVICES[name]
    seed = SEED + list(SERVICES).index(name)
    workers = sorted(fuzz_server.worker_pids(name))
    before = {pid: rss(pid) for pid in workers}
    fuzzer = LineFuzzer(seed, spec.verbs, recorded_sessions(spec.recording))
    port, context = spec.port(fuzz_server), tls_context(fuzz_server)
    for number, session in enumerate(fuzzer.sessions(COUNT)):
        play(spec, port, context, session, SOURCES[number % len(SOURCES)])

    assert sorted(fuzz_server.worker_pids(name)) == workers, f"a {name} worker died (seed {seed})"
    log = fuzz_server.log()
    assert "Traceback" not in log, f"seed {seed}: {log[log.index('Traceback') - 300:][:3000]}"
    spec.normal_session(fuzz_server)
    for pid in workers:
        grown = rss(pid) - before[pid]
        assert grown < RSS_GROWTH_LIMIT, f"{name} worker {pid} grew {grown >> 20} MiB (seed {seed})"
