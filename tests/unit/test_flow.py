"""Backpressure's decisions (queue/flow.py), sample by sample, and the queue's measure of itself."""

from __future__ import annotations

import logging
import os

import pytest

from mailforge.config import Config, QueueConfig, from_dict, render_toml
from mailforge.errors import ConfigError
from mailforge.process import board
from mailforge.process.flowmonitor import FlowMonitor
from mailforge.queue import flow
from mailforge.queue.flow import FlowControl, FlowLimits, FlowState, QueueUsage, resolve_limits
from mailforge.queue.spool import ACTIVE, queue_usage

LIMITS = FlowLimits(max_messages=100, max_bytes=10_000, backlog=10, delay=1.0)


def states(samples: list[tuple[int, int]], limits: FlowLimits = LIMITS) -> list[str]:
    control = FlowControl(limits)
    result = []
    for messages, size in samples:
        control.update(QueueUsage(messages, size))
        result.append(control.state.label)
    return result


def test_a_queue_under_its_backlog_flows_however_fast_it_grows():
    assert states([(0, 0), (5, 50), (9, 90)]) == ["flowing"] * 3


def test_past_the_backlog_mail_is_delayed_while_the_queue_grows_and_level():
    assert states([(10, 0), (20, 0), (20, 0), (30, 0), (25, 0), (26, 0)]) == [
        "flowing", "delaying", "delaying", "delaying", "flowing", "delaying"]


def test_no_delay_configured_means_never_delaying():
    no_delay = FlowLimits(100, 10_000, backlog=10, delay=0.0)
    assert states([(10, 0), (20, 0), (30, 0)], no_delay) == ["flowing"] * 3


@pytest.mark.parametrize("over", [(100, 0), (0, 10_000)])
def test_either_limit_refuses_until_the_queue_is_back_under_90_percent_of_both(over):
    assert states([over, (95, 0), (89, 9_500), (89, 8_999)]) == [
        "refusing", "refusing", "refusing", "flowing"]


def test_update_says_when_the_state_changed():
    control = FlowControl(LIMITS)
    changes = [control.update(QueueUsage(n, 0)) for n in (0, 20, 30, 150, 160, 10)]
    assert changes == [False, True, False, True, False, True]


def statvfs(free_blocks: int, block: int, files: int, free_files: int) -> os.statvfs_result:
    return os.statvfs_result((block, block, 0, 0, free_blocks, files, 0, free_files, 0, 255))


def test_limits_left_at_zero_come_from_the_disk():
    disk = statvfs(free_blocks=4_000_000, block=4096, files=1_000_000, free_files=60_000)
    limits = resolve_limits(QueueConfig(), disk)
    assert limits.max_messages == 30_000  # half the free inodes: fewer than the default
    assert limits.max_bytes == 4_000_000 * 4096 // 4
    assert (limits.backlog, limits.delay) == (1000, 1.0)


def test_a_disk_without_an_inode_table_and_a_nearly_full_one_get_sane_limits():
    limits = resolve_limits(QueueConfig(), statvfs(10, 4096, files=0, free_files=0))
    assert limits.max_messages == flow.DEFAULT_MAX_MESSAGES
    assert limits.max_bytes == flow.MIN_DERIVED_BYTES


def test_configured_limits_are_kept():
    queue = QueueConfig(max_messages=20, max_bytes=5000, in_flow_delay=0.0, in_flow_backlog=3)
    assert resolve_limits(queue, statvfs(10, 4096, 100, 50)) == FlowLimits(20, 5000, 3, 0.0)


def test_queue_usage_counts_entries_and_segment_records_and_their_bytes(tmp_path):
    active = tmp_path / ACTIVE
    active.mkdir()
    (active / "a.msg").write_bytes(b"x" * 300)
    (active / "a.env").write_bytes(b"e" * 40)
    (active / "s1.25.seg").write_bytes(b"s" * 1000)
    (active / "stray.tmp").write_bytes(b"t" * 7)
    assert queue_usage(tmp_path) == QueueUsage(messages=26, bytes=1300)


@pytest.mark.parametrize("key", ["in_flow_delay", "in_flow_backlog", "max_messages", "max_bytes"])
def test_negative_queue_settings_are_refused_naming_the_key(key):
    with pytest.raises(ConfigError, match=rf"\[queue\] {key}"):
        from_dict({"queue": {key: -1}})


def test_init_writes_the_queue_section():
    assert "[queue]\nin_flow_delay = 1.0\nin_flow_backlog = 1000\nmax_messages = 0\n" \
        "max_bytes = 0\n" in render_toml(Config())


@pytest.fixture
def shared_board():
    board.open_board()
    yield
    board.publish_flow_state(FlowState.FLOWING)  # other tests' SMTP sessions read it


def test_the_monitor_publishes_each_change_once_and_logs_it_once(tmp_path, shared_board, caplog):
    caplog.set_level(logging.INFO)
    config = from_dict({"queue": {"max_messages": 10, "in_flow_backlog": 2}})
    config.path = tmp_path / "mailforge.toml"
    samples = iter([QueueUsage(n, 0) for n in (3, 4, 5, 12, 13, 11, 3)])
    now = 100.0
    monitor = FlowMonitor(config, lambda queue_dir: next(samples), lambda: now)
    seen = []
    for _ in range(7):
        monitor.sample(now)
        seen.append(board.flow_state().label)
        assert monitor.sample(now) is None and monitor.next_sample > now  # not due again yet
        now = monitor.next_sample
    assert seen == ["flowing", "delaying", "delaying", "refusing", "refusing", "refusing",
                    "flowing"]
    changes = [r.getMessage() for r in caplog.records if "queue flow:" in r.getMessage()]
    assert len(changes) == 3 and "refusing new mail (451 4.3.1): 12 messages" in changes[1]
    assert monitor.status(now)["state"] == "flowing" and monitor.status(now)["messages"] == 3
