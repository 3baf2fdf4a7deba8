import pytest

from mailforge.ratekeeper.counters import ConnectionCounters, OpenVerdict


@pytest.fixture
def counters(clock) -> ConnectionCounters:
    return ConnectionCounters(clock=clock)


def test_service_cap_holds_across_owners(counters):
    assert counters.open("w1", "smtp", "10.0.0.1", 2, 0) == OpenVerdict.OK
    assert counters.open("w2", "smtp", "10.0.0.2", 2, 0) == OpenVerdict.OK
    assert counters.open("w1", "smtp", "10.0.0.3", 2, 0) == OpenVerdict.SERVICE_FULL
    assert counters.snapshot()["smtp"]["connections"] == 2


def test_per_ip_cap_and_other_ips_unaffected(counters):
    assert counters.open("w1", "smtp", "10.0.0.1", 0, 1) == OpenVerdict.OK
    assert counters.open("w2", "smtp", "10.0.0.1", 0, 1) == OpenVerdict.IP_FULL
    assert counters.open("w2", "smtp", "10.0.0.2", 0, 1) == OpenVerdict.OK


def test_services_are_counted_apart(counters):
    assert counters.open("w1", "smtp", "10.0.0.1", 1, 1) == OpenVerdict.OK
    assert counters.open("w1", "submission", "10.0.0.1", 1, 1) == OpenVerdict.OK
    assert counters.open("w1", "smtp", "10.0.0.1", 1, 1) == OpenVerdict.SERVICE_FULL


def test_zero_means_unlimited(counters):
    for _ in range(500):
        assert counters.open("w1", "smtp", "10.0.0.1", 0, 0) == OpenVerdict.OK
    assert counters.snapshot()["smtp"] == {
        "connections": 500, "ips": 1, "refused": {"service_full": 0, "ip_full": 0, "blocked": 0}}


def test_service_full_wins_when_both_caps_are_reached(counters):
    counters.open("w1", "smtp", "10.0.0.1", 1, 1)
    assert counters.open("w1", "smtp", "10.0.0.1", 1, 1) == OpenVerdict.SERVICE_FULL


def test_refusals_are_counted_but_not_the_sessions(counters):
    counters.open("w1", "smtp", "10.0.0.1", 2, 1)
    counters.open("w1", "smtp", "10.0.0.1", 2, 1)
    counters.open("w1", "smtp", "10.0.0.2", 2, 1)
    counters.open("w1", "smtp", "10.0.0.3", 2, 1)
    assert counters.snapshot() == {"smtp": {
        "connections": 2, "ips": 2, "refused": {"service_full": 1, "ip_full": 1, "blocked": 0}}}


def test_close_frees_a_slot_and_forgets_idle_ips(counters):
    counters.open("w1", "smtp", "10.0.0.1", 1, 0)
    counters.close("w1", "smtp", "10.0.0.1")
    assert counters.snapshot()["smtp"]["connections"] == 0
    assert counters.snapshot()["smtp"]["ips"] == 0
    assert counters.open("w2", "smtp", "10.0.0.2", 1, 0) == OpenVerdict.OK


def test_close_of_a_session_never_counted_changes_nothing(counters):
    counters.open("w1", "smtp", "10.0.0.1", 0, 0)
    counters.close("w2", "smtp", "10.0.0.1")  # another owner's session
    counters.close("w1", "smtp", "10.0.0.9")  # never opened
    counters.close("w1", "pop3", "10.0.0.1")  # unknown service
    assert counters.snapshot()["smtp"]["connections"] == 1
    counters.close("w1", "smtp", "10.0.0.1")
    counters.close("w1", "smtp", "10.0.0.1")  # twice
    assert counters.snapshot()["smtp"]["connections"] == 0


def test_drop_owner_releases_everything_it_held(counters):
    for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        counters.open("dead", "smtp", ip, 3, 2)
    counters.open("dead", "imap", "10.0.0.1", 0, 0)
    counters.open("alive", "smtp", "10.0.0.1", 0, 0)
    counters.drop_owner("dead")
    assert counters.snapshot()["smtp"]["connections"] == 1
    assert counters.snapshot()["smtp"]["ips"] == 1
    assert counters.snapshot()["imap"]["connections"] == 0
    counters.drop_owner("dead")  # idempotent
    counters.drop_owner("never-seen")
    assert counters.open("alive", "smtp", "10.0.0.1", 3, 2) == OpenVerdict.OK


def test_counts_do_not_depend_on_time(counters, clock):
    counters.open("w1", "smtp", "10.0.0.1", 1, 1)
    clock.now += 86_400
    assert counters.open("w1", "smtp", "10.0.0.1", 1, 1) == OpenVerdict.SERVICE_FULL


def test_negative_limits_are_rejected(counters):
    with pytest.raises(ValueError):
        counters.open("w1", "smtp", "10.0.0.1", -1, 0)
    assert counters.snapshot() == {}


def test_a_blocked_address_is_refused_and_counted(counters):
    assert counters.open("w1", "smtp", "10.0.0.1", 0, 0, blocked=True) == "blocked"
    assert counters.snapshot()["smtp"]["refused"]["blocked"] == 1
    assert counters.snapshot()["smtp"]["connections"] == 0
