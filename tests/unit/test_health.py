"""health.Health: not serving is 503 at once; a database that does not answer only degrades
the 200, and is asked at most once a second, never while a check waits."""

from __future__ import annotations

from collections.abc import Callable

from mailforge.health import CACHE_SECONDS, Answer, Health


class Probe:
    def __init__(self, answer: str | None = None) -> None:
        self.answer = answer
        self.asked = 0

    def __call__(self) -> str | None:
        self.asked += 1
        return self.answer


def at_once(work: Callable[[], None]) -> None:
    work()


def test_serving_is_asked_every_time_and_the_database_once_a_second():
    now = [100.0]
    serving, accounts = Probe("starting: no smtp worker serving yet"), Probe("database down")
    health = Health(serving, accounts, clock=lambda: now[0], in_background=at_once)
    assert health.answer() == Answer(False, "starting: no smtp worker serving yet")
    serving.answer = None
    # The database is every node's: it degrades the answer but keeps the node in the balancer.
    assert health.answer() == Answer(True, "degraded: database down")
    accounts.answer = None
    assert health.answer() == Answer(True, "degraded: database down")  # cached
    serving.answer = "stopping"
    assert health.answer() == Answer(False, "stopping")  # never cached: the node leaves now
    serving.answer = None
    now[0] += CACHE_SECONDS
    assert health.answer() == Answer(True, "ok")
    assert (serving.asked, accounts.asked) == (5, 2)


def test_a_check_never_waits_for_the_database_and_asks_it_once_at_a_time():
    now = [100.0]
    pending: list[Callable[[], None]] = []
    accounts = Probe("database down")
    health = Health(Probe(None), accounts, clock=lambda: now[0], in_background=pending.append)
    assert health.answer() == Answer(True, "ok")  # asked, not answered yet: no news
    now[0] += CACHE_SECONDS
    assert health.answer() == Answer(True, "ok")  # still asking: not asked twice
    assert len(pending) == 1
    pending.pop()()
    assert health.answer() == Answer(True, "degraded: database down")
    assert len(pending) == 1 and accounts.asked == 1  # due again: the next question is out
