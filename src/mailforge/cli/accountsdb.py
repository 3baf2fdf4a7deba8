"""`mailforge accounts migrate`: copy a node's SQLite accounts file into the PostgreSQL
database that [accounts] backend = "postgresql" will use (auth.migrate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..auth.accounts import open_postgresql
from ..auth.migrate import copy_accounts
from ..auth.sqlite.database import Database as SQLiteDatabase
from ..config import Config
from ..errors import EXIT_OK, UsageError
from .accounts import group, leaf


def register(subparsers: argparse._SubParsersAction) -> None:
    actions = group(subparsers, "accounts", "the accounts database itself")
    migrate = leaf(actions, "migrate", _migrate,
                   "copy a SQLite accounts file into PostgreSQL (the target must hold no "
                   "accounts unless --replace)")
    migrate.add_argument("--from", dest="source", metavar="FILE", type=Path,
                         help="the SQLite file (default: accounts.sqlite3 in the data dir)")
    migrate.add_argument("--to", dest="target", metavar="DSN",
                         help="the PostgreSQL database (default: [accounts] dsn); its password "
                              "from [accounts] password_file, PGPASSWORD or ~/.pgpass")
    migrate.add_argument("--replace", action="store_true",
                         help="drop the accounts the target holds before copying")


def _migrate(args: argparse.Namespace, config: Config) -> int:
    # Imported here, as in auth.accounts: every other command need not load psycopg.
    from ..auth.postgresql.conninfo import redacted

    dsn = args.target or config.accounts.dsn
    if not dsn:
        raise UsageError("no target: give --to DSN or set [accounts] dsn")
    with SQLiteDatabase(args.source or config.accounts_db) as source, \
            open_postgresql(config, dsn) as target:
        copied = copy_accounts(source, target, replace=args.replace)
    print(f"copied {copied['domains']} domains, {copied['mailboxes']} mailboxes, "
          f"{copied['aliases']} aliases, {copied['send_limits']} limits and "
          f"{copied['settings']} settings into {redacted(dsn)}")
    return EXIT_OK
