"""Two nodes sharing their counters in a real Valkey/Redis (issue 18): the per-IP connection
cap, `block_after` and an outbound limit hold over both; with the server stopped each node goes
on alone with its own counts (and says so), and shares again when it is back.

The nodes are two `mailforge serve` with data dirs and ports of their own; accounts are per
node here (each has alice), as the shared accounts database is another item of the issue.
"""

from __future__ import annotations

import smtplib
import time

import pytest

from tests.redis_server import redis_server  # noqa: F401  (a fixture)
from .conftest import PASSWORD, USER, cli
from .test_abuse import smtp_auth
from .test_outbound_limits import BOB, send

CAP = 3
BLOCK_AFTER = 4
ATTACKER = "127.0.0.3"
THRESHOLDS = {"window": 600.0, "tarpit_after": 2, "tarpit_delay": 0.05, "tarpit_max": 0.1,
              "block_after": BLOCK_AFTER, "block_time": 120.0, "exempt_networks": []}


@pytest.fixture
def two_nodes(make_server, redis_server):  # noqa: F811
    nodes = []
    for name in ("a", "b"):
        node = make_server(server={"allow_plaintext_auth": True}, abuse=THRESHOLDS,
                           smtp={"workers": 2, "max_connections_per_ip": CAP},
                           cluster={"redis": redis_server.url, "node": name})
        node.start()
        nodes.append(node)
    for node in nodes:
        wait_for(lambda: cluster_state(node)["shared"], f"node {node.config.node_name} shared")
    return nodes


def cluster_state(node) -> dict:
    return node.status()["ratekeeper"]["cluster"]


def wait_for(condition, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def connect(node) -> tuple[smtplib.SMTP | None, int]:
    """A new SMTP connection from 127.0.0.1: (the client, 220) or (None, the refusal's code)."""
    try:
        client = smtplib.SMTP("127.0.0.1", node.port, timeout=20)
    except smtplib.SMTPResponseException as exc:
        return None, exc.smtp_code
    except smtplib.SMTPServerDisconnected:
        return None, 421
    return client, 220


def fill(nodes) -> list[smtplib.SMTP]:
    """One connection on each node in turn until the cap refuses: those let in."""
    held = []
    for attempt in range(2 * CAP + 2):
        client, code = connect(nodes[attempt % 2])
        if client is None:
            assert code == 421
            break
        held.append(client)
    return held


def close_all(clients: list[smtplib.SMTP]) -> None:
    for client in clients:
        client.close()


def test_connection_cap_holds_over_both_nodes_and_each_goes_on_alone_without_redis(
        two_nodes, redis_server):  # noqa: F811
    a, b = two_nodes
    held = fill(two_nodes)
    assert len(held) == CAP  # spread over both, the cap holds in all
    assert connect(a)[1] == 421 and connect(b)[1] == 421
    close_all(held)
    wait_for(lambda: len(held := fill(two_nodes)) == CAP and not close_all(held),
             "the closed sessions to be released")

    redis_server.stop()
    for node in two_nodes:
        wait_for(lambda: not cluster_state(node)["shared"], "the outage to show in status")
    text = cli(a.conf, "status").stdout
    assert "LOCAL COUNTS ONLY" in text and "node a" in text
    assert "unreachable" in a.log()
    alone = [connect(node)[0] for node in (a, b) for _ in range(CAP)]
    assert all(alone)  # each node counts its own clients: the cap is per node now
    assert connect(a)[1] == 421 and connect(b)[1] == 421

    redis_server.start()  # empty: each node re-registers its live sessions
    for node in two_nodes:
        wait_for(lambda: cluster_state(node)["shared"], "the nodes to share again")
    assert "shared counters" in cli(b.conf, "status").stdout
    close_all(alone[:CAP])  # a's sessions end; b's three still fill the shared cap
    time.sleep(0.5)
    assert connect(a)[1] == 421
    close_all(alone[CAP:])
    wait_for(lambda: len(held := fill(two_nodes)) == CAP and not close_all(held),
             "the shared cap again")


def test_failed_logins_and_outbound_messages_count_over_both_nodes(two_nodes):
    a, b = two_nodes
    for node in (a, b):
        cli(node.conf, "user", "add", BOB, "--password-stdin", input=PASSWORD + "\n")
        cli(node.conf, "limits", "set", "--user", USER, "--messages", "3", "--interval", "3600")
    assert [send(node, USER) for node in (a, b, a, b)] == [250, 250, 250, 451]

    codes = [smtp_auth(node, "wrong", source=ATTACKER) for node in (a, a, a, b)]
    assert codes[:3] == [535, 535, 535] and codes[3] in (421, 535)
    assert smtp_auth(b, PASSWORD, source=ATTACKER) == 421  # blocked on B after failing on A
    assert smtp_auth(a, PASSWORD, source=ATTACKER) == 421
    listed = cli(b.conf, "abuse", "list").stdout
    assert ATTACKER in listed
    assert smtp_auth(b, PASSWORD) == 235  # others go on

