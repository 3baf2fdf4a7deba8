"""The real thing on loopback (issue 18): Debian's HAProxy, with `send-proxy-v2` and health
checks against /health, in front of three mailforge nodes (own data dirs and ports) that share
one PostgreSQL accounts database and one Redis for their counts. A user added once logs in on
every node; `block_after` failed logins and an outbound limit hold over the three together.

The setup is README "Scaling out"'s (tests/haproxy.py writes the HAProxy configuration).
"""

from __future__ import annotations

import poplib
import re
from types import SimpleNamespace

import pytest

from tests.haproxy import HAProxy
from tests.pg_cluster import PASSWORD as PG_PASSWORD
from tests.pg_cluster import start_cluster
from tests.redis_server import RedisServer
from .conftest import DOMAIN, PASSWORD, USER, Server, cli, free_port
from .test_abuse import pop3_login
from .test_cluster_counters import THRESHOLDS, wait_for
from .test_outbound_limits import BOB, send

NODES = ("a", "b", "c")
ATTACKER = "127.0.0.3"
LIMIT = 3  # alice's outbound messages an hour, over all nodes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The balancer (its ports, as a test server's attributes), the three nodes, and the
    PostgreSQL and Redis they share (tests may stop and restart those)."""
    database, redis = start_cluster(), RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    dsn = database.create_database("scale_out")
    nodes, balancer = [], None
    try:
        for name in NODES:
            node = Server(tmp_path_factory.mktemp(f"node-{name}"), pop3_services=True,
                          accounts=False, abuse=THRESHOLDS,
                          server={"hostname": f"node-{name}.example.test",
                                  "proxy_trusted": ["127.0.0.1/32"], "allow_plaintext_auth": True},
                          smtp={"proxy_protocol": True}, pop3={"proxy_protocol": True},
                          metrics={"listen": f"127.0.0.1:{free_port()}"},
                          cluster={"redis": redis.url, "node": name})
            (node.dir / "pg.password").write_text(PG_PASSWORD + "\n")
            node.reconfigure({"accounts": {"backend": "postgresql", "dsn": dsn,
                                           "password_file": "pg.password", "timeout": 2.0}})
            node.start()
            nodes.append(node)
        balancer = HAProxy(tmp_path_factory.mktemp("haproxy"), ["smtp", "pop3"],
                           [{"smtp": n.port, "pop3": n.pop3_port,
                             "metrics": int(n.config.metrics.listen.rsplit(":", 1)[1])}
                            for n in nodes])
        balancer.wait_all_up(2 * len(NODES))
        yield SimpleNamespace(
            balancer=SimpleNamespace(port=balancer.ports["smtp"], pop3_port=balancer.ports["pop3"]),
            nodes=nodes, redis=redis, database=database)
    finally:
        if balancer is not None:
            balancer.stop()
        for node in nodes:
            node.stop()
        redis.stop()
        database.remove()


def pop3_node(balancer) -> str:
    """Log alice in over POP3 through the balancer: the node that served her."""
    client = poplib.POP3("127.0.0.1", balancer.pop3_port, timeout=30)
    try:
        served_by = re.search(rb"@node-(\w)\.example\.test>", client.getwelcome()).group(1).decode()
        client.user(USER)
        assert client.pass_(PASSWORD).startswith(b"+OK")
        assert client.stat()[0] == 0
    finally:
        client.quit()
    return served_by


def test_one_user_on_every_node_and_limits_over_all_three(cluster):
    balancer, (a, b, c) = cluster.balancer, cluster.nodes
    cli(a.conf, "domain", "add", DOMAIN)  # once, on one node: the database is shared
    for address in (USER, BOB):
        cli(a.conf, "user", "add", address, "--password-stdin", input=PASSWORD + "\n")
    assert sorted(pop3_node(balancer) for _ in NODES) == list(NODES)  # round robin

    # block_after (4) wrong passwords, spread over the three nodes by the round robin: the
    # address is blocked on all three, with the right password too.
    answers = [pop3_login(balancer, "wrong", source=ATTACKER)
               for _ in range(THRESHOLDS["block_after"])]
    assert all(answer.startswith(b"-ERR") for answer in answers)
    wait_for(lambda: all(ATTACKER in cli(n.conf, "abuse", "list").stdout for n in (a, b, c)),
             "the block on every node")
    assert all(not pop3_login(balancer, PASSWORD, source=ATTACKER).startswith(b"+OK")
               for _ in NODES)
    assert sorted(pop3_node(balancer) for _ in NODES) == list(NODES)  # others go on

    # The limit, set once, counts alice's messages on every node: the fourth is refused.
    cli(b.conf, "limits", "set", "--user", USER, "--messages", str(LIMIT), "--interval", "3600")
    assert [send(balancer, USER) for _ in range(LIMIT + 1)] == [250] * LIMIT + [451]
    # Each node accepted one of them (round robin) and delivered it into its own store.
    wait_for(lambda: [len(n.delivered(BOB)) for n in (a, b, c)] == [1, 1, 1],
             "one message delivered on each node")
