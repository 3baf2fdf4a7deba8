"""Concurrent load, and crashes during it: nothing that got 250 is lost or delivered twice."""

import os
import signal
import time

import pytest

from .loadgen import delivered_ids, join, run_load


def assert_all_delivered(server, accepted: set[str], exactly_once: bool = True) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ids = delivered_ids(server.delivered())
        if accepted <= set(ids):
            break
        time.sleep(0.2)
    ids = delivered_ids(server.delivered())
    missing = accepted - set(ids)
    assert not missing, f"{len(missing)} accepted messages never delivered, e.g. {sorted(missing)[:3]}"
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    if exactly_once:
        assert set(ids) == accepted


@pytest.mark.slow
def test_two_workers_twenty_clients_500_each(make_server):
    server = make_server(smtp={"workers": 2}, delivery={"workers": 2})
    server.start()
    result, threads = run_load(server.port, clients=20, messages=500)
    join(threads)
    assert result.failed == 0 and len(result.accepted) == 20 * 500
    assert_all_delivered(server, result.accepted)


def test_kill_worker_during_load(make_server):
    server = make_server(smtp={"workers": 2})
    server.start()
    before = server.worker_pids()
    result, threads = run_load(server.port, clients=10, messages=150)
    time.sleep(0.5)
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pids = server.worker_pids()
        if before[0] not in pids and len(pids) == 2:
            break
        time.sleep(0.1)
    assert before[0] not in pids and len(pids) == 2, "killed worker was not replaced"
    join(threads)
    assert len(result.accepted) == 10 * 150
    assert_all_delivered(server, result.accepted, exactly_once=False)


def test_kill_whole_tree_then_restart(make_server):
    server = make_server(smtp={"workers": 2})
    server.start()
    result, threads = run_load(server.port, clients=10, messages=100000, timeout=1.5)
    time.sleep(1.0)
    server.kill_tree()
    join(threads)
    accepted = set(result.accepted)
    assert accepted, "no message was accepted before the kill"
    server.start()
    assert_all_delivered(server, accepted, exactly_once=False)
