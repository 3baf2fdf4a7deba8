"""Scale-out costs, side by side in one run (issue 18):

    python -m bench.cluster [--messages 2000] [--ops 4000] [--logins 100] [--clients 8]
                            [--nodes 1,2,3] [--timeout 900]

1. SMTP messages/s (a new connection per message) and IMAP commands/s (logged-in clients,
   bench/imap_load.py's cycle) through HAProxy (send-proxy-v2, /health checks) in front of 1,
   2 and 3 nodes that share one PostgreSQL accounts database and one Redis: the README's
   set-up, on this one machine, so every node competes for the same cores.
2. What the shared counters cost: one node with and without `[cluster] redis`, SMTP straight
   to its port (every connection asks Redis once to open and once to close), twice in
   alternating order.
3. Login rate: POP3 sessions (USER, PASS, STAT of an empty mailbox, QUIT) against one node
   with PostgreSQL accounts and one with SQLite, twice in alternating order.

The components are the system tests' own (tests/pg_cluster.py, tests/redis_server.py,
tests/haproxy.py, tests/system/conftest.Server), the loads bench/load.py's. Compare the ratios:
these machines are noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench import load, peers
from bench.latency import summary
from tests.haproxy import HAProxy
from tests.pg_cluster import PASSWORD as PG_PASSWORD
from tests.pg_cluster import start_cluster
from tests.redis_server import RedisServer
from tests.system.conftest import Server, free_port

SMTP_SIZE = 1024
IMAP_MESSAGES, IMAP_SIZE = 50, 2048  # in every user's mailbox, on every node
# Room for the whole load from one address (HAProxy's, or the client's): caps are not measured.
MAX_CONNECTIONS = 1000
# Per service and node, as a production node's default: one node alone can use both cores.
WORKERS = 2
# README's check ("Scaling out"), not the tests' 200 ms with one miss out: on 2 busy cores a
# check can take longer than that, and a node taken out mid-load would measure the balancer.
CHECK = "check port {metrics} inter 2s"

# Where every SMTP load's messages go: not a POP3 or IMAP user, whose mailbox is counted.
INBOX = f"inbox@{peers.BENCH_DOMAIN}"

Runner = Callable[[], contextlib.AbstractContextManager[peers.Target]]


def node_settings(data_dir: Path, database: str | None, redis: str | None,
                  behind_proxy: bool) -> dict[str, dict[str, object]]:
    """SMTP, POP3 and IMAP with WORKERS each, no TLS listeners; PostgreSQL accounts when
    `database` (a dsn), Redis counters when `redis` (a URL)."""
    caps = {"workers": WORKERS, "max_connections": MAX_CONNECTIONS,
            "max_connections_per_ip": MAX_CONNECTIONS}
    proxy = {"proxy_protocol": behind_proxy}
    settings: dict[str, dict[str, object]] = {
        "smtp": {**caps, **proxy}, "pop3": {**caps, **proxy}, "imap": {**caps, **proxy},
        "pop3s": {"listen": []}, "imaps": {"listen": []},
        "server": {"allow_plaintext_auth": True, "proxy_trusted": ["127.0.0.1/32"]},
        "metrics": {"listen": f"127.0.0.1:{free_port()}"},
        "cluster": {"redis": redis or ""}}
    if database:
        (data_dir / "pg.password").write_text(PG_PASSWORD + "\n")
        settings["accounts"] = {"backend": "postgresql", "dsn": database,
                                "password_file": "pg.password"}
    return settings


def make_node(root: Path, name: str, database: str | None = None, redis: str | None = None,
              behind_proxy: bool = False) -> Server:
    node = Server(root / name, pop3_services=True, imap_services=True, accounts=False,
                  server={"hostname": f"{name}.bench.test"})
    node.reconfigure(node_settings(node.dir, database, redis, behind_proxy))
    return node


def add_accounts(node: Server, users: list[str]) -> None:
    log = node.dir / "bench-setup.log"
    peers.run_checked(peers.mailforge_command() + ["-c", str(node.conf), "domain", "add",
                                                   peers.BENCH_DOMAIN], log)
    peers.add_users(peers.mailforge_command(), node.conf, users, log)


def fill_mailboxes(node: Server, users: list[str], messages: list[bytes]) -> None:
    for user in users:
        peers.fill_maildir(node.maildir(user), messages)


def target(name: str, port: int, users: list[str], pid: int = 0) -> peers.Target:
    """SMTP loads send to INBOX, IMAP and POP3 ones log in as `users`. pid 0 (a balancer in
    front of several nodes): no server CPU column."""
    return peers.Target(name, peers.LOOPBACK, port, INBOX, pid, None, users=tuple(users),
                        password=peers.MAILFORGE_PASSWORD)


@contextlib.contextmanager
def started(nodes: list[Server]) -> Iterator[list[Server]]:
    try:
        for node in nodes:
            node.start(timeout=peers.START_TIMEOUT)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def scaling(root: Path, opts: argparse.Namespace, database: str, redis: RedisServer,
            users: list[str], deadline: float) -> dict[int, dict[str, load.PeerResult]]:
    """SMTP and IMAP through HAProxy, for each node count."""
    results = {}
    box = load.mailbox(IMAP_MESSAGES, IMAP_SIZE)
    for count in opts.node_counts:
        nodes = [make_node(root / f"scale{count}", f"node{n}", database, redis.url, True)
                 for n in range(1, count + 1)]
        for node in nodes:
            fill_mailboxes(node, users, box)
        with started(nodes):
            balancer = HAProxy(root / f"haproxy{count}", ["smtp", "imap"],
                               [{"smtp": n.port, "imap": n.imap_port,
                                 "metrics": int(n.config.metrics.listen.rsplit(":", 1)[1])}
                                for n in nodes], CHECK)
            try:
                balancer.wait_all_up(2 * count)
                for service in ("smtp", "imap"):  # greeted through it: the path works
                    peers.wait_ready(balancer.proc, balancer.ports[service], balancer.log,
                                     greeting=peers.GREETINGS[service])
                results[count] = {
                    service: load.measure(f"{count} node(s) {service}", fixed(target(
                        f"{count} node(s)", balancer.ports[service], users)),
                        load_options(service, opts), deadline)
                    for service in ("smtp", "imap")}
            finally:
                balancer.stop()
    return results


def side_by_side(pair: dict[str, Server], service: str, opts: argparse.Namespace,
                 users: list[str], deadline: float,
                 also_cpu_of: int | None = None) -> dict[str, list[tuple[load.PeerResult, float]]]:
    """Each node of `pair` loaded twice, in alternating order: (result, CPU seconds of the
    `also_cpu_of` process during it) per run."""
    runs: dict[str, list[tuple[load.PeerResult, float]]] = {name: [] for name in pair}
    names = list(pair)
    for order in (names, names[::-1]):
        for name in order:
            node = pair[name]
            port = node.port if service == "smtp" else node.pop3_port
            before = peers.tree_cpu_seconds(also_cpu_of) if also_cpu_of else 0.0
            result = load.measure(name, fixed(target(name, port, users, node.pid)),
                                  load_options(service, opts), deadline)
            after = peers.tree_cpu_seconds(also_cpu_of) if also_cpu_of else 0.0
            runs[name].append((result, after - before))
    return runs


def fixed(value: peers.Target) -> Runner:
    """A bench.load runner for a server that is already up (started and stopped here)."""
    return lambda: contextlib.nullcontext(value)


def load_options(service: str, opts: argparse.Namespace) -> argparse.Namespace:
    """What bench.load's loads read from their command line."""
    common = {"command": service, "clients": opts.clients, "client_processes": 1,
              "count_delivered": False}
    if service == "smtp":
        return argparse.Namespace(**common, messages=opts.messages, size=SMTP_SIZE, reuse=1)
    if service == "imap":
        return argparse.Namespace(**common, ops=opts.ops, messages=IMAP_MESSAGES, size=IMAP_SIZE)
    return argparse.Namespace(**common, sessions=opts.logins, messages=0, size=SMTP_SIZE)


