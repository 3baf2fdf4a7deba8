"""[server] recipient_delimiter and [delivery] quota_full_bounce_after validation."""

from __future__ import annotations

import pytest

from mailforge import config as configuration
from mailforge.errors import ConfigError


@pytest.mark.parametrize("delimiter", ["+", "+-", ""])
def test_recipient_delimiters_that_a_local_part_can_hold(delimiter):
    assert configuration.from_dict(
        {"server": {"recipient_delimiter": delimiter}}).server.recipient_delimiter == delimiter


@pytest.mark.parametrize("delimiter", ["@", " ", "x", '"'])
def test_recipient_delimiters_that_cannot_work_are_refused(delimiter):
    with pytest.raises(ConfigError, match=r"\[server\] recipient_delimiter.*each character"):
        configuration.from_dict({"server": {"recipient_delimiter": delimiter}})


def test_quota_full_bounce_after_must_be_positive():
    with pytest.raises(ConfigError, match=r"\[delivery\] quota_full_bounce_after.*greater than 0"):
        configuration.from_dict({"delivery": {"quota_full_bounce_after": 0}})
