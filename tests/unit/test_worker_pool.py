import asyncio
import threading
import time

import pytest
import uvloop

from mailforge.process.pool import WorkerPool


def test_run_gives_back_the_result_or_the_exception_on_the_loop():
    pool = WorkerPool(2, name="test")

    async def main() -> None:
        loop_thread = threading.get_ident()
        total, ran_in = await pool.run(lambda a, b: (a + b, threading.get_ident()), 2, 3)
        assert total == 5 and ran_in != loop_thread
        with pytest.raises(ZeroDivisionError):
            await pool.run(lambda: 1 / 0)

    try:
        uvloop.run(main())
    finally:
        pool.shutdown()


def test_never_more_threads_than_the_bound_and_idle_threads_are_reused():
    pool = WorkerPool(3, name="test")
    running, most = 0, 0
    lock = threading.Lock()

    def busy() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    async def main() -> None:
        await asyncio.gather(*(pool.run(busy) for _ in range(12)))
        for _ in range(5):
            await pool.run(busy)  # one at a time: a thread already there takes each

    try:
        uvloop.run(main())
        assert most == 3 and pool.threads == 3 and pool.queued == 0
    finally:
        pool.shutdown()


def test_a_job_whose_waiter_was_cancelled_settles_nothing():
    pool = WorkerPool(1, name="test")
    release = threading.Event()

    async def main() -> None:
        waiter = asyncio.ensure_future(pool.run(release.wait))
        await asyncio.sleep(0.01)
        waiter.cancel()
        release.set()
        assert await pool.run(lambda: "next") == "next"  # the pool goes on; nothing raised
        assert waiter.cancelled()

    try:
        uvloop.run(main())
    finally:
        pool.shutdown()


def test_submit_and_map_keep_the_executor_interface_and_shutdown_refuses_more():
    pool = WorkerPool(2, name="test")
    assert pool.submit(pow, 2, 10).result(timeout=5) == 1024
    assert list(pool.map(abs, [-1, -2, 3])) == [1, 2, 3]
    failing = pool.submit(int, "x")
    with pytest.raises(ValueError):
        failing.result(timeout=5)
    pool.shutdown(wait=True)
    assert pool.threads == 2
    with pytest.raises(RuntimeError):
        pool.submit(abs, 1)
