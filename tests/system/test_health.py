"""/health on the metrics listener, over real HTTP (for HAProxy's `option httpchk`): 200 "ok"
while the node serves, 503 and the reason while its PostgreSQL accounts database is down, and
200 again once it is back."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.pg_cluster import start_cluster
from .conftest import free_port
from .test_accounts_postgresql import postgresql_settings
from .test_cluster_counters import wait_for


def health(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def cluster():
    instance = start_cluster()
    yield instance
    instance.remove()


def test_health_is_ok_while_serving_and_503_while_the_accounts_database_is_down(
        make_server, cluster):
    port = free_port()
    server = make_server(accounts=False, metrics={"listen": f"127.0.0.1:{port}"})
    server.reconfigure({"accounts": postgresql_settings(server, cluster)})
    server.start()
    wait_for(lambda: health(port) == (200, "ok\n"), "/health to say ok")
    assert "mailforge_processes" in urllib.request.urlopen(
        f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()  # still served

    cluster.stop()
    try:
        wait_for(lambda: health(port)[0] == 503, "/health to see the database down")
        reason = health(port)[1]
        assert reason.startswith("accounts database ") and "unavailable" in reason
        assert reason.count("\n") == 1 and "pg-test-password" not in reason
    finally:
        cluster.start()
    wait_for(lambda: health(port) == (200, "ok\n"), "/health to say ok again")
