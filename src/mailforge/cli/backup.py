"""`mailforge backup create|list|restore`: the command line of backup.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import backup
from .accounts import group, leaf
from ..config import Config
from ..errors import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    actions = group(subparsers, "backup", "archives of accounts, config, certificates, store and queue")
    create = leaf(actions, "create", _create, "write a new archive under backup/ (the server may run)")
    create.add_argument("--compress", choices=tuple(backup.COMPRESSION), default="gz",
                        help="archive compression (default: gz)")
    leaf(actions, "list", _list, "the archives under backup/, oldest first")
    restore = leaf(actions, "restore", _restore, "unpack an archive into an empty data directory")
    restore.add_argument("archive", metavar="ARCHIVE", type=Path)
    restore.add_argument("--dir", required=True, type=Path, help="new (or empty) data directory")
    # Restoring builds a new data dir: the current config (if any) has no say in it.
    restore.set_defaults(needs_config=False)


def _create(args: argparse.Namespace, config: Config) -> int:
    path = backup.create(config, args.compress)
    print(backup.describe(path, backup.read_manifest(path)))
    if not backup.includes_accounts(config):
        print("mailforge: the accounts are in PostgreSQL ([accounts] dsn), not in the archive: "
              "back that database up with pg_dump")
    return EXIT_OK


def _list(args: argparse.Namespace, config: Config) -> int:
    for path, manifest in backup.archives(config):
        print(backup.describe(path, manifest))
    return EXIT_OK


def _restore(args: argparse.Namespace, _: None) -> int:
    manifest = backup.restore(args.archive, args.dir)
    print(f"mailforge: restored {len(manifest.files)} files into {args.dir.resolve()}; "
          f"start it with: mailforge -c {args.dir / backup.CONFIG_NAME} serve")
    return EXIT_OK
