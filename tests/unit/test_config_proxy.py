"""[service] proxy_protocol and [server] proxy_trusted validation."""

from __future__ import annotations

import tomllib

import pytest

from mailforge import config as configuration
from mailforge.errors import ConfigError


def test_proxy_protocol_needs_trusted_balancers():
    with pytest.raises(ConfigError, match=r"\[smtp\] proxy_protocol.*proxy_trusted"):
        configuration.from_dict({"smtp": {"proxy_protocol": True}})


def test_proxy_trusted_must_be_networks():
    with pytest.raises(ConfigError, match=r"\[server\] proxy_trusted.*'lb.example' is not a network"):
        configuration.from_dict({"server": {"proxy_trusted": ["lb.example"]}})


def test_proxy_settings_round_trip_through_init_output():
    config = configuration.from_dict({"server": {"proxy_trusted": ["10.0.0.0/24"]},
                                      "pop3": {"proxy_protocol": True, "listen": ["127.0.0.1:2110"]}})
    again = configuration.from_dict(tomllib.loads(configuration.render_toml(config)))
    assert again.pop3.proxy_protocol and again.server.proxy_trusted == ["10.0.0.0/24"]
    assert "proxy_protocol = false" in configuration.render_toml(configuration.Config())
