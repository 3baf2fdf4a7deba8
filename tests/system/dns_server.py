"""A real authoritative DNS server for tests: Knot DNS on 127.0.0.1, serving the zones a test
writes, started in a tmp dir (no root-owned paths) and stopped by its pid.

    dns = dns_server                       # the fixture (conftest.py)
    dns.zone("example.test", [
        txt("@", "v=spf1 ip4:127.0.0.1 -all"),
        txt("_dmarc", "v=DMARC1; p=reject"),
        "mx A 127.0.0.1",
    ])
    make_server(dns={"nameservers": [dns.nameserver]})

Records are zone-file lines relative to the zone's name (the SOA and NS are added). A zone
written again (or a new one) is reloaded at once: zone() returns when Knot serves the new serial.
Knot answers REFUSED for a zone it does not serve, which a resolver takes as a server failure.
A zone given with signed=True is DNSSEC-signed by Knot itself (`dnssec-signing: on`: Knot
makes and keeps its keys under the storage dir, ECDSA P-256); trust_anchor(name) gives its
key-signing key as a DNSKEY line, what [dns] trust_anchor reads (the zone as its own anchor).
Signed zones deny with NSEC; with nsec3=True, with NSEC3 (RFC 5155, Knot's `nsec3: on` policy).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.resolver

from tests.ports import free_port

KNOTD, KNOTC = "knotd", "knotc"
# RFC 1035 3.3.14: one character-string holds at most 255 octets; longer TXT data (a
# 2048-bit DKIM key) is several strings in one record.
TXT_CHUNK = 255
# The negative-caching TTL of every test zone (SOA minimum): short, so a test that changes a
# zone is not answered from an earlier negative answer for long.
NEGATIVE_TTL = 5
START_TIMEOUT = 10.0


def txt(owner: str, text: str, ttl: int = 300) -> str:
    """A TXT record line, split into 255-octet strings where it is longer."""
    chunks = [text[i:i + TXT_CHUNK] for i in range(0, len(text), TXT_CHUNK)] or [""]
    quoted = " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)
    return f"{owner} {ttl} TXT {quoted}"


class SilentNameserver:
    """A UDP port that takes queries and never answers: what a dead resolver looks like."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


class DnsServer:
    def __init__(self, root: Path) -> None:
        self.dir = root
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.zones: dict[str, int] = {}  # zone name → serial
        self.signed: dict[str, bool] = {}  # zone name → denial by NSEC3 (else NSEC)
        self.proc: subprocess.Popen | None = None

    @property
    def nameserver(self) -> str:
        """What [dns] nameservers takes."""
        return f"127.0.0.1:{self.port}"

    def zone(self, name: str, records: list[str], signed: bool = False, nsec3: bool = False) -> None:
        name = name.rstrip(".").lower()
        # Knot raises a signed zone's serial past the file's when it signs: leave it room.
        serial = self.zones.get(name, 0) + (100 if signed else 1)
        self.zones[name] = serial
        if signed:
            self.signed[name] = nsec3
        head = [f"$ORIGIN {name}.", "$TTL 300",
                f"@ SOA ns.{name}. hostmaster.{name}. {serial} 3600 600 86400 {NEGATIVE_TTL}",
                f"@ NS ns.{name}."]
        (self.dir / f"{name}.zone").write_text("\n".join(head + records) + "\n")
        if self.proc is not None:
            self._write_config()
            self._control("reload")
            self._wait_serving(name, serial)

    def start(self) -> None:
        self._write_config()
        self.proc = subprocess.Popen([KNOTD, "-c", str(self.dir / "knot.conf")],
                                     stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "knot.log", "ab"))
        for name, serial in self.zones.items():
            self._wait_serving(name, serial)
        if not self.zones:
            self._wait_listening()

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def trust_anchor(self, name: str) -> str:
        """The signed zone's key-signing key (flags 257) as a zone-file DNSKEY line."""
        name = name.rstrip(".").lower()
        keys = self._query().resolve(name, "DNSKEY")
        return "".join(f"{name}. IN DNSKEY {key.to_text()}\n" for key in keys if key.flags == 257)

    def log(self) -> str:
        path = self.dir / "knot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_config(self) -> None:
        d = self.dir
        zones = "".join(f"  - domain: {name}\n    file: {name}.zone\n"
                        + ("    dnssec-signing: on\n" if name in self.signed else "")
                        + ("    dnssec-policy: nsec3\n" if self.signed.get(name) else "")
                        for name in self.zones)
        (d / "knot.conf").write_text(
            f"server:\n    listen: 127.0.0.1@{self.port}\n    rundir: {d}\n"
            f"    pidfile: {d}/knot.pid\n    udp-workers: 1\n    tcp-workers: 1\n"
            f"    background-workers: 1\n"
            f"database:\n    storage: {d}\n"
            f"control:\n    listen: {d}/knot.sock\n"
            f"log:\n  - target: stderr\n    any: info\n"
            f"policy:\n  - id: nsec3\n    nsec3: on\n"
            f"template:\n  - id: default\n    storage: {d}\n    zonefile-sync: -1\n"
            f"    zonefile-load: whole\n    journal-content: none\n"
            + (f"zone:\n{zones}" if zones else ""))

    def _control(self, *args: str) -> None:
        subprocess.run([KNOTC, "-c", str(self.dir / "knot.conf"), *args], check=True,
                       capture_output=True, timeout=30)

    def _query(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = ["127.0.0.1"], self.port
        resolver.lifetime = 0.5
        return resolver

    def _wait_serving(self, name: str, serial: int) -> None:
        resolver = self._query()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_running()
            try:
                if resolver.resolve(name, "SOA")[0].serial >= serial:
                    return
            except dns.exception.DNSException:
                pass
            time.sleep(0.02)
        raise AssertionError(f"knotd does not serve {name} serial {serial}:\n{self.log()}")

    def _wait_listening(self) -> None:
        resolver = self._query()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_running()
            try:
                resolver.resolve("nothing.invalid", "SOA")
            except dns.resolver.NoNameservers:
                return  # REFUSED: it answers
            except dns.exception.DNSException:
                pass
            time.sleep(0.02)
        raise AssertionError(f"knotd did not start:\n{self.log()}")

    def _check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"knotd exited ({self.proc.returncode}):\n{self.log()}")
