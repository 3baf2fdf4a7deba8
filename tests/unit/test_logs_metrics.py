"""Pure parts of logging and metrics: reply codes, formatters, config keys, the off switch."""

from __future__ import annotations

import json
import logging

import pytest

from mailforge import config as configuration
from mailforge import metrics
from mailforge.errors import ConfigError
from mailforge.logging import JSONFormatter, TextFormatter
from mailforge.protocols.record import reply_code


@pytest.mark.parametrize("reply, code", [
    (b"535 5.7.8 Error: authentication failed\r\n", "535 5.7.8"),
    (b"500 5.5.2 Error: command not recognized\r\n", "500 5.5.2"),
    (b"421 mx.example.test Service not available\r\n", "421"),
    (b"-ERR [AUTH] Invalid login\r\n", "-ERR [AUTH]"),
    (b"-ERR no such message\r\n", "-ERR"),
    (b"334 dXNlcm5hbWU6\r\n", "334"),  # a challenge: only its code, never its payload
])
def test_reply_code_keeps_the_code_only(reply, code):
    assert reply_code(reply) == code


def _record(fields: dict | None) -> logging.LogRecord:
    record = logging.LogRecord("mailforge.session", logging.INFO, __file__, 1, "%s", ("login",), None)
    if fields is not None:
        record.fields = fields
    return record


def test_text_format_appends_fields_and_quotes_spaces():
    line = TextFormatter().format(_record({"event": "login", "session": "1a.2", "user": None,
                                           "reply": "-ERR [AUTH]"}))
    assert line.endswith(' INFO login session=1a.2 reply="-ERR [AUTH]"')
    assert "user=" not in line


def test_json_format_is_one_object_per_line():
    line = JSONFormatter().format(_record({"event": "login", "session": "1a.2", "user": "a@b.test"}))
    entry = json.loads(line)
    assert entry["message"] == "login" and entry["session"] == "1a.2" and entry["user"] == "a@b.test"
    assert entry["level"] == "info" and entry["logger"] == "mailforge.session" and "\n" not in line


def test_log_keys_are_validated_and_written_by_init():
    assert "[log]" in configuration.render_toml(configuration.Config())
    for key, bad in (("format", "xml"), ("target", "kafka"), ("level", "loud")):
        with pytest.raises(ConfigError, match=rf"\[log\] {key}"):
            configuration.from_dict({"log": {key: bad}})
    parsed = configuration.from_dict({"log": {"format": "json", "target": "syslog"}})
    assert (parsed.log.format, parsed.log.target) == ("json", "syslog")


def test_metrics_off_is_a_no_op():
    if metrics.enabled():
        pytest.skip("metrics were enabled by another test in this process")
    metrics.inc("messages_received_total", service="smtp")
    assert metrics.child("commands_total", service="smtp", outcome="ok") is metrics.OFF


def test_every_definition_names_a_known_kind():
    for name, definition in metrics.DEFINITIONS.items():
        assert definition.kind in ("counter", "gauge", "histogram"), name
        assert name.endswith("_total") == (definition.kind == "counter"), name
