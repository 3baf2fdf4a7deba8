"""The worker's bounded thread pool for blocking work (disk, password hashing), with a cheap
way back to the event loop.

`loop.run_in_executor` on a ThreadPoolExecutor costs ~33 µs of CPU per call: a
concurrent.futures.Future (with its own Condition), a Python-level semaphore on either side of
the job and a second future chained to it. An IMAP session hops to the pool for nearly every
command, so that was a tenth of an IMAP worker's CPU under imaptest. `run` here costs ~8 µs:
the job goes on a SimpleQueue and its outcome comes back with one call_soon_threadsafe onto
the loop's own future. `submit` keeps the Executor interface for the callers that block on
a result (the spool's group commit, run_in_executor elsewhere).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

Job = Callable[[], None]


class WorkerPool(concurrent.futures.Executor):
    """At most `max_threads` threads, started as jobs find none of them idle."""

    def __init__(self, max_threads: int, name: str) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self.max_threads = max_threads
        self._name = name
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def threads(self) -> int:
        return len(self._threads)

    @property
    def queued(self) -> int:
        """Jobs waiting for a thread (approximate: the queue's own count)."""
        return self._jobs.qsize()

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` on a pool thread; its result, or its exception raised here."""
        loop = asyncio.get_running_loop()
        outcome = loop.create_future()

        def job() -> None:
            try:
                result = function(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                _settle_soon(loop, outcome, _fail, exc)
            else:
                _settle_soon(loop, outcome, _succeed, result)

        self._put(job)
        return await outcome

    def submit(self, fn: Callable[..., T], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - kept in the future
                future.set_exception(exc)

        self._put(job)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more jobs; those queued still run (cancel_futures is not supported), then the
        threads end."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _put(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            if self._idle == 0 and len(self._threads) < self.max_threads:
                thread = threading.Thread(target=self._serve, daemon=True,
                                          name=f"{self._name}_{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
            elif self._idle:
                self._idle -= 1  # this job takes an idle thread
            # else every thread is busy and the pool is full: the job waits its turn
        self._jobs.put(job)

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()
            del job  # drop the job's references (its result) before waiting again
            with self._lock:
                self._idle += 1


def _settle_soon(loop: asyncio.AbstractEventLoop, outcome: asyncio.Future,
                 settle: Callable[[asyncio.Future, Any], None], value: Any) -> None:
    try:
        loop.call_soon_threadsafe(settle, outcome, value)
    except RuntimeError:
        pass  # the loop is closed: nobody waits for this any more


def _succeed(outcome: asyncio.Future, result: Any) -> None:
    if not outcome.done():  # cancelled while the job ran
        outcome.set_result(result)


def _fail(outcome: asyncio.Future, exc: BaseException) -> None:
    if not outcome.done():
        outcome.set_exception(exc)
