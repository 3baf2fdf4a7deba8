"""The rate-keeper over a real Unix socket: `serve` runs in a forked child, as in production."""

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import stat
import time

import msgpack
import pytest

from mailforge.ratekeeper import client as client_module
from mailforge.ratekeeper.abuse import Thresholds
from mailforge.ratekeeper import server
from mailforge.ratekeeper.client import RateKeeperClient, query_stats
from mailforge.ratekeeper.server import RateKeeper

FORK = multiprocessing.get_context("fork")


def wait_until(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def start(path):
    proc = FORK.Process(target=server.serve, args=(path,), daemon=True)
    proc.start()
    wait_until(lambda: query_stats(path) is not None)
    return proc


def stop(proc):
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGTERM)
    proc.join(3)
    return proc.exitcode


def smtp_stats(path):
    return query_stats(path)["connections"].get("smtp")


@pytest.fixture
def path(tmp_path):
    return tmp_path / "rk.sock"


@pytest.fixture
def keeper(path):
    proc = start(path)
    yield proc
    stop(proc)


def call_raw(sock, request):
    sock.sendall(msgpack.packb(request))
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        unpacker.feed(sock.recv(65536))
        for reply in unpacker:
            return reply


def raw_socket(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(2)
    sock.connect(str(path))
    return sock


# --- the operation table, without IO ------------------------------------------------------

@pytest.mark.parametrize("request_, error", [
    ([1, "nope"], "unknown operation 'nope'"),
    ([1, 7], "unknown operation 7"),
    ([1, "open", "smtp", "1.2.3.4", 1], "open: expected 4 arguments, got 3"),
    ([1, "open", "smtp", "1.2.3.4", True, 1], "open: argument 3 must be int, got bool"),
    ([1, "close", "smtp", 5], "close: argument 2 must be str, got int"),
    ([1, "open", "smtp", "1.2.3.4", -1, 0], "open: limits must be 0 (unlimited) or more"),
])
def test_bad_requests_get_an_error_reply(request_, error):
    assert RateKeeper().handle("w", request_) == (1, {"error": error})


@pytest.mark.parametrize("request_", [5, "open", [], [1], {"a": 1}])
def test_requests_that_are_not_a_list_get_an_error_without_id(request_):
    req_id, result = RateKeeper().handle("w", request_)
    assert req_id is None and "error" in result


def test_operation_table_reaches_the_counters():
    keeper = RateKeeper()
    assert keeper.handle("w", [1, "open", "smtp", "1.2.3.4", 1, 0]) == (1, "ok")
    assert keeper.handle("w", [2, "open", "smtp", "1.2.3.5", 1, 0]) == (2, "service_full")
    assert keeper.handle("w", [None, "close", "smtp", "1.2.3.4"]) == (None, None)
    _, stats = keeper.handle("w", ["s", "stats"])
    assert stats["connections"]["smtp"]["connections"] == 0


# --- the process ----------------------------------------------------------------------------

def test_socket_is_private_and_stale_one_replaced_and_sigterm_exits_cleanly(path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # left behind by a rate-keeper that died
    stale.close()
    proc = start(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stop(proc) == 0
    assert not path.exists()


def test_refuses_to_delete_a_file_that_is_not_a_socket(path):
    path.write_text("not mine")
    proc = FORK.Process(target=server.serve, args=(path,))
    proc.start()
    proc.join(3)
    assert proc.exitcode != 0
    assert path.read_text() == "not mine"


def test_exits_when_its_parent_changes(path, monkeypatch):
    monkeypatch.setattr(server, "PARENT_POLL_INTERVAL", 0.02)

    def orphan_a_rate_keeper():
        FORK.Process(target=server.serve, args=(path,)).start()
        wait_until(path.exists)
        os._exit(0)

    middle = FORK.Process(target=orphan_a_rate_keeper)
    middle.start()
    middle.join(3)
    wait_until(lambda: not path.exists())


def test_two_workers_share_one_cap(keeper, path):
    async def scenario():
        w1, w2 = RateKeeperClient(path), RateKeeperClient(path)
        assert await w1.open_session("smtp", "10.0.0.1", 3, 2) == "ok"
        assert await w2.open_session("smtp", "10.0.0.1", 3, 2) == "ok"
        assert await w1.open_session("smtp", "10.0.0.1", 3, 2) == "ip_full"
        assert await w2.open_session("smtp", "10.0.0.2", 3, 2) == "ok"
        assert await w1.open_session("smtp", "10.0.0.3", 3, 2) == "service_full"
        await w2.close_session("smtp", "10.0.0.1")
        # A close is sent without waiting for an answer, on w2's connection: w1's next request
        # may be read first. Wait until the rate-keeper has it.
        deadline = time.monotonic() + 3
        while smtp_stats(path)["connections"] != 2:
            assert time.monotonic() < deadline, "the close never arrived"
            await asyncio.sleep(0.01)
        assert await w1.open_session("smtp", "10.0.0.1", 3, 2) == "ok"
        await w1.close()
        await w2.close()

    asyncio.run(scenario())
    wait_until(lambda: smtp_stats(path)["connections"] == 0)
    assert smtp_stats(path)["refused"] == {"service_full": 1, "ip_full": 1, "blocked": 0}


def test_many_requests_in_flight_on_one_connection(keeper, path):
    async def scenario():
        client = RateKeeperClient(path)
        results = await asyncio.gather(
            *(client.open_session("smtp", f"10.0.{i % 7}.1", 100, 0) for i in range(300)))
        assert results.count("ok") == 100 and results.count("service_full") == 200
        await client.close()

    asyncio.run(scenario())


def test_a_killed_worker_releases_its_counts(keeper, path):
    ready = FORK.Event()

    def worker():
        async def hold():
            client = RateKeeperClient(path)
            for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
                assert await client.open_session("smtp", ip, 0, 0) == "ok"
            ready.set()
            await asyncio.sleep(60)
        asyncio.run(hold())

    proc = FORK.Process(target=worker)
    proc.start()
    assert ready.wait(3)
    assert smtp_stats(path)["connections"] == 3
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(3)
    wait_until(lambda: smtp_stats(path)["connections"] == 0)
    assert smtp_stats(path)["ips"] == 0


def test_rate_keeper_down_means_ok_with_one_warning(path, caplog):
    async def scenario():
        client = RateKeeperClient(path)
        for _ in range(5):
            assert await client.open_session("smtp", "10.0.0.1", 1, 1) == "ok"
        await client.close_session("smtp", "10.0.0.1")
        await client.close()

    with caplog.at_level(logging.WARNING, logger="mailforge.ratekeeper"):
        asyncio.run(scenario())
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1


def test_client_reconnects_after_a_restart(path):
    async def scenario():
        proc = start(path)
        client = RateKeeperClient(path)
        assert await client.open_session("smtp", "10.0.0.1", 1, 0) == "ok"
        assert await client.open_session("smtp", "10.0.0.1", 1, 0) == "service_full"
        stop(proc)
        assert await client.open_session("smtp", "10.0.0.1", 1, 0) == "ok"  # fail safe
        proc = start(path)
        # The new rate-keeper's counters are fresh: once reconnected, one "ok" fills the cap.
        deadline = time.monotonic() + 3
        while await client.open_session("smtp", "10.0.0.1", 1, 0) != "service_full":
            assert time.monotonic() < deadline, "never reconnected"
            await asyncio.sleep(0.01)
        await client.close()
        stop(proc)

    asyncio.run(scenario())


def test_a_wedged_rate_keeper_is_dropped_and_sessions_let_in(path, monkeypatch):
    monkeypatch.setattr(client_module, "STALL_CHECK_INTERVAL", 0.05)
    wedged = socket.socket(socket.AF_UNIX)
    wedged.bind(str(path))
    wedged.listen()  # connections complete in the backlog; nothing ever answers

    async def scenario():
        client = RateKeeperClient(path)
        started = time.monotonic()
        assert await client.open_session("smtp", "10.0.0.1", 1, 1) == "ok"
        assert time.monotonic() - started < 1
        await client.close()

    with wedged:
        asyncio.run(scenario())


def test_bad_requests_do_not_close_the_connection(keeper, path):
    with raw_socket(path) as sock:
        assert call_raw(sock, [1, "frobnicate"]) == [1, {"error": "unknown operation 'frobnicate'"}]
        sock.sendall(msgpack.packb("hello"))  # no req_id to answer to: logged, not answered
        assert call_raw(sock, [2, "open", "smtp", "10.0.0.1", 0, 0]) == [2, "ok"]


def test_garbage_closes_only_the_sender(keeper, path):
    async def scenario():
        client = RateKeeperClient(path)
        assert await client.open_session("smtp", "10.0.0.1", 0, 0) == "ok"
        with raw_socket(path) as bad:
            bad.sendall(msgpack.packb([1, "open", "smtp", "10.0.0.9", 0, 0]))
            bad.sendall(b"\xc1\xc1\xc1 this is not msgpack")  # 0xc1 is never valid
            assert msgpack.unpackb(bad.recv(100)) == [1, "ok"]
            bad.settimeout(2)
            assert bad.recv(100) == b""  # closed by the rate-keeper
        assert await client.open_session("smtp", "10.0.0.2", 0, 0) == "ok"
        await client.close()

    asyncio.run(scenario())
    wait_until(lambda: smtp_stats(path)["connections"] == 0)


def test_query_stats_is_none_when_nobody_listens(path):
    assert query_stats(path, timeout=0.2) is None


def test_failures_reported_by_two_workers_add_up_to_one_block(keeper, path):
    thresholds = Thresholds(window=60.0, tarpit_after=1, tarpit_delay=0.5, tarpit_max=2.0,
                            block_after=4, block_time=30.0)

    async def scenario():
        w1, w2 = RateKeeperClient(path), RateKeeperClient(path)
        verdicts = [await (w1 if i % 2 else w2).report_failure("10.0.0.9", "pop3", "failed login", thresholds)
                    for i in range(4)]
        assert verdicts[:3] == [(0.0, 0.0), (0.5, 0.0), (1.0, 0.0)]
        assert verdicts[3][1] == 30.0
        assert await w1.open_session("pop3", "10.0.0.9", 0, 0) == "blocked"
        assert await w2.open_session("pop3", "10.0.0.10", 0, 0) == "ok"
        await w1.close()
        await w2.close()

    asyncio.run(scenario())


def test_a_failure_reported_while_the_rate_keeper_is_down_costs_nothing(tmp_path):
    async def scenario():
        client = RateKeeperClient(tmp_path / "absent.sock")
        thresholds = Thresholds(60.0, 0, 1.0, 1.0, 1, 30.0)
        assert await client.report_failure("10.0.0.1", "smtp", "failed login", thresholds) == (0.0, 0.0)
        await client.close()

    asyncio.run(scenario())


def test_destination_slots_are_shared_and_wait_for_one_to_free(keeper, path, monkeypatch):
    """Two delivery workers' slots to one destination: the second waits while the first holds
    the last one, gets it once given back, and gives up (to defer) after its wait."""
    from mailforge.queue import outbound
    from mailforge.queue.outbound import DestinationSlots

    monkeypatch.setattr(outbound, "SLOT_POLL", (0.01, 0.05))

    async def main():
        first = DestinationSlots(RateKeeperClient(path), limit=1)
        second = DestinationSlots(RateKeeperClient(path), limit=1)
        assert await first.take("mx.remote.test", wait=0.0)
        assert not await second.take("mx.remote.test", wait=0.2)
        assert await second.take("other.test", wait=0.0)  # per destination
        waiting = asyncio.ensure_future(second.take("mx.remote.test", wait=5.0))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await first.give_back("mx.remote.test")
        assert await asyncio.wait_for(waiting, 2.0)
        await first.close()
        await second.close()

    asyncio.run(main())
