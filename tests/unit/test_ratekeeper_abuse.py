"""The failure counters by themselves, on a fake clock (no sleeping)."""

import pytest

from mailforge.ratekeeper.abuse import FailureCounters, Thresholds, client_key
from mailforge.ratekeeper.server import RateKeeper

LOGIN = "failed login"
POLICY = Thresholds(window=60.0, tarpit_after=3, tarpit_delay=1.0, tarpit_max=4.0,
                    block_after=10, block_time=300.0)


@pytest.fixture
def counters(clock) -> FailureCounters:
    return FailureCounters(clock)


def test_the_tarpit_starts_after_the_free_failures_and_grows_to_its_ceiling(counters):
    delays = [counters.record("10.0.0.1", POLICY, "smtp", LOGIN)[0] for _ in range(9)]
    assert delays == [0, 0, 0, 1, 2, 3, 4, 4, 4]


def test_the_block_comes_at_exactly_block_after_failures(counters):
    verdicts = [counters.record("10.0.0.1", POLICY, "smtp", LOGIN)[1] for _ in range(10)]
    assert verdicts == [0.0] * 9 + [300.0]
    assert counters.blocked_for("10.0.0.1") == 300.0
    assert counters.blocked_for("10.0.0.2") == 0.0
    assert counters.snapshot()["blocks"] == 1


def test_a_block_ends_and_the_address_starts_afresh(counters, clock):
    for _ in range(10):
        counters.record("10.0.0.1", POLICY, "smtp", LOGIN)
    clock.now += 299
    assert counters.blocked_for("10.0.0.1") == pytest.approx(1.0)
    clock.now += 1
    assert counters.blocked_for("10.0.0.1") == 0.0
    assert counters.record("10.0.0.1", POLICY, "smtp", LOGIN) == (0.0, 0.0)


def test_failures_older_than_the_window_are_forgotten(counters, clock):
    for _ in range(9):
        counters.record("10.0.0.1", POLICY, "smtp", LOGIN)
        clock.now += 7  # 9 failures over 63 s: never 10 within 60 s
    assert counters.record("10.0.0.1", POLICY, "smtp", LOGIN)[1] == 0.0


def test_block_after_zero_never_blocks(counters):
    never = Thresholds(60.0, 3, 1.0, 4.0, 0, 300.0)
    assert all(counters.record("10.0.0.1", never, "smtp", LOGIN)[1] == 0.0 for _ in range(100))


def test_an_ipv6_client_is_counted_per_64_and_a_mapped_ipv4_as_itself(counters):
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    for i in range(10):
        counters.record(f"2001:db8:1:2::{i + 1:x}", POLICY, "smtp", LOGIN)
    assert counters.blocked_for("2001:db8:1:2:ffff::9") == 300.0
    assert counters.blocked_for("2001:db8:1:3::1") == 0.0


def test_the_table_forgets_quiet_addresses(counters, clock):
    for i in range(2000):
        counters.record(f"10.1.{i // 250}.{i % 250}", POLICY, "smtp", LOGIN)
    clock.now += 61
    for i in range(1100):
        counters.record("10.9.9.9", Thresholds(60.0, 3, 1.0, 4.0, 0, 300.0), "smtp", LOGIN)
    assert counters.snapshot()["tracked"] < 100


def test_the_rate_keeper_refuses_connections_from_a_blocked_address(clock):
    keeper = RateKeeper(clock)
    args = [60.0, 3, 1.0, 4.0, 2, 300.0]
    assert keeper.handle("w1", [1, "fail", "10.0.0.1", "smtp", LOGIN, *args]) == (1, [0.0, 0.0])
    assert keeper.handle("w2", [2, "fail", "10.0.0.1", "pop3", LOGIN, *args]) == (2, [0.0, 300.0])
    assert keeper.handle("w3", [3, "open", "smtp", "10.0.0.1", 0, 0]) == (3, "blocked")
    assert keeper.handle("w3", [4, "open", "pop3", "10.0.0.2", 0, 0]) == (4, "ok")
    assert keeper.handle("w3", [5, "stats"])[1]["abuse"]["blocked_now"] == 1
    assert "error" in keeper.handle("w1", [6, "fail", "10.0.0.1", "smtp", LOGIN, 60, 3, 1.0, 4.0, 2, 300.0])[1]


