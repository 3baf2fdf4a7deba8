"""`mailforge logs` reading log/mailforge.log back: records (a line and its traceback) found from
the end of the file, by service or logger, in both formats."""

from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path

import pytest

from mailforge import logging as logs
from mailforge.cli import logs as logs_cli

SRC = Path(logs.__file__).parent


def record(name: str, message: str, formatter: logging.Formatter, exc: bool = False, **fields) -> str:
    entry = logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)
    if fields:
        entry.fields = fields
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            entry.exc_info = sys.exc_info()
    return formatter.format(entry) + "\n"


@pytest.mark.parametrize("formatter", [logs.TextFormatter(), logs.JSONFormatter()], ids=["text", "json"])
def test_the_source_of_a_line_is_its_logger_and_service_field(formatter):
    session = logs.line_source(record("mailforge.session", "connect", formatter,
                                      session="1.1", service="pop3s", client="127.0.0.1"))
    assert session == logs.LineSource("mailforge.session", "pop3s")
    assert session.is_from("pop3s") and session.is_from("session") and not session.is_from("pop3")
    keeper = logs.line_source(record("mailforge.ratekeeper.server", "up", formatter))
    assert keeper.is_from("ratekeeper") and not keeper.is_from("supervisor")
    assert logs.line_source("Traceback (most recent call last):\n") is None


def test_records_keep_their_tracebacks_and_are_found_across_blocks(monkeypatch):
    monkeypatch.setattr(logs_cli, "BLOCK", 7)  # every line spans blocks
    text = logs.TextFormatter()
    lines = [record("mailforge.smtp", "one", text, service="smtp"),
             record("mailforge.delivery", "failed", text, exc=True),
             record("mailforge.session", "two", text, service="smtp"),
             record("mailforge.supervisor", "last", text)]
    assert lines[1].count("\n") > 3  # the traceback's lines
    log_file = io.BytesIO("".join(lines).encode())
    everything = logs_cli._selector(None)
    assert logs_cli.last_records(log_file, 10, everything) == [line.encode() for line in lines]
    assert log_file.tell() == len(log_file.getvalue())  # where following goes on
    assert logs_cli.last_records(log_file, 2, logs_cli._selector("smtp")) == [
        lines[0].encode(), lines[2].encode()]
    assert logs_cli.last_records(log_file, 1, logs_cli._selector("delivery")) == [lines[1].encode()]
    assert logs_cli.last_records(log_file, 0, everything) == []


def test_every_logger_of_the_server_can_be_picked():
    """A new `getLogger("mailforge.x")` must be added to logging.LOGGER_NAMES for `--service x`."""
    named = set()
    for path in SRC.rglob("*.py"):
        named.update(re.findall(r'getLogger\("mailforge\.(\w+)', path.read_text()))
        if re.search(r"getLogger\(__name__\)", path.read_text()):
            named.add(path.relative_to(SRC).parts[0].removesuffix(".py"))
    assert named <= set(logs.LOGGER_NAMES), named - set(logs.LOGGER_NAMES)
