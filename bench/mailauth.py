"""Mail authentication costs, side by side in one run:

    python -m bench.mailauth [--messages 400] [--clients 4] [--size 4096]

1. Inbound accept rate over port 25: the same signed messages (SPF pass, DKIM pass, DMARC
   p=reject) sent to two `mailforge serve` instances, checks on ([authentication]
   inbound_checks) and off, one after the other, then again in the other order; a Knot DNS
   server on loopback serves the records (tests/system/dns_server.py), and after the first
   message the answers come from our resolver's cache, as a real one would.
2. DKIM signing cost per outbound message (RSA-2048, Ed25519, both), and the ARC set a
   forwarded message gets instead (RSA-2048, mailauth/sealing.py), in this process.
Compare the ratios: these machines are noisy.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import smtplib
import tempfile
import time
from pathlib import Path

from mailforge.mailauth.keys import KeyStore
from mailforge.mailauth.sealing import Sealer
from mailforge.mailauth.signing import Signer
from tests.system.conftest import DOMAIN, USER, Server
from tests.system.dns_server import DnsServer, txt

SENDER_DOMAIN = "sender.test"


def message(size: int, serial: int) -> bytes:
    head = (f"From: bench@{SENDER_DOMAIN}\r\nTo: {USER}\r\nSubject: bench {serial}\r\n"
            f"Date: Fri, 04 Dec 2026 19:00:00 +0000\r\nMessage-ID: <{serial}@{SENDER_DOMAIN}>\r\n\r\n")
    line = b"x" * 76 + b"\r\n"
    return head.encode() + line * max(1, (size - len(head)) // len(line))


def send_all(server: Server, messages: list[bytes], clients: int) -> float:
    """Messages accepted per second by `clients` connections, each reused for its share."""
    def one_client(share: list[bytes]) -> None:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=60) as smtp:
            smtp.ehlo("client.sender.test")
            for data in share:
                smtp.sendmail(f"bench@{SENDER_DOMAIN}", [USER], data)
    shares = [messages[i::clients] for i in range(clients)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(one_client, shares))
    return len(messages) / (time.perf_counter() - started)


def accept_rates(root: Path, opts: argparse.Namespace) -> dict[str, list[float]]:
    keys = KeyStore(root / "sender-keys")
    record = keys.generate(SENDER_DOMAIN, "b1", "rsa").dns_record()
    dns = DnsServer(root / "dns")
    dns.start()
    servers: dict[str, Server] = {}
    try:
        dns.zone(SENDER_DOMAIN, [txt("@", "v=spf1 ip4:127.0.0.1 -all"), txt("b1._domainkey", record),
                                 txt("_dmarc", "v=DMARC1; p=reject")])
        signer = Signer(keys)
        messages = [signer.sign(message(opts.size, i)) for i in range(opts.messages)]
        for name, on in (("checks on", True), ("checks off", False)):
            server = Server(root / name.replace(" ", "-"), dns={"nameservers": [dns.nameserver]},
                            authentication={"inbound_checks": on}, delivery={"workers": 1})
            server.start()
            servers[name] = server
        rates: dict[str, list[float]] = {name: [] for name in servers}
        send_all(servers["checks on"], messages[:10], 1)  # warms the resolver's cache
        for order in (("checks on", "checks off"), ("checks off", "checks on")):
            for name in order:
                rates[name].append(send_all(servers[name], messages, opts.clients))
        return rates
    finally:
        for server in servers.values():
            server.stop()
        dns.stop()


def signing_costs(root: Path, opts: argparse.Namespace, rounds: int = 200) -> dict[str, float]:
    """Microseconds to sign one message, per key set, and to ARC-seal one."""
    costs = {}
    data = message(opts.size, 0)
    for label, algorithms in (("RSA-2048", ["rsa"]), ("Ed25519", ["ed25519"]),
                              ("both (dual)", ["rsa", "ed25519"])):
        store = KeyStore(root / label.replace(" ", "-"))
        for algorithm in algorithms:
            store.generate(SENDER_DOMAIN, algorithm, algorithm)
        signer = Signer(store)
        started = time.perf_counter()
        for _ in range(rounds):
            signer.sign(data)
        costs[label] = (time.perf_counter() - started) / rounds * 1e6
    sealer = Sealer(KeyStore(root / "RSA-2048"), "mx.bench.test")
    checked = b"Authentication-Results: mx.bench.test; spf=pass; dkim=pass; arc=none\r\n" + data
    started = time.perf_counter()
    for _ in range(rounds):
        sealer.seal(checked, SENDER_DOMAIN)
    costs["ARC seal"] = (time.perf_counter() - started) / rounds * 1e6
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--size", type=int, default=4096)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-mailauth-") as tmp:
        root = Path(tmp)
        rates = accept_rates(root, opts)
        costs = signing_costs(root, opts)
    off = sum(rates["checks off"]) / len(rates["checks off"])
    print(f"inbound accept rate, {opts.messages} messages of {opts.size} B, "
          f"{opts.clients} clients, to {USER} ({DOMAIN}):")
    for name, values in rates.items():
        mean = sum(values) / len(values)
        print(f"  {name:<11} {mean:8.1f} msg/s  (runs: {', '.join(f'{v:.1f}' for v in values)})"
              f"  ratio to off: {mean / off:.2f}")
    print(f"DKIM signing (a forwarded message: ARC seal) per outbound message of {opts.size} B:")
    for label, micros in costs.items():
        print(f"  {label:<12} {micros:8.0f} µs")


if __name__ == "__main__":
    main()
