"""health.Health: the first problem found, asked at most once a second."""

from __future__ import annotations

from mailforge.health import CACHE_SECONDS, Health


class Probe:
    def __init__(self, answer: str | None = None) -> None:
        self.answer = answer
        self.asked = 0

    def __call__(self) -> str | None:
        self.asked += 1
        return self.answer


def test_serving_comes_before_the_database_and_answers_are_cached_a_second():
    now = [100.0]
    serving, accounts = Probe("starting: no smtp worker serving yet"), Probe("database down")
    health = Health(serving, accounts, clock=lambda: now[0])
    assert health.problem() == "starting: no smtp worker serving yet"
    serving.answer = None
    assert health.problem() == "starting: no smtp worker serving yet"  # cached
    now[0] += CACHE_SECONDS
    assert health.problem() == "database down"
    accounts.answer = None
    now[0] += CACHE_SECONDS
    assert health.problem() is None
    assert health.problem() is None
    assert (serving.asked, accounts.asked) == (3, 2)
