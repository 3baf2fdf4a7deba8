"""[cluster] validation, the node name's default, and the password kept out of status."""

from __future__ import annotations

import pytest

from mailforge import config as configuration
from mailforge.errors import ConfigError
from mailforge.ratekeeper.shared import masked


def test_redis_must_be_a_redis_url():
    with pytest.raises(ConfigError, match=r"\[cluster\] redis.*redis://"):
        configuration.from_dict({"cluster": {"redis": "10.0.0.20:6379"}})


def test_tls_is_none_or_starttls_and_starttls_needs_a_ca_file():
    assert configuration.Config().cluster.tls == "none"  # existing configs keep a plain link
    with pytest.raises(ConfigError, match=r"\[cluster\] tls: expected one of none, starttls"):
        configuration.from_dict({"cluster": {"tls": "yes"}})
    with pytest.raises(ConfigError, match=r"\[cluster\] tls_ca_file: .*needs the CA file"):
        configuration.from_dict({"cluster": {"tls": "starttls"}})
    config = configuration.from_dict({"cluster": {"tls": "starttls", "tls_ca_file": "ca.pem"}})
    assert (config.cluster.tls, config.cluster.tls_ca_file) == ("starttls", "ca.pem")


def test_node_defaults_to_the_hostname_and_init_writes_the_keys():
    config = configuration.from_dict({"server": {"hostname": "mx1.example.test"},
                                      "cluster": {"redis": "redis://10.0.0.20:6379/0"}})
    assert config.node_name == "mx1.example.test"
    rendered = configuration.render_toml(configuration.Config())
    assert 'node = ""' in rendered and 'tls = "none"' in rendered and 'tls_ca_file = ""' in rendered


def test_the_password_is_never_shown():
    assert masked("redis://:s3cret@10.0.0.20:6379/0") == "redis://***@10.0.0.20:6379/0"
    assert masked("redis://10.0.0.20:6379") == "redis://10.0.0.20:6379"
    assert masked("unix:///run/valkey.sock?db=1&password=s3cret") == "unix:///run/valkey.sock?db=1&password=***"
    assert masked("rediss://u:p@h:6380/0?password=s3cret") == "rediss://***@h:6380/0?password=***"
