"""FETCH responses for many messages at once, from what the session knows of them: the
pure-Python twin of mailforge.speedups._fetchlines.

FETCH is the command a mail client sends most, over up to hundreds of messages at a time, and
most of it names only items that the message's MessageInfo and cached summary answer (FLAGS,
UID, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE, header sections). The IMAP side
(protocols/imap/fetch.py) turns the item list into a *plan* once per FETCH: a tuple whose
entries are the item codes below, or for anything else a callable `(info, summary) -> bytes`.
`render_fetch` then builds every `* n FETCH (...)` line of the command in one call, where a
Python function per item and message used to be a tenth of an IMAP worker's CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["UID", "FLAGS", "INTERNALDATE", "RFC822_SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE",
           "MODSEQ", "SUMMARY_CODES", "render_fetch", "format_date_time"]

# Item codes of a plan. MODSEQ is not an item the client names (CONDSTORE adds it).
UID = 0
FLAGS = 1
INTERNALDATE = 2
RFC822_SIZE = 3
ENVELOPE = 4
BODY = 5
BODYSTRUCTURE = 6
MODSEQ = 7
# The codes answered from the message's summary (a callable entry is, too).
SUMMARY_CODES = frozenset((ENVELOPE, BODY, BODYSTRUCTURE))

_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
           b"Nov", b"Dec")


def format_date_time(timestamp: float) -> bytes:
    """INTERNALDATE as RFC 3501 date-time: `"25-Nov-2026 16:29:44 +0000"`, always UTC."""
    moment = time.gmtime(timestamp)
    return b'"%2d-%s-%04d %02d:%02d:%02d +0000"' % (
        moment.tm_mday, _MONTHS[moment.tm_mon - 1], moment.tm_year,
        moment.tm_hour, moment.tm_min, moment.tm_sec)


def render_fetch(targets: Sequence[tuple[int, Any]], plan: Sequence[int | Callable[..., bytes]],
                 summary_of: Callable[[int], Any] | None,
                 fallback: Callable[[int, Any], bytes | None],
                 flags_item: Callable[[frozenset[str], bool], bytes],
                 recent: bool) -> tuple[bytes, int]:
    """The FETCH lines of `targets` ((sequence number, MessageInfo) pairs), in order, and how
    many of them `fallback` found gone.

    `summary_of(uid)` gives a message's cached summary (None when the plan needs none); a
    message the cache does not hold yet is answered by `fallback(seq, info)` instead (which
    reads it), whose None means the message was expunged meanwhile. `flags_item(flags,
    recent)` renders the FLAGS item; `recent`: whether FLAGS may show \\Recent (not to
    IMAP4rev2)."""
    lines: list[bytes] = []
    gone = 0
    for seq, info in targets:
        summary = None
        if summary_of is not None:
            summary = summary_of(info.uid)
            if summary is None:
                line = fallback(seq, info)
                if line is None:
                    gone += 1
                else:
                    lines.append(line)
                continue
        parts = []
        for entry in plan:
            if entry == UID:
                parts.append(b"UID %d" % info.uid)
            elif entry == FLAGS:
                parts.append(flags_item(info.flags, recent and info.recent))
            elif entry == INTERNALDATE:
                parts.append(b"INTERNALDATE " + format_date_time(info.internal_date))
            elif entry == RFC822_SIZE:
                parts.append(b"RFC822.SIZE %d" % info.size)
            elif entry == ENVELOPE:
                parts.append(b"ENVELOPE " + summary.envelope)
            elif entry == BODY:
                parts.append(b"BODY " + summary.body)
            elif entry == BODYSTRUCTURE:
                parts.append(b"BODYSTRUCTURE " + summary.bodystructure)
            elif entry == MODSEQ:
                parts.append(b"MODSEQ (%d)" % info.modseq)
            else:
                parts.append(entry(info, summary))
        lines.append(b"* %d FETCH (%s)\r\n" % (seq, b" ".join(parts)))
    return b"".join(lines), gone
