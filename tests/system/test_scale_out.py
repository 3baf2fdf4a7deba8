"""The real thing on loopback (issue 18): Debian's HAProxy, with `send-proxy-v2` and health
checks against /health, in front of three mailforge nodes (own data dirs and ports) that share
one PostgreSQL accounts database and one Redis for their counts. A user added once logs in on
every node; `block_after` failed logins and an outbound limit hold over the three together.
A mailbox owned by one node is read through any node (proxied) and its mail, accepted by any
node, is stored by its owner alone. Redis stopped: the nodes go on alone and share again once it
is back; PostgreSQL stopped: temporary errors only, and nothing accepted is lost.

The setup is README "Scaling out"'s (tests/haproxy.py writes the HAProxy configuration).
"""

from __future__ import annotations

import functools
import imaplib
import poplib
import re
import smtplib
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.haproxy import HAProxy
from tests.pg_cluster import PASSWORD as PG_PASSWORD
from tests.pg_cluster import start_cluster
from tests.redis_server import RedisServer
from .conftest import DOMAIN, PASSWORD, USER, Server, cli, free_port
from .test_abuse import pop3_login
from .test_accounts_postgresql import MESSAGE, TIMEOUT, plain
from .test_cluster_counters import THRESHOLDS, cluster_state, wait_for
from .test_outbound_limits import BOB, send

NODES = ("a", "b", "c")
# The cluster's master secret, for the logins a node makes at a mailbox's owner.
CLUSTER_SECRET = "0123456789abcdef-cluster"
ATTACKER = "127.0.0.3"
LIMIT = 3  # alice's outbound messages an hour, over all nodes
ERIN = f"erin@{DOMAIN}"  # her mail is accepted while PostgreSQL is down
ALONE = "127.0.0.5"  # fails logins while Redis is down
SHARED_AGAIN = "127.0.0.6"  # fails logins once Redis is back


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
                          imap_services=True, accounts=False, abuse=THRESHOLDS,
                          server={"hostname": f"node-{name}.example.test",
                                  "proxy_trusted": ["127.0.0.1/32"], "allow_plaintext_auth": True},
                          smtp={"proxy_protocol": True}, pop3={"proxy_protocol": True},
                          imap={"proxy_protocol": True},
                          metrics={"listen": f"127.0.0.1:{free_port()}"},
                          cluster={"redis": redis.url, "node": name,
                                   "secret_file": "cluster.secret"})
            (node.dir / "pg.password").write_text(PG_PASSWORD + "\n")
            (node.dir / "cluster.secret").write_text(CLUSTER_SECRET + "\n")
            node.reconfigure({"accounts": {"backend": "postgresql", "dsn": dsn,
                                           "password_file": "pg.password", "timeout": TIMEOUT}})
            node.start()
            nodes.append(node)
        balancer = HAProxy(tmp_path_factory.mktemp("haproxy"), ["smtp", "pop3", "imap"],
                           [{"smtp": n.port, "pop3": n.pop3_port, "imap": n.imap_port,
                             "metrics": metrics_port(n)}
                            for n in nodes])
        balancer.wait_all_up(3 * len(NODES))
        yield SimpleNamespace(
            balancer=SimpleNamespace(port=balancer.ports["smtp"], pop3_port=balancer.ports["pop3"],
                                     imap_port=balancer.ports["imap"],
                                     wait_all_up=functools.partial(balancer.wait_all_up,
                                                                   3 * len(NODES))),
            nodes=nodes, redis=redis, database=database)
    finally:
        if balancer is not None:
            balancer.stop()
        for node in nodes:
            node.stop()
        redis.stop()
        database.remove()


def metrics_port(node) -> int:
    return int(node.config.metrics.listen.rsplit(":", 1)[1])


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
    balancer.wait_all_up()  # round robin skips a node a check found slow (under load)
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
    balancer.wait_all_up()  # round robin skips a node a check found slow (under load)
    assert sorted(pop3_node(balancer) for _ in NODES) == list(NODES)  # others go on

    # The limit, set once, counts alice's messages on every node: the fourth is refused.
    cli(b.conf, "limits", "set", "--user", USER, "--messages", str(LIMIT), "--interval", "3600")
    assert [send(balancer, USER) for _ in range(LIMIT + 1)] == [250] * LIMIT + [451]
    # Each node accepted one of them (round robin) and delivered it into its own store.
    wait_for(lambda: [len(n.delivered(BOB)) for n in (a, b, c)] == [1, 1, 1],
             "one message delivered on each node")


ROUTED_DOMAIN = "routed.test"
CAROL = f"carol@{ROUTED_DOMAIN}"  # her mailbox is node b's


