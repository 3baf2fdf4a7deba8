"""[dns]: resolvers by address with an optional port, bounded times; `init` writes the keys."""

from __future__ import annotations

import pytest

from mailforge import config as configuration
from mailforge.config import parse_nameserver
from mailforge.errors import ConfigError


def test_nameservers_take_an_address_and_an_optional_port():
    assert parse_nameserver("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_nameserver("::1") == ("::1", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    loaded = configuration.from_dict({"dns": {"nameservers": ["127.0.0.1:5353"], "lifetime": 3}})
    assert loaded.dns.nameservers == ["127.0.0.1:5353"] and loaded.dns.lifetime == 3.0


@pytest.mark.parametrize("section, message", [
    ({"nameservers": ["dns.example.test"]}, "not an IP address"),
    ({"nameservers": ["127.0.0.1:99999"]}, "out of range"),
    ({"timeout": 0}, "greater than 0"),
    ({"lifetime": -1}, "greater than 0"),
])
def test_bad_dns_settings_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message) as caught:
        configuration.from_dict({"dns": section})
    assert "[dns]" in str(caught.value)


def test_init_writes_every_dns_key():
    text = configuration.render_toml(configuration.Config())
    assert "[dns]\nnameservers = []\ntimeout = 2.0\nlifetime = 5.0\n" in text