def single_nodes(root: Path, database: str, redis: RedisServer, users: list[str]
                 ) -> dict[str, Server]:
    """Straight to the node, no balancer: SQLite accounts with and without Redis, and
    PostgreSQL accounts without it."""
    nodes = {"sqlite": make_node(root, "sqlite"),
             "sqlite+redis": make_node(root, "sqlite-redis", redis=redis.url),
             "postgresql": make_node(root, "postgresql", database)}
    for name, node in nodes.items():
        if name != "postgresql":  # the shared database has them already
            add_accounts(node, [*users, INBOX])
        fill_mailboxes(node, users, [])
    return nodes


def rate(runs: list[tuple[load.PeerResult, float]]) -> float:
    rates = [result.rate or 0.0 for result, _ in runs]
    return sum(rates) / len(rates)


def per_unit_ms(runs: list[tuple[load.PeerResult, float]],
                seconds: Callable[[load.PeerResult, float], float | None]) -> str:
    """Milliseconds of `seconds` (of a run) per accepted unit, over all runs."""
    done = sum(result.stats.accepted for result, _ in runs if result.stats)
    spent = [seconds(result, extra) for result, extra in runs]
    if not done or any(s is None for s in spent):
        return "-"
    return f"{sum(spent) * 1000 / done:.2f}"


def p50_ms(runs: list[tuple[load.PeerResult, float]]) -> str:
    latencies = [x for result, _ in runs if result.stats for x in result.stats.latencies]
    return f"{summary(latencies)['p50'] * 1000:.1f}" if latencies else "-"


def problems(results: list[load.PeerResult]) -> Iterator[str]:
    for result in results:
        if result.note:
            yield f"  {result.name}: {result.note}"
        if result.stats and result.stats.errors:
            kinds = ", ".join(f"{k} ×{n}" for k, n in result.stats.error_kinds.most_common(3))
            yield f"  {result.name}: {result.stats.errors} errors ({kinds})"