def imap_read(balancer) -> tuple[str, list[bytes]]:
    """Carol's INBOX over IMAP through the balancer: the node that took the connection, and
    her messages' subjects."""
    client = imaplib.IMAP4("127.0.0.1", balancer.imap_port, timeout=30)
    try:
        served_by = re.search(rb"node-(\w)\.example\.test", client.welcome).group(1).decode()
        client.login(CAROL, PASSWORD)
        assert client.select("INBOX")[0] == "OK"
        _, data = client.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = sorted(part[1].strip() for part in data if isinstance(part, tuple))
    finally:
        client.logout()
    return served_by, subjects


def pop3_count(balancer) -> tuple[str, int]:
    """Carol's maildrop over POP3 through the balancer: the node that took the connection, and
    how many messages it holds."""
    client = poplib.POP3("127.0.0.1", balancer.pop3_port, timeout=30)
    try:
        served_by = re.search(rb"@node-(\w)\.example\.test>", client.getwelcome()).group(1).decode()
        client.user(CAROL)
        assert client.pass_(PASSWORD).startswith(b"+OK")
        count = client.stat()[0]
    finally:
        client.quit()
    return served_by, count


def stored(node) -> list[Path]:
    """Carol's messages in `node`'s store, new or seen (IMAP moves them from new/ to cur/)."""
    maildir = node.maildir(CAROL)
    return [path for sub in ("new", "cur") if (maildir / sub).is_dir()
            for path in (maildir / sub).iterdir()]


def proxied_to_b(node, service: str) -> float:
    """How many of `service`'s sessions `node` proxied to node b, by its metrics."""
    url = f"http://127.0.0.1:{metrics_port(node)}/metrics"
    with urllib.request.urlopen(url, timeout=10) as page:
        text = page.read().decode()
    labels = ('node="b"', 'result="ok"', f'service="{service}"')
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mailforge_proxied_sessions_total{")
               and all(label in line for label in labels))


def test_a_mailbox_owned_by_one_node_is_served_through_every_node(cluster):
    balancer, (a, b, c) = cluster.balancer, cluster.nodes
    cli(a.conf, "domain", "add", ROUTED_DOMAIN)  # on one node: the database is shared
    cli(a.conf, "user", "add", CAROL, "--password-stdin", input=PASSWORD + "\n")
    for node in cluster.nodes:  # each node's internal ports, as the others reach them
        name = node.config.cluster.node
        cli(c.conf, "node", "add", name, "--host", "127.0.0.1", "--smtp-port", str(node.port),
            "--pop3-port", str(node.pop3_port), "--imap-port", str(node.imap_port))
    cli(b.conf, "user", "set", CAROL, "--node", "b")
    assert "b (its own)" in cli(a.conf, "user", "show", CAROL).stdout

    # Three messages, one accepted by each node (round robin): all three stored on b, once.
    for number in range(1, 4):
        with smtplib.SMTP("127.0.0.1", balancer.port, timeout=30) as client:
            client.sendmail("dave@remote.test", [CAROL],
                            f"From: dave@remote.test\r\nSubject: routed {number}\r\n\r\nhi\r\n")
    wait_for(lambda: len(b.delivered(CAROL)) >= 3, "three messages in b's store")

    # Read through every node: a and c proxy to b, b serves itself.
    subjects = [b"Subject: routed 1", b"Subject: routed 2", b"Subject: routed 3"]
    balancer.wait_all_up()  # round robin skips a node a check found slow (under load)
    assert sorted(imap_read(balancer) for _ in NODES) == [(n, subjects) for n in NODES]
    assert sorted(pop3_count(balancer) for _ in NODES) == [(n, 3) for n in NODES]
    assert all(proxied_to_b(node, service) == 1 for node in (a, c) for service in ("imap", "pop3"))
    assert all(proxied_to_b(b, service) == 0 for service in ("imap", "pop3"))
    owner_log = b.log()
    assert all(f"{CAROL}: {service} login from 127.0.0.1 via node {front}" in owner_log
               for service in ("IMAP", "POP3") for front in ("a", "c"))

    # Exactly once, and nowhere but on b (the sessions above gave duplicates time to show).
    assert [len(stored(node)) for node in (a, b, c)] == [0, 3, 0]


def test_service_goes_on_through_redis_and_postgresql_outages(cluster):
    """Redis stopped: the nodes fail open and count alone, then share again once it is back.
    PostgreSQL stopped: temporary errors through the balancer, nothing accepted is lost, and
    everything resumes once it is back."""
    a = cluster.nodes[0]
    cli(a.conf, "user", "add", ERIN, "--password-stdin", input=PASSWORD + "\n")
    redis_outage(cluster)
    postgresql_outage(cluster)


