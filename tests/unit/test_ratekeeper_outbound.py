"""The outbound message counters on a fake clock, and the limits in the accounts database."""

import pytest

from mailforge.auth.accounts import Accounts
from mailforge.auth.api import SendLimit, SendStatus
from mailforge.errors import UsageError
from mailforge.ratekeeper.outbound import SendCounters


def test_a_sender_gets_exactly_its_count_then_one_event(clock):
    counters = SendCounters(clock)
    results = [counters.take("a@x.test", 3, 60.0, commit=True) for _ in range(6)]
    assert results == [(True, False)] * 3 + [(False, True)] + [(False, False)] * 2
    assert counters.take("b@x.test", 3, 60.0, commit=True) == (True, False)


def test_a_check_without_commit_counts_nothing(clock):
    counters = SendCounters(clock)
    assert all(counters.take("a@x.test", 1, 60.0, commit=False)[0] for _ in range(5))
    assert counters.take("a@x.test", 1, 60.0, commit=True) == (True, False)
    assert counters.take("a@x.test", 1, 60.0, commit=False) == (False, True)


def test_the_window_slides_and_a_new_event_follows_a_new_refusal(clock):
    counters = SendCounters(clock)
    for _ in range(2):
        counters.take("a@x.test", 2, 60.0, commit=True)
        clock.now += 20
    assert counters.take("a@x.test", 2, 60.0, commit=True) == (False, True)
    clock.now += 21  # the first send (at 1000) is out of the window
    assert counters.take("a@x.test", 2, 60.0, commit=True) == (True, False)
    assert counters.take("a@x.test", 2, 60.0, commit=True) == (False, True)


def test_a_lowered_limit_applies_at_once(clock):
    counters = SendCounters(clock)
    for _ in range(5):
        counters.take("a@x.test", 10, 60.0, commit=True)
    assert counters.take("a@x.test", 2, 60.0, commit=True)[0] is False


@pytest.fixture
def accounts(tmp_path):
    with Accounts(tmp_path / "accounts.sqlite3", create=True) as db:
        for domain in ("a.test", "b.test"):
            db.directory.domain_add(domain)
        for user in ("u1@a.test", "u2@a.test", "u3@b.test"):
            db.directory.user_add(user, "pw")
        yield db


def test_user_beats_domain_beats_system(accounts):
    accounts.send_limits.limit_set(SendLimit("system", "", 100, 3600, "throttle"))
    accounts.send_limits.limit_set(SendLimit("domain", "a.test", 50, 3600, "throttle"))
    accounts.send_limits.limit_set(SendLimit("user", "u1@a.test", 5, 60, "disable"))
    assert accounts.send_limits.send_status("u1@a.test") == SendStatus(
        False, SendLimit("user", "u1@a.test", 5, 60, "disable"))
    assert accounts.send_limits.send_status("u2@a.test").limit.scope == "domain"
    assert accounts.send_limits.send_status("u3@b.test").limit.scope == "system"


def test_resets_clear_the_levels_below(accounts):
    accounts.send_limits.limit_set(SendLimit("system", "", 100, 3600, "throttle"))
    accounts.send_limits.limit_set(SendLimit("domain", "a.test", 50, 3600, "throttle"))
    accounts.send_limits.limit_set(SendLimit("user", "u1@a.test", 5, 60, "throttle"))
    accounts.send_limits.limit_set(SendLimit("user", "u3@b.test", 7, 60, "throttle"))
    assert accounts.send_limits.limit_reset("domain", "a.test") == 1
    assert accounts.send_limits.send_status("u1@a.test").limit.scope == "domain"
    assert accounts.send_limits.send_status("u3@b.test").limit.scope == "user"
    assert accounts.send_limits.limit_reset("system") == 2
    assert [limit.scope for limit in accounts.send_limits.limits()] == ["system"]


def test_disable_for_sending_is_lifted_by_user_enable(accounts):
    accounts.send_limits.send_disable("u1@a.test")
    assert accounts.send_limits.send_status("u1@a.test").disabled
    assert accounts.credentials.check_password("u1@a.test", "pw")  # reading mail still works
    accounts.directory.user_enable("u1@a.test")
    assert not accounts.send_limits.send_status("u1@a.test").disabled


def test_no_limit_for_unknown_senders_and_without_settings(accounts):
    assert accounts.send_limits.send_status("u1@a.test") == SendStatus(False, None)
    accounts.send_limits.limit_set(SendLimit("domain", "b.test", 5, 60, "throttle"))
    assert accounts.send_limits.send_status("u1@a.test") == SendStatus(False, None)
    assert accounts.send_limits.send_status("nobody@b.test").limit.scope == "domain"
    assert accounts.send_limits.send_status("nobody@c.test") == SendStatus(False, None)


def test_bad_limits_are_refused(accounts):
    with pytest.raises(UsageError):
        accounts.send_limits.limit_set(SendLimit("domain", "nowhere.test", 5, 60, "throttle"))
    with pytest.raises(UsageError):
        accounts.send_limits.limit_set(SendLimit("user", "u1@a.test", 0, 60, "throttle"))
    with pytest.raises(UsageError):
        accounts.send_limits.limit_set(SendLimit("user", "u1@a.test", 5, 60, "explode"))
