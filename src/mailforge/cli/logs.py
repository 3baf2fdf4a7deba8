"""`mailforge logs [-f] [--service S] [-n N]`: the last records of log/mailforge.log, of one
service if asked, then with -f those written after them, through logrotate's moves (tail -F).

A record is its first line and the lines that continue it (a traceback), so a filter keeps or
drops a traceback with the line it belongs to, and -n counts records.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .. import logging as logs
from ..config import Config
from ..errors import EXIT_OK, UsageError

# As tail: enough to see what just happened, short enough for a terminal.
DEFAULT_RECORDS = 10
# How often a followed file is looked at for new lines, or for logrotate having moved it.
FOLLOW_INTERVAL = 0.25
# The file is read from its end in blocks of this size: its start may be gigabytes away.
BLOCK = 64 * 1024
_AFTER_NEWLINE = re.compile(rb"(?<=\n)")

Selector = Callable[[bytes], bool]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("logs", help="show the server's log file, log/mailforge.log")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="then print records as they are written, until interrupted")
    parser.add_argument("--service", choices=logs.SOURCES, metavar="S",
                        help="only records of this service (smtp, imap...: its sessions) or part "
                             f"of the server ({', '.join(logs.LOGGER_NAMES[:5])}...)")
    parser.add_argument("-n", "--lines", type=_record_count, default=DEFAULT_RECORDS, metavar="N",
                        help=f"how many of the last records to show (default {DEFAULT_RECORDS})")
    parser.set_defaults(handler=cmd_logs)


def _record_count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of records (0 or more), not {text!r}")
    return int(text)


def cmd_logs(args: argparse.Namespace, config: Config) -> int:
    path = config.log_dir / logs.LOG_FILE
    try:
        log_file = path.open("rb")
    except FileNotFoundError:
        raise UsageError(_why_no_file(config, path)) from None
    selected = _selector(args.service)
    out = sys.stdout.buffer
    with log_file:
        for record in last_records(log_file, args.lines, selected):
            out.write(record)
        out.flush()
        if args.follow:
            follow(path, log_file, selected, out)
    return EXIT_OK


def _why_no_file(config: Config, path: Path) -> str:
    target = config.log.target
    if "file" in target.split("+"):
        return f"{path} does not exist yet: the server has not logged since [log] target was set"
    return (f"{config.path}: [log] target = \"{target}\" writes no log file; set it to "
            "\"stderr+file\" (or \"file\") and restart the server to read its logs here")


def _selector(service: str | None) -> Selector:
    """Whether to show a record, judged by its first line."""
    if service is None:
        return lambda first_line: True

    def selected(first_line: bytes) -> bool:
        source = logs.line_source(first_line.decode("utf-8", "replace"))
        return source is not None and source.is_from(service)
    return selected


def _starts_record(line: bytes) -> bool:
    return logs.line_source(line.decode("utf-8", "replace")) is not None


def last_records(log_file: BinaryIO, count: int, selected: Selector) -> list[bytes]:
    """The last `count` records that `selected` keeps, found reading back from the end; the
    file is left at its end, where following goes on. Lines at the very start that continue a
    record from before (a file cut mid-traceback) are left out."""
    end = log_file.seek(0, os.SEEK_END)
    records: list[bytes] = []
    below: list[bytes] = []  # the record's lines read so far, last first
    for line in _lines_backwards(log_file, end) if count else ():
        below.append(line)
        if not _starts_record(line):
            continue
        if selected(line):
            records.append(b"".join(reversed(below)))
            if len(records) == count:
                break
        below = []
    log_file.seek(end)
    return records[::-1]


def _lines_backwards(log_file: BinaryIO, end: int) -> Iterator[bytes]:
    """The lines before `end`, last first, each with its newline (the last may have none)."""
    position, head = end, b""
    while position > 0:
        step = min(BLOCK, position)
        position -= step
        log_file.seek(position)
        lines = _AFTER_NEWLINE.split(log_file.read(step) + head)
        head = lines.pop(0)  # it may begin in the block before
        yield from (line for line in reversed(lines) if line)
    if head:
        yield head


def follow(path: Path, log_file: BinaryIO, selected: Selector, out: BinaryIO) -> None:
    """Print the records appended to `log_file` until interrupted. When logrotate moves the
    file away (or it is truncated), go on from the start of the one now at `path`."""
    showing = False  # whether the record that the next continuation line belongs to is shown
    partial = b""  # a line not yet ended by its newline
    while True:
        data = log_file.read()
        if data:
            *lines, partial = _AFTER_NEWLINE.split(partial + data)
            for line in lines:
                if _starts_record(line):
                    showing = selected(line)
                if showing:
                    out.write(line)
            out.flush()
        elif _replaced(path, log_file):
            log_file.close()
            log_file = path.open("rb")
            partial = b""
        else:
            time.sleep(FOLLOW_INTERVAL)


def _replaced(path: Path, log_file: BinaryIO) -> bool:
    """Whether `path` is now another file than the one open, or the same one cut short. While
    nothing is at `path` (moved, the new one not yet made) the open one is kept."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(log_file.fileno())
    return (now.st_dev, now.st_ino) != (opened.st_dev, opened.st_ino) or now.st_size < log_file.tell()