def redis_outage(cluster) -> None:
    balancer, nodes = cluster.balancer, cluster.nodes
    cluster.redis.stop()
    try:
        for node in nodes:
            wait_for(lambda: not cluster_state(node)["shared"], "the Redis outage in status")
        assert all("LOCAL COUNTS ONLY" in cli(n.conf, "status").stdout for n in nodes)
        balancer.wait_all_up()  # round robin skips a node a check found slow (under load)
        assert sorted(pop3_node(balancer) for _ in NODES) == list(NODES)  # fail open
        # block_after counts each node's own failures: just under it on every node, the
        # address is blocked nowhere, though three nodes saw over twice block_after in all.
        below = len(NODES) * (THRESHOLDS["block_after"] - 1)
        assert all(pop3_login(balancer, "wrong", source=ALONE).startswith(b"-ERR")
                   for _ in range(below))
        assert all(pop3_login(balancer, PASSWORD, source=ALONE).startswith(b"+OK")
                   for _ in NODES)
        for _ in NODES:  # one more on each node reaches block_after there
            pop3_login(balancer, "wrong", source=ALONE)
        assert all(not pop3_login(balancer, PASSWORD, source=ALONE).startswith(b"+OK")
                   for _ in NODES)
    finally:
        cluster.redis.start()  # empty: the nodes catch up by themselves
    for node in nodes:
        wait_for(lambda: cluster_state(node)["shared"], "the nodes to share again")
    # Caught up: the blocks imposed alone are in the shared counters, and a new address's
    # failures count over the three nodes together again.
    assert all(ALONE in cli(n.conf, "abuse", "list").stdout for n in nodes)
    for _ in range(THRESHOLDS["block_after"]):
        pop3_login(balancer, "wrong", source=SHARED_AGAIN)
    wait_for(lambda: all(SHARED_AGAIN in cli(n.conf, "abuse", "list").stdout for n in nodes),
             "the block on every node")


def postgresql_outage(cluster) -> None:
    balancer, nodes = cluster.balancer, cluster.nodes
    # One session per node (round robin) gets as far as RCPT before the database stops.
    sessions = [smtp_to_rcpt(balancer) for _ in NODES]
    cluster.database.stop()
    try:
        assert [session.data(MESSAGE)[0] for session in sessions] == [250] * len(NODES)
        for session in sessions:
            session.quit()
        for _ in NODES:  # every node, through the balancer: temporary answers only
            assert temporary_smtp_answers(balancer) == ((454, b"4.7.0"), (451, b"4.3.0"))
            assert pop3_login(balancer, PASSWORD, source="127.0.0.1").startswith(
                b"-ERR [SYS/TEMP]")
            assert imap_login_answer(balancer).startswith("b'[UNAVAILABLE]")
        time.sleep(0.5)  # the deliveries meet the outage too
        assert [len(n.delivered(ERIN)) for n in nodes] == [0, 0, 0]
    finally:
        cluster.database.start()
    # Nothing accepted is lost: each node delivers what it queued, soon after the database
    # is back (well within the first step of the retry schedule), and logins work again.
    wait_for(lambda: [len(n.delivered(ERIN)) for n in nodes] == [1, 1, 1],
             "the queued messages delivered", timeout=30)
    wait_for(lambda: logins_work(balancer), "logins through every node", timeout=10)


def logins_work(balancer) -> bool:
    try:
        return sorted(pop3_node(balancer) for _ in NODES) == list(NODES)
    except poplib.error_proto:
        return False


def smtp_to_rcpt(balancer) -> smtplib.SMTP:
    """A session through the balancer with carol accepted as its recipient."""
    session = smtplib.SMTP("127.0.0.1", balancer.port, timeout=30)
    session.ehlo()
    assert session.mail("dave@remote.test")[0] == 250
    assert session.rcpt(ERIN)[0] == 250
    return session


def temporary_smtp_answers(balancer) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """AUTH as alice, then RCPT to carol, on a new session: each reply's code and status."""
    with smtplib.SMTP("127.0.0.1", balancer.port, timeout=30) as session:
        session.ehlo()
        auth_code, auth_text = session.docmd("AUTH", "PLAIN " + plain(USER, PASSWORD))
        session.mail("dave@remote.test")
        rcpt_code, rcpt_text = session.rcpt(ERIN)
        return (auth_code, auth_text[:5]), (rcpt_code, rcpt_text[:5])


def imap_login_answer(balancer) -> str:
    """Why alice's IMAP LOGIN through the balancer is refused."""
    client = imaplib.IMAP4("127.0.0.1", balancer.imap_port, timeout=30)
    try:
        with pytest.raises(imaplib.IMAP4.error) as refused:
            client.login(USER, PASSWORD)
        return str(refused.value)
    finally:
        client.shutdown()
