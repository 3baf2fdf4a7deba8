"""Log output for `mailforge serve`: text or JSON lines, to stderr, a file under log/, or syslog
(or stderr and the file both); and the way back, for `mailforge logs`: which logger and
service wrote a line of the file.

Set up in the supervisor before any fork, so every child writes through the same handler.
Files: one `log/mailforge.log` shared by all processes, opened in append mode, each record one
write(); a WatchedFileHandler reopens it when logrotate has moved it away. Size-based rotation
from inside (RotatingFileHandler) is not safe with several processes: each would rotate on
its own and lose the others' lines.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOG_FILE = "mailforge.log"
SYSLOG_SOCKET = "/dev/log"
TEXT_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"
FORMATS = ("text", "json")
# "stderr+file": the terminal and log/mailforge.log both, as `init` sets up for a server run by
# hand (`make run`): the operator watches the terminal, and `mailforge logs` reads the file.
TARGETS = ("stderr", "file", "syslog", "stderr+file")
LEVELS = ("debug", "info", "warning", "error")


class TextFormatter(logging.Formatter):
    """The message, then the record's fields as key=value (session events)."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{key}={_text(value)}" for key, value in fields.items()
                                   if value is not None and key != "event")
        return line


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or " " in text or '"' in text) else text


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(), "logger": record.name, "pid": record.process,
            "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update((k, v) for k, v in fields.items() if v is not None)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(log_format: str, target: str, level: str, log_dir: Path,
              owner: tuple[int, int] | None = None) -> None:
    """Route the root logger; `owner` gets the log file, so workers can reopen it after logrotate."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    for destination in target.split("+"):
        handler = _handler(destination, log_dir, owner)
        handler.setFormatter(_formatter(log_format, destination))
        root.addHandler(handler)
    root.setLevel(level.upper())


def _formatter(log_format: str, destination: str) -> logging.Formatter:
    if log_format == "json":
        return JSONFormatter()
    if destination == "syslog":
        # syslog stamps time and host itself; the tag names the program and pid.
        return TextFormatter("mailforge[%(process)d]: %(name)s %(levelname)s %(message)s")
    return TextFormatter()


def _handler(target: str, log_dir: Path, owner: tuple[int, int] | None) -> logging.Handler:
    if target == "file":
        log_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        path = log_dir / LOG_FILE
        handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        os.chmod(path, 0o640)
        if owner:
            os.chown(path, *owner)
        return handler
    if target == "syslog":
        return logging.handlers.SysLogHandler(
            address=SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_MAIL)
    return logging.StreamHandler(sys.stderr)


# ---- reading log/mailforge.log back (`mailforge logs`) ------------------------------------

# What `mailforge logs --service` picks by: a service's name matches its sessions' lines (their
# `service` field); the name after "mailforge." in a logger's name matches that logger's lines.
SERVICE_NAMES = ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps")
LOGGER_NAMES = ("supervisor", "worker", "delivery", "queue", "ratekeeper", "abuse", "limits",
                "accounts", "store", "metrics", "proxy", "session", "smtp", "pop3", "imap",
                "dkim", "admin")
SOURCES = tuple(dict.fromkeys(SERVICE_NAMES + LOGGER_NAMES))
# TEXT_FORMAT's start: the time, then "logger[pid] LEVEL ". A line without it continues the
# record above (a traceback).
_TEXT_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<logger>\S+)\[\d+\] [A-Z]+ ")
_TEXT_SERVICE = re.compile(r" service=(?P<service>\S+)")


@dataclass(frozen=True)
class LineSource:
    """Who wrote a record: its logger, and the `service` field of a session's record."""

    logger: str
    service: str | None

    def is_from(self, name: str) -> bool:
        component = self.logger.split(".")[1] if self.logger.startswith("mailforge.") else ""
        return name in (component, self.service)


def line_source(line: str) -> LineSource | None:
    """The source of a record's first line, text or JSON; None for a line that continues one."""
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        if isinstance(entry, dict) and isinstance(entry.get("logger"), str):
            service = entry.get("service")
            return LineSource(entry["logger"], service if isinstance(service, str) else None)
        return None
    start = _TEXT_START.match(line)
    if start is None:
        return None
    service = _TEXT_SERVICE.search(line, start.end())
    return LineSource(start["logger"], service["service"] if service else None)
