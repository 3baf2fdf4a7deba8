"""The failure counters by themselves, on a fake clock (no sleeping)."""

import pytest

from mailforge.ratekeeper.abuse import FailureCounters, Thresholds, client_key
from mailforge.ratekeeper.server import RateKeeper

POLICY = Thresholds(window=60.0, tarpit_after=3, tarpit_delay=1.0, tarpit_max=4.0,
                    block_after=10, block_time=300.0)


@pytest.fixture
def counters(clock) -> FailureCounters:
    return FailureCounters(clock)


def test_the_tarpit_starts_after_the_free_failures_and_grows_to_its_ceiling(counters):
    delays = [counters.record("10.0.0.1", POLICY)[0] for _ in range(9)]
    assert delays == [0, 0, 0, 1, 2, 3, 4, 4, 4]


def test_the_block_comes_at_exactly_block_after_failures(counters):
    verdicts = [counters.record("10.0.0.1", POLICY)[1] for _ in range(10)]
    assert verdicts == [0.0] * 9 + [300.0]
    assert counters.blocked_for("10.0.0.1") == 300.0
    assert counters.blocked_for("10.0.0.2") == 0.0
    assert counters.snapshot()["blocks"] == 1


def test_a_block_ends_and_the_address_starts_afresh(counters, clock):
    for _ in range(10):
        counters.record("10.0.0.1", POLICY)
    clock.now += 299
    assert counters.blocked_for("10.0.0.1") == pytest.approx(1.0)
    clock.now += 1
    assert counters.blocked_for("10.0.0.1") == 0.0
    assert counters.record("10.0.0.1", POLICY) == (0.0, 0.0)


def test_failures_older_than_the_window_are_forgotten(counters, clock):
    for _ in range(9):
        counters.record("10.0.0.1", POLICY)
        clock.now += 7  # 9 failures over 63 s: never 10 within 60 s
    assert counters.record("10.0.0.1", POLICY)[1] == 0.0


def test_block_after_zero_never_blocks(counters):
    never = Thresholds(60.0, 3, 1.0, 4.0, 0, 300.0)
    assert all(counters.record("10.0.0.1", never)[1] == 0.0 for _ in range(100))


def test_an_ipv6_client_is_counted_per_64_and_a_mapped_ipv4_as_itself(counters):
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    for i in range(10):
        counters.record(f"2001:db8:1:2::{i + 1:x}", POLICY)
    assert counters.blocked_for("2001:db8:1:2:ffff::9") == 300.0
    assert counters.blocked_for("2001:db8:1:3::1") == 0.0


def test_the_table_forgets_quiet_addresses(counters, clock):
    for i in range(2000):
        counters.record(f"10.1.{i // 250}.{i % 250}", POLICY)
    clock.now += 61
    for i in range(1100):
        counters.record("10.9.9.9", Thresholds(60.0, 3, 1.0, 4.0, 0, 300.0))
    assert counters.snapshot()["tracked"] < 100


def test_the_rate_keeper_refuses_connections_from_a_blocked_address(clock):
    keeper = RateKeeper(clock)
    args = [60.0, 3, 1.0, 4.0, 2, 300.0]
    assert keeper.handle("w1", [1, "fail", "10.0.0.1", *args]) == (1, [0.0, 0.0])
    assert keeper.handle("w2", [2, "fail", "10.0.0.1", *args]) == (2, [0.0, 300.0])
    assert keeper.handle("w3", [3, "open", "smtp", "10.0.0.1", 0, 0]) == (3, "blocked")
    assert keeper.handle("w3", [4, "open", "pop3", "10.0.0.2", 0, 0]) == (4, "ok")
    assert keeper.handle("w3", [5, "stats"])[1]["abuse"]["blocked_now"] == 1
    assert "error" in keeper.handle("w1", [6, "fail", "10.0.0.1", 60, 3, 1.0, 4.0, 2, 300.0])[1]


def test_without_blocks_the_tarpit_still_grows_and_the_record_stays_small(counters):
    never = Thresholds(60.0, 1, 0.5, 2.0, 0, 300.0)
    delays = [counters.record("10.0.0.1", never)[0] for _ in range(1000)]
    assert delays[:6] == [0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert set(delays[5:]) == {2.0}
    assert never.saturation == 5
