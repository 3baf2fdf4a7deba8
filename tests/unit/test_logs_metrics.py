"""Pure parts of logging and metrics: reply codes, formatters, config keys, the off switch."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from mailforge import config as configuration
from mailforge import metrics
from mailforge.errors import ConfigError
from mailforge.logging import JSONFormatter, TextFormatter
from mailforge.protocols.connection.record import (COMMAND_BATCH, ServiceMeters, SessionRecord,
                                                   reply_code)


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


AGGREGATION = r'''
import os, sys
from pathlib import Path
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from mailforge import metrics

data_dir = Path(sys.argv[1])
directory = metrics.make_directory("metrics", data_dir)
metrics.enable(directory)
pids = []
for n in (3, 4):
    pid = os.fork()
    if pid == 0:
        metrics.claim_process_files()
        received = metrics.child("messages_received_total", service="smtp")
        for _ in range(n):
            received.inc()
        metrics.inc("connections_current", service="smtp")
        metrics.observe("delivery_latency_seconds", 0.2, via="local")
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)

def sample(name, **labels):
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(directory))
    return registry.get_sample_value(name, labels) or 0.0

assert sample("mailforge_messages_received_total", service="smtp") == 7
assert not list(directory.glob(f"*_{os.getpid()}.db"))  # the parent wrote nothing
assert all((directory / f"counter_{pid}.db").stat().st_blocks * 512 >= metrics.PROCESS_FILE_SIZE
           for pid in pids)  # every block reserved
assert sample("mailforge_delivery_latency_seconds_count", via="local") == 2
assert sample("mailforge_connections_current", service="smtp") == 2
metrics.mark_dead(pids[0])
assert sample("mailforge_connections_current", service="smtp") == 1
assert sample("mailforge_messages_received_total", service="smtp") == 7  # counters stay
again = metrics.make_directory("metrics", data_dir)  # a new start leaves the old values
assert not directory.exists() and again.parent == directory.parent
print("ok")
'''


def test_values_of_forked_processes_are_summed(tmp_path):
    """In a fresh interpreter: enable() changes process-wide prometheus-client state."""
    result = subprocess.run([sys.executable, "-c", AGGREGATION, str(tmp_path / "metrics")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


class _Value:
    def __init__(self) -> None:
        self.total = 0.0

    def inc(self, amount: float = 1) -> None:
        self.total += amount


def test_commands_reach_the_counters_in_batches_and_at_the_end(caplog):
    meters = ServiceMeters("smtp")
    meters.ok, meters.error = _Value(), _Value()
    record = SessionRecord(meters, "192.0.2.1")
    record.opened(tls=False)
    for n in range(COMMAND_BATCH + 5):
        record.command("500 5.5.2" if n % 10 == 0 else None)
    assert (meters.ok.total, meters.error.total) == (COMMAND_BATCH - 4, 4)
    with caplog.at_level(logging.INFO, logger="mailforge.session"):
        record.closed(bytes_in=120, bytes_out=3400)
    assert (meters.ok.total, meters.error.total) == (COMMAND_BATCH + 1, 4)
    assert (record.commands, record.errors) == (COMMAND_BATCH + 5, 4)
    ending = caplog.records[-1]
    assert ending.getMessage() == "disconnect"
    assert {key: ending.fields[key] for key in ("commands", "errors", "bytes_in", "bytes_out")} == {
        "commands": COMMAND_BATCH + 5, "errors": 4, "bytes_in": 120, "bytes_out": 3400}


def test_imap_error_codes_are_the_tagged_status_only():
    from mailforge.protocols.connection.record import imap_error_code
    assert imap_error_code(b"a1 OK LOGIN completed\r\n") is None
    assert imap_error_code(b"* 3 EXISTS\r\na2 NO [AUTHENTICATIONFAILED] Authentication failed\r\n") == (
        "NO [AUTHENTICATIONFAILED]")
    assert imap_error_code(b"a3 BAD Unknown command\r\n") == "BAD"
    assert imap_error_code(b"+ Ready for literal data\r\n") is None
    assert imap_error_code(b"") is None
