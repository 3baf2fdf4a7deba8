"""Chooses between the Cython extensions and their pure-Python twins, once, at import.

Each compiled module mailforge.speedups._<name> (built from ext/_<name>.pyx) has a twin
mailforge.speedups.<name> with the same API and behaviour. Callers import from here and get
whichever runs. All the compiled modules are used or none, so IMPLEMENTATION tells the
whole story; MAILFORGE_PUREPYTHON=1 forces the twins (as msgpack's MSGPACK_PUREPYTHON does).
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

from .errors import Command, FetchAttribute, Literal, Literal8, LiteralTooBig, ParseError

FORCED_PURE = os.environ.get("MAILFORGE_PUREPYTHON", "") not in ("", "0")
MODULES = ("parse", "crammd5", "spool", "fetchlines")


def _load() -> tuple[str, list[ModuleType]]:
    if not FORCED_PURE:
        try:
            return "cython", [importlib.import_module(f"._{name}", __name__) for name in MODULES]
        except ImportError as exc:
            # Logged before logging is set up, so Python's last-resort handler prints one line.
            logging.getLogger("mailforge").warning(
                "mailforge: compiled speedups unavailable (%s); running the pure-Python twins", exc)
    return "python", [importlib.import_module(f".{name}", __name__) for name in MODULES]


IMPLEMENTATION, (_parse, _crammd5, _spool, _fetchlines) = _load()

split_command = _parse.split_command
parse_path = _parse.parse_path
parse_pop3 = _parse.parse_pop3
CommandParser = _parse.CommandParser
parse_sequence_set = _parse.parse_sequence_set
parse_fetch_attributes = _parse.parse_fetch_attributes
STAR = _parse.STAR

cram_state = _crammd5.cram_state
cram_verify = _crammd5.cram_verify
cram_challenge = _crammd5.cram_challenge

DotUnstuffer = _spool.DotUnstuffer
CrlfToLf = _spool.CrlfToLf
write_all = _spool.write_all

# The item codes of render_fetch's plans (UID, FLAGS, ...), as the module in use defines them.
fetchcodes = _fetchlines
render_fetch = _fetchlines.render_fetch
format_date_time = _fetchlines.format_date_time

__all__ = ["IMPLEMENTATION", "FORCED_PURE", "ParseError", "LiteralTooBig", "Literal", "Literal8",
           "Command", "FetchAttribute", "split_command", "parse_path", "parse_pop3", "CommandParser",
           "parse_sequence_set", "parse_fetch_attributes", "STAR", "cram_state", "cram_verify",
           "cram_challenge", "DotUnstuffer", "CrlfToLf", "write_all", "fetchcodes", "render_fetch",
           "format_date_time"]
