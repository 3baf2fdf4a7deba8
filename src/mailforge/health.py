"""/health for a load balancer's checks (HAProxy's `option httpchk GET /health`): 200 "ok"
while this node serves, 503 and a one-line reason while it starts or stops.

A PostgreSQL accounts database that does not answer makes the answer 200 "degraded: …", not
503: every node shares that database, so a failing check would take them all out of the
balancer at once, and clients would meet refused connections instead of the temporary
answers the node gives meanwhile (`454 4.7.0`, `-ERR [SYS/TEMP]`, `NO [UNAVAILABLE]`).
Monitoring reads the reason from the body.

Whether the node serves is asked at every check (it is the supervisor's own state, and a
node that stops must leave the balancer at once: its listeners are closed already). The
database is asked at most once a second, in the background: a check never waits for it, since
a new PostgreSQL connection on busy cores can take longer than the balancer's check timeout
(HAProxy then takes the node out, though the answer would have been 200).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import NamedTuple

# How long the database's answer stands: several balancers checking every few hundred
# milliseconds cost it one query a second.
CACHE_SECONDS = 1.0


class Answer(NamedTuple):
    serving: bool  # 200 when true, else 503
    text: str  # one line: "ok", "degraded: why", or why the node does not serve


def in_a_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="health-accounts", daemon=True).start()


class Health:
    def __init__(self, serving_problem: Callable[[], str | None],
                 accounts_problem: Callable[[], str | None],
                 clock: Callable[[], float] = time.monotonic,
                 in_background: Callable[[Callable[[], None]], None] = in_a_thread) -> None:
        """`serving_problem`: why the node does not serve now (None when it does);
        `accounts_problem`: why the accounts database does not answer (None when it does),
        asked through `in_background`."""
        self._serving_problem = serving_problem
        self._accounts_problem = accounts_problem
        self._clock = clock
        self._in_background = in_background
        self._lock = threading.Lock()  # checks arrive on several threads
        self._accounts_answer: str | None = None  # until the first answer: no news is good
        self._expires = float("-inf")
        self._asking = False

    def answer(self) -> Answer:
        serving_problem = self._serving_problem()
        if serving_problem:
            return Answer(False, serving_problem)
        self._refresh_accounts_when_due()
        accounts_problem = self._accounts_answer
        return Answer(True, f"degraded: {accounts_problem}" if accounts_problem else "ok")

    def _refresh_accounts_when_due(self) -> None:
        with self._lock:
            now = self._clock()
            due = now >= self._expires and not self._asking
            if due:
                self._asking, self._expires = True, now + CACHE_SECONDS
        if due:
            self._in_background(self._ask_accounts)

    def _ask_accounts(self) -> None:
        try:
            self._accounts_answer = self._accounts_problem()
        finally:
            self._asking = False
