"""The console's services form against the config file (config_edit.py): a change keeps every
comment and the order, is refused with check-config's own line when invalid (and then nothing
is written), and reaches only the sections the console may change; and [admin]'s own rules."""

from __future__ import annotations

import os
import stat

import pytest

from mailforge import config as configuration, config_edit
from mailforge.errors import ConfigError

COMMENTED = """# operator's note: keep IMAP small
[imap]
listen = ["127.0.0.1:2143"]  # loopback only
max_connections = 1000

[server]
hostname = "mx.example.test"
"""


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "mailforge.toml"
    path.write_text(COMMENTED)
    path.chmod(0o640)
    return path


def test_a_change_keeps_comments_order_and_mode(conf):
    config_edit.update(conf, "imap", {"max_connections": 5, "idle_timeout": 60.0})
    text = conf.read_text()
    assert text.startswith("# operator's note: keep IMAP small\n[imap]\n")
    assert 'listen = ["127.0.0.1:2143"]  # loopback only' in text
    assert "max_connections = 5" in text and "idle_timeout = 60.0" in text
    assert configuration.load(conf).imap.max_connections == 5
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o640


@pytest.mark.parametrize("section, values, message", [
    ("imap", {"max_connections": "abc"}, r"\[imap\] max_connections: expected an integer, got 'abc'"),
    ("imap", {"workers": 0}, r"\[imap\] workers: must be at least 1"),
    ("imap", {"listen": ["nowhere"]}, r"\[imap\] listen: expected host:port"),
    ("server", {"user": "root"}, r"\[server\]: not a section the console may change"),
    ("imap", {"bogus": 1}, r"\[imap\] bogus: unknown key"),
    # A reload refuses to switch it: written, it would not take effect until a restart.
    ("imap", {"reuse_port": True}, r"\[imap\] reuse_port: unknown key"),
    ("relay", {"mode": "wide-open"}, r"\[relay\] mode: expected one of"),
])
def test_an_invalid_change_says_what_check_config_says_and_writes_nothing(conf, section, values, message):
    with pytest.raises(ConfigError, match=message) as caught:
        config_edit.update(conf, section, values)
    assert str(caught.value).startswith(str(conf))  # the file, then the key, as check-config
    assert conf.read_text() == COMMENTED


def test_form_text_becomes_the_keys_type(conf):
    config = configuration.load(conf)
    assert config_edit.form_value("imap", "max_connections", " 7 ") == 7
    assert config_edit.form_value("imap", "idle_timeout", "30") == 30.0
    assert config_edit.form_value("imap", "listen", "127.0.0.1:1, 127.0.0.1:2") == ["127.0.0.1:1", "127.0.0.1:2"]
    assert config_edit.form_value("imap", "proxy_protocol", "on") is True
    assert config_edit.form_value("imap", "workers", "two") == "two"  # left for validation to name
    fields = config_edit.form_fields(config, "imap")
    assert fields["listen"] == "127.0.0.1:2143" and fields["proxy_protocol"] == "off"
    # Only what differs from the config in force is sent; an unticked box is "off".
    changed = config_edit.changed_fields(config, "imap", {**fields, "max_connections": "3"})
    assert changed == {"max_connections": "3"}


@pytest.mark.parametrize("listen, ok", [(["127.0.0.1:8080"], True), (["[::1]:8080"], True),
                                        (["localhost:8080"], True), (["0.0.0.0:8080"], False),
                                        (["*:8080"], False), (["192.0.2.1:8080"], False)])
def test_plain_http_for_the_console_only_on_loopback(listen, ok):
    raw = {"admin": {"listen": listen, "allow_plain_http": True}}
    if ok:
        assert configuration.from_dict(raw).admin.allow_plain_http
    else:
        with pytest.raises(ConfigError, match=r"\[admin\] allow_plain_http: plain HTTP only on loopback"):
            configuration.from_dict(raw)


def test_the_console_is_off_unless_listen_names_an_address_and_init_writes_every_key():
    config = configuration.Config()
    assert "admin" not in config.services()
    rendered = configuration.render_toml(config)
    for key in ("allow_plain_http", "session_lifetime", "max_connections_per_ip"):
        assert key in rendered.split("[admin]")[1].split("\n[")[0]


def test_autologout_timers_are_as_long_as_the_rfcs_ask_unless_set():
    """RFC 1939 3: POP3's at least 10 minutes; RFC 3501 5.4: IMAP's at least 30."""
    defaults = configuration.Config()
    assert min(defaults.pop3.idle_timeout, defaults.pop3s.idle_timeout) >= 600
    assert min(defaults.imap.idle_timeout, defaults.imaps.idle_timeout) >= 1800
    assert configuration.from_dict({"imap": {"idle_timeout": 60}}).imap.idle_timeout == 60
