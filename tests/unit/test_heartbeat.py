import os
import time

from mailforge.process.heartbeat import Heartbeat


def test_creation_counts_as_a_beat_and_notify_moves_it_forward():
    heartbeat = Heartbeat()
    try:
        created = heartbeat.last_update()
        assert 0 <= time.monotonic() - created < 1.0
        time.sleep(0.01)
        heartbeat.notify()
        assert heartbeat.last_update() > created
        assert 0 <= heartbeat.silent_for() < 0.5
        assert heartbeat.silent_for(now=heartbeat.last_update() + 5) == 5
    finally:
        heartbeat.close()
    heartbeat.close()  # closing twice is harmless: the supervisor and cleanup may both do it


def test_a_forked_child_beat_is_seen_by_the_parent():
    heartbeat = Heartbeat()
    before = heartbeat.last_update()
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(0.05)
            heartbeat.notify()
        finally:
            os._exit(0)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert heartbeat.last_update() >= before + 0.05
    finally:
        heartbeat.close()
