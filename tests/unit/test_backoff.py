"""A delivery worker's pause after storage errors (queue/backoff.py), on a fake clock."""

from __future__ import annotations

import errno

import pytest

from mailforge.queue.backoff import StorageBackoff, storage_error


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pauses_double_to_30_s_only_errors_outside_a_pause_start_one_and_success_resets():
    clock = Clock()
    backoff = StorageBackoff(clock)
    started = []
    for _ in range(7):
        started.append(backoff.failed())
        assert backoff.paused() and not backoff.failed()  # the same scan: no new pause
        clock.now = backoff.until
        assert not backoff.paused()
    assert started == [True] * 7 and backoff.pause == 30 and backoff.errors == 14
    assert backoff.succeeded() and not backoff.succeeded()
    assert backoff.failed() and backoff.pause == 1


@pytest.mark.parametrize("code, storage", [(errno.ENOSPC, True), (errno.EDQUOT, True),
                                           (errno.EIO, True), (errno.EACCES, False)])
def test_storage_errors_are_the_file_systems(code, storage):
    assert storage_error(OSError(code, "x")) is storage
    assert not storage_error(ValueError("x"))
