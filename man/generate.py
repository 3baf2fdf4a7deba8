"""Writes man/mailforge.1, the manual page, from the command line's own argparse definitions
(`mailforge.cli.build_parser`) with argparse-manpage; `--check` only says whether the page
is up to date with them (exit 1 when not). `make man` runs it.

The page is kept in the tree, not made at build time, because building it imports the CLI
and with it the runtime dependencies, which a build environment does not have; pyproject
installs it as share/man/man1/mailforge.1, and tests/unit/test_manpage.py fails when a command
changed and the page was not made again.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

from argparse_manpage.manpage import Manpage

from mailforge import __version__
from mailforge.cli import build_parser

PAGE = Path(__file__).with_name("mailforge.1")
SUMMARY = "mail server suite: SMTP, submission, POP3 and IMAP over a durable queue and Maildirs"
# The .TH line's date: the day the page was made. A check compares the rest, not the day.
_DATE = re.compile(r'^\.TH MAILFORGE "1" "([^"]*)"')


def render(date: str) -> str:
    data = {"project_name": "mailforge", "version": __version__, "date": date,
            "manual_title": "mailforge manual", "description": SUMMARY}
    return str(Manpage(build_parser(), _data=data)) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    if parser.parse_args().check:
        current = PAGE.read_text() if PAGE.exists() else ""
        made = _DATE.match(current)
        if made and render(made[1].replace("\\-", "-")) == current:
            return 0
        print(f"{PAGE} is out of date with the command line: run `make man`", file=sys.stderr)
        return 1
    PAGE.write_text(render(datetime.date.today().isoformat()))
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
