"""The shared counters against a real Valkey/Redis: a dead node's sessions stop counting once
its heartbeat TTL runs out, and a node whose hash is gone registers its live sessions again."""

from __future__ import annotations

import asyncio

import redis

from mailforge.ratekeeper import shared
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