def print_scaling(results: dict[int, dict[str, load.PeerResult]]) -> None:
    print("Through HAProxy; the nodes share one PostgreSQL and one Redis, all on this machine:")
    print(f"  {'nodes':>5}  {'SMTP msg/s':>10}  {'× 1 node':>8}  {'per node':>8}  "
          f"{'IMAP ops/s':>10}  {'× 1 node':>8}  {'per node':>8}")
    first = results.get(min(results)) if results else None
    for count, by_service in results.items():
        cells = []
        for service in ("smtp", "imap"):
            value, base = by_service[service].rate, first[service].rate if first else None
            ratio = value / base if value and base else None
            cells += [f"{value:,.0f}" if value else "-", f"{ratio:.2f}" if ratio else "-",
                      f"{ratio / count:.2f}" if ratio else "-"]
        print(f"  {count:>5}  {cells[0]:>10}  {cells[1]:>8}  {cells[2]:>8}  "
              f"{cells[3]:>10}  {cells[4]:>8}  {cells[5]:>8}")
    for line in problems([r for by_service in results.values() for r in by_service.values()]):
        print(line)


def print_pair(title: str, unit: str, runs: dict[str, list[tuple[load.PeerResult, float]]],
               redis_column: bool = False) -> None:
    print(title)
    header = f"  {'':<13} {unit + ' (runs)':>26}  {'p50 ms':>7}  {'node CPU ms':>11}"
    print(header + (f"  {'Redis CPU ms':>12}" if redis_column else ""))
    base = rate(next(iter(runs.values())))
    for name, name_runs in runs.items():
        each = ", ".join(f"{result.rate or 0:,.0f}" for result, _ in name_runs)
        line = (f"  {name:<13} {rate(name_runs):>8,.0f} ({each}) ×{rate(name_runs) / base:.2f}"
                .ljust(42) + f"  {p50_ms(name_runs):>7}  "
                f"{per_unit_ms(name_runs, lambda result, _: result.server_cpu):>11}")
        if redis_column:
            line += f"  {per_unit_ms(name_runs, lambda _, redis_cpu: redis_cpu):>12}"
        print(line)
    for line in problems([result for name_runs in runs.values() for result, _ in name_runs]):
        print(line)


def run(root: Path, opts: argparse.Namespace) -> None:
    deadline = time.monotonic() + opts.timeout
    database = start_cluster()
    redis = RedisServer(root / "redis")
    redis.start()
    try:
        dsn = database.create_database("bench")
        users = peers.bench_users(opts.clients)
        add_accounts(make_node(root, "accounts", dsn), [*users, INBOX])  # once, shared
        singles = single_nodes(root, dsn, redis, users)
        with started(list(singles.values())):
            counters = side_by_side({k: singles[k] for k in ("sqlite", "sqlite+redis")},
                                    "smtp", opts, users, deadline, redis.proc.pid)
            logins = side_by_side({k: singles[k] for k in ("sqlite", "postgresql")},
                                  "pop3", opts, users, deadline)
        scaled = scaling(root, opts, dsn, redis, users, deadline)
    finally:
        redis.stop()
        database.remove()
    print(f"python -m bench.cluster {' '.join(sys.argv[1:])}".rstrip()
          + f"  ({opts.clients} clients, {os.cpu_count()} cores)")
    print_scaling(scaled)
    print_pair(f"One node, SMTP straight to it, {opts.messages} × {SMTP_SIZE} B, a new connection"
               " per message; CPU per message:", "msg/s", counters, redis_column=True)
    print_pair(f"One node, {opts.logins} POP3 logins (USER, PASS, STAT, QUIT); CPU per login:",
               "logins/s", logins)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="SMTP messages per load")
    parser.add_argument("--ops", type=int, default=4000, help="IMAP commands per load")
    parser.add_argument("--logins", type=int, default=100, help="POP3 logins per load")
    parser.add_argument("--clients", type=int, default=8,
                        help=f"concurrent clients, each IMAP/POP3 one its own user (at most "
                             f"{peers.SERIAL_USERS})")
    parser.add_argument("--nodes", default="1,2,3", help="node counts behind HAProxy")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for all loads")
    opts = parser.parse_args(argv)
    for flag in ("messages", "ops", "logins", "clients"):
        if getattr(opts, flag) < 1:
            parser.error(f"--{flag} must be at least 1")
    if opts.clients > peers.SERIAL_USERS:
        parser.error(f"--clients must be at most {peers.SERIAL_USERS}")
    try:
        opts.node_counts = sorted({int(n) for n in opts.nodes.split(",")})
    except ValueError:
        parser.error("--nodes: node counts separated by commas, e.g. 1,2,3")
    if not opts.node_counts or opts.node_counts[0] < 1:
        parser.error("--nodes: every count must be at least 1")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    peers.raise_nofile(4 * opts.clients + 256)
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        try:
            run(Path(tmp), opts)
        except pytest.skip.Exception as missing:  # a component is not installed
            print(f"python -m bench.cluster: {missing.msg}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
