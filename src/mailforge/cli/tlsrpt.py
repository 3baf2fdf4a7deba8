"""`mailforge tlsrpt send`: queue the TLS-RPT reports of finished days now (the delivery
worker does the same on its own once an hour)."""

from __future__ import annotations

import argparse
import datetime

from .accounts import group, leaf
from ..config import Config
from ..errors import EXIT_OK, UsageError
from ..resolver import Resolver
from ..tlspolicy.tlsrpt import Sender


def register(subparsers: argparse._SubParsersAction) -> None:
    tlsrpt = group(subparsers, "tlsrpt", "TLS-RPT (RFC 8460) daily reports of outbound TLS")
    send = leaf(tlsrpt, "send", _send, "queue the reports of finished days not sent yet, or of "
                "one day (the current one too) with --day")
    send.add_argument("--day", metavar="YYYY-MM-DD", help="only this day (UTC); 'today' for today")


def _send(args: argparse.Namespace, config: Config) -> int:
    sender = Sender(config, Resolver(config.dns))
    days = [_day(args.day)] if args.day else sender.due_days()
    lines = [f"{day} {line}" for day in days for line in sender.send_day(day)]
    print("\n".join(lines) if lines else "no TLS results waiting to be reported")
    return EXIT_OK


def _day(text: str) -> str:
    if text == "today":
        return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    try:
        return datetime.date.fromisoformat(text).isoformat()
    except ValueError:
        raise UsageError(f"--day: {text!r} is not a date (YYYY-MM-DD or 'today')") from None
