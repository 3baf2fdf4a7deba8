"""The shared counters against a real Valkey/Redis: a dead node's sessions stop counting once
its heartbeat TTL runs out, and a node whose hash is gone registers its live sessions again."""

from __future__ import annotations

import asyncio

import pytest
import redis

from mailforge.ratekeeper import shared
from mailforge.ratekeeper.cluster import ClusteredKeeper
from mailforge.ratekeeper.counters import OpenVerdict
from tests.redis_server import redis_server  # noqa: F401  (a fixture)

IP = "192.0.2.7"


def node(url: str, name: str, live: dict) -> shared.SharedCounters:
    return shared.SharedCounters(url, name, lambda: live, dict)


def test_a_dead_nodes_sessions_expire_with_its_heartbeat(redis_server, monkeypatch):  # noqa: F811
    monkeypatch.setattr(shared, "NODE_TTL", 1)

    async def scenario() -> list[OpenVerdict | None]:
        dead = node(redis_server.url, "dead", {("smtp", IP): 2})
        alive = node(redis_server.url, "alive", {})
        assert await dead.register() and await alive.register()
        verdicts = [await alive.open("smtp", IP, 0, 3), await alive.open("smtp", IP, 0, 3)]
        await asyncio.sleep(1.3)  # "dead" never renews; "alive" would, here by hand:
        await alive.register()
        await alive.open("smtp", IP, 0, 3)
        verdicts.append(await alive.open("smtp", IP, 0, 3))
        await dead.close()
        await alive.close()
        return verdicts

    assert asyncio.run(scenario()) == [OpenVerdict.OK, OpenVerdict.IP_FULL, OpenVerdict.OK]
    assert redis.Redis.from_url(redis_server.url).smembers("mailforge:nodes") == {b"alive"}


def test_a_node_whose_hash_is_lost_registers_its_sessions_again(redis_server):  # noqa: F811
    async def scenario() -> OpenVerdict | None:
        counters = node(redis_server.url, "a", {("smtp", IP): 1})
        assert await counters.register()
        redis.Redis.from_url(redis_server.url).flushall()  # as a restart without persistence
        verdict = await counters.open("smtp", IP, 0, 1)  # the live session counts again
        await counters.close()
        return verdict

    assert asyncio.run(scenario()) is OpenVerdict.IP_FULL


# Registering while this node's sessions come and go: whatever the order, the node's hash in
# the server ends as its own live counts.

OTHER_IP = "192.0.2.8"
ROUND_TRIP = 0.1  # ample for a call to the local server to come back


class Worker:
    """The owner of sessions: one worker's connection to the rate-keeper."""


class HeldRegisters:
    """Holds each REGISTER call where it would go to the server, its snapshot already taken,
    until the test lets it go: the window where opens and closes race a register."""

    def __init__(self, counters: shared.SharedCounters) -> None:
        self._send = counters._scripts["REGISTER"]
        counters._scripts["REGISTER"] = self._held
        self.arrived = asyncio.Event()
        self.gates: list[asyncio.Event] = []

    async def _held(self, **call: object) -> object:
        gate = asyncio.Event()
        self.gates.append(gate)
        self.arrived.set()
        await gate.wait()
        return await self._send(**call)


def node_hash(url: str, name: str) -> dict[str, str]:
    return redis.Redis.from_url(url, decode_responses=True).hgetall(
        f"{shared.KEY_PREFIX}conn:{name}")


@pytest.mark.parametrize("shared_before", [True, False], ids=["re-register", "server-back"])
def test_an_open_and_a_close_while_a_register_is_on_its_way_count_once(
        redis_server, shared_before):  # noqa: F811
    # re-register: the node shares, and registers again (its hash was lost); server-back: the
    # node counted alone, and registers as the server answers again.
    async def scenario() -> dict[tuple[str, str], int]:
        keeper = ClusteredKeeper(redis_server.url, "a")
        if shared_before:
            assert await keeper.shared.register()
        leaving, staying = Worker(), Worker()
        assert await keeper.open(leaving, "smtp", IP, 0, 0) is OpenVerdict.OK
        held = HeldRegisters(keeper.shared)
        registering = asyncio.ensure_future(keeper.shared.register())
        await held.arrived.wait()  # its snapshot holds IP's session, not OTHER_IP's
        opening = asyncio.ensure_future(keeper.open(staying, "smtp", OTHER_IP, 0, 0))
        await asyncio.sleep(ROUND_TRIP)  # for the open to reach the server, unless held back
        keeper.close(leaving, "smtp", IP)
        await asyncio.sleep(ROUND_TRIP)  # and the release
        held.gates[0].set()
        assert await registering
        assert await opening is OpenVerdict.OK
        await asyncio.gather(*keeper._tasks)  # the releases
        await keeper.stop()
        return keeper.connections.live()

    assert asyncio.run(scenario()) == {("smtp", OTHER_IP): 1}
    assert node_hash(redis_server.url, "a") == {"_node": "1", "smtp": "1",
                                                f"smtp\t{OTHER_IP}": "1"}


def test_opens_that_find_the_hash_gone_register_it_once(redis_server):  # noqa: F811
    async def scenario() -> dict[tuple[str, str], int]:
        keeper = ClusteredKeeper(redis_server.url, "a")
        assert await keeper.shared.register()
        redis.Redis.from_url(redis_server.url).flushall()  # as a restart without persistence
        held = HeldRegisters(keeper.shared)
        opening = [asyncio.ensure_future(keeper.open(Worker(), "smtp", ip, 0, 0))
                   for ip in (IP, OTHER_IP)]  # each is told "unregistered"
        await held.arrived.wait()
        await asyncio.sleep(ROUND_TRIP)  # for the other to register as well, if it would
        held.gates[0].set()
        done, pending = await asyncio.wait(opening, return_when=asyncio.FIRST_COMPLETED)
        for gate in held.gates[1:]:  # that REGISTER's snapshot is older than `done`'s count
            gate.set()
        assert [task.result() for task in done] + [await task for task in pending] == [
            OpenVerdict.OK] * 2
        await keeper.stop()
        return keeper.connections.live()

    assert asyncio.run(scenario()) == {("smtp", IP): 1, ("smtp", OTHER_IP): 1}
    assert node_hash(redis_server.url, "a") == {"_node": "1", "smtp": "2", f"smtp\t{IP}": "1",
                                                f"smtp\t{OTHER_IP}": "1"}