def test_without_blocks_the_tarpit_still_grows_and_the_record_stays_small(counters):
    never = Thresholds(60.0, 1, 0.5, 2.0, 0, 300.0)
    delays = [counters.record("10.0.0.1", never, "smtp", LOGIN)[0] for _ in range(1000)]
    assert delays[:6] == [0, 0.5, 1.0, 1.5, 2.0, 2.0]
    assert set(delays[5:]) == {2.0}
    assert never.saturation == 5


def block(counters, ip: str, service: str = "smtp", what: str = LOGIN) -> None:
    for _ in range(POLICY.block_after):
        counters.record(ip, POLICY, service, what)


def test_a_block_says_where_the_failures_came_from_and_what_they_were(counters, clock):
    for i in range(POLICY.block_after):
        what = LOGIN if i < 7 else "unknown local recipient"
        counters.record("10.0.0.1", POLICY, ("smtp", "imap")[i % 2], what)
        clock.now += 1
    (address, earned), = counters.blocked().items()
    assert address == "10.0.0.1"
    assert earned.services == ("imap", "smtp") and earned.failures == 10
    assert earned.why == "7 failed logins, 3 unknown local recipients in 60 s"
    assert (earned.since, earned.until) == (clock.now - 1, clock.now - 1 + 300.0)
    clock.now += 300
    assert counters.blocked() == {}  # ended: no longer listed


def test_unblock_lifts_one_block_and_forgets_its_failures(counters):
    block(counters, "10.0.0.1")
    block(counters, "10.0.0.2")
    assert counters.unblock("10.0.0.3") == []
    assert counters.unblock("10.0.0.1") == ["10.0.0.1"]
    assert counters.blocked_for("10.0.0.1") == 0.0
    # Afresh: its next failure is a first one, answered at once.
    assert counters.record("10.0.0.1", POLICY, "smtp", LOGIN) == (0.0, 0.0)
    assert list(counters.blocked()) == ["10.0.0.2"]
    assert counters.snapshot()["blocked_now"] == 1


def test_unblock_of_an_ipv6_address_lifts_its_64(counters):
    block(counters, "2001:db8:1:2::1")
    assert counters.unblock("2001:db8:1:2::99") == ["2001:db8:1:2::/64"]


def test_unblock_all(counters):
    block(counters, "10.0.0.1")
    block(counters, "2001:db8::1")
    counters.record("10.0.0.3", POLICY, "smtp", LOGIN)  # failing, not blocked: not "lifted"
    assert sorted(counters.unblock_all()) == ["10.0.0.1", "2001:db8::/64"]
    assert counters.snapshot()["tracked"] == 0


def test_newly_exempt_networks_lift_the_blocks_they_cover(counters):
    for ip in ("10.0.0.1", "10.0.1.1", "192.0.2.7", "2001:db8::1"):
        block(counters, ip)
    assert sorted(counters.exempt(["10.0.0.0/24", "2001:db8::5/128"])) == ["10.0.0.1", "2001:db8::/64"]
    assert sorted(counters.blocked()) == ["10.0.1.1", "192.0.2.7"]
    with pytest.raises(ValueError):
        counters.exempt([5])


def test_the_rate_keeper_lists_and_lifts_blocks(clock):
    keeper = RateKeeper(clock)
    args = [60.0, 3, 1.0, 4.0, 2, 300.0]
    keeper.handle("w1", [1, "fail", "10.0.0.1", "smtp", LOGIN, *args])
    keeper.handle("w1", [2, "fail", "10.0.0.1", "pop3", LOGIN, *args])
    clock.now += 100
    assert keeper.handle("w1", [3, "blocked_for", "10.0.0.1"]) == (3, 200.0)
    assert keeper.handle("cli", [4, "blocks"]) == (4, [{
        "address": "10.0.0.1", "services": ["pop3", "smtp"], "failures": 2, "since": -100.0,
        "until": 200.0, "why": "2 failed logins in 60 s"}])
    assert keeper.handle("cli", [5, "exempt", ["192.0.2.0/24"]]) == (5, [])
    assert "error" in keeper.handle("cli", [6, "exempt", ["not a network"]])[1]
    assert keeper.handle("cli", [7, "unblock", "10.0.0.1"]) == (7, ["10.0.0.1"])
    assert keeper.handle("w3", [8, "open", "smtp", "10.0.0.1", 0, 0]) == (8, "ok")
    assert keeper.handle("cli", [9, "unblock_all"]) == (9, [])
