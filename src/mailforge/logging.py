"""Log output for `mailforge serve`: text or JSON lines, to stderr, a file under log/, or syslog.

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
import sys
from pathlib import Path
from typing import Any

LOG_FILE = "mailforge.log"
SYSLOG_SOCKET = "/dev/log"
TEXT_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"
FORMATS = ("text", "json")
TARGETS = ("stderr", "file", "syslog")
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
    handler = _handler(target, log_dir, owner)
    if target == "syslog":
        # syslog stamps time and host itself; the tag names the program and pid.
        handler.setFormatter(JSONFormatter() if log_format == "json" else
                             TextFormatter("mailforge[%(process)d]: %(name)s %(levelname)s %(message)s"))
    else:
        handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())


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
