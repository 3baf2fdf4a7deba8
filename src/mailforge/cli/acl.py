"""`mailforge acl get|set|delete OWNER FOLDER [IDENTIFIER [RIGHTS]]`: a folder's access control
list (RFC 4314), changed by the same code as IMAP's SETACL and DELETEACL (store/acl.py).
OWNER is a mailbox's address for its own folders, or a domain for its public folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from .accounts import group, leaf
from ..addresses import normalize_address, normalize_domain
from ..auth.accounts import open_accounts
from ..auth.api import PUBLIC_EVERYONE
from ..config import Config
from ..errors import EXIT_OK, UsageError
from ..store import acl, shared
from ..store.api import INBOX, PUBLIC_PREFIX, StoreError
from ..store.maildir import mailbox_path, public_path
from ..store.names import normalize, to_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    actions = group(subparsers, "acl", "folder access control lists (IMAP ACL, RFC 4314)")
    _folder_leaf(actions, "get", _get, "show who holds which rights on a folder")
    changing = _folder_leaf(actions, "set", _set, "give an identifier rights on a folder")
    changing.add_argument("identifier", metavar="IDENTIFIER",
                          help="anyone, authenticated, or a mailbox of the folder's domain")
    changing.add_argument("rights", metavar="RIGHTS",
                          help=f"letters of {acl.ALL_RIGHTS}; +RIGHTS adds, -RIGHTS removes "
                               "(write -- before it)")
    _folder_leaf(actions, "delete", _delete, "take an identifier off a folder's list"
                 ).add_argument("identifier", metavar="IDENTIFIER")


def _folder_leaf(actions: argparse._SubParsersAction, name: str, handler,
                 help: str) -> argparse.ArgumentParser:
    parser = leaf(actions, name, handler, help)
    parser.add_argument("owner", metavar="ADDR|DOMAIN",
                        help="the mailbox owning the folder, or a domain for its public folders")
    parser.add_argument("folder", metavar="FOLDER", help='e.g. "Projects/2024" or INBOX')
    return parser


def _get(args: argparse.Namespace, config: Config) -> int:
    directory, domain, owner = _folder(args, config)
    if owner is not None:
        implied = {owner: frozenset(acl.ALL_RIGHTS)}
    else:
        with open_accounts(config) as accounts:
            enabled, writers = accounts.mailbox_settings.public_folders(domain)
        implied = acl.public_defaults(writers, PUBLIC_EVERYONE) if enabled else {}
    for who, rights in sorted(acl.merged(implied, acl.load(directory)).items()):
        print(f"{who}\t{acl.render(rights)}")
    return EXIT_OK


def _set(args: argparse.Namespace, config: Config) -> int:
    directory, domain, owner = _folder(args, config)
    try:
        shared.set_entry(config.store_dir, directory, domain, owner, args.identifier,
                         args.rights)
    except (StoreError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return _get(args, config)


def _delete(args: argparse.Namespace, config: Config) -> int:
    directory, domain, owner = _folder(args, config)
    try:
        acl.delete_entry(directory, domain, owner, args.identifier)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    return _get(args, config)


def _folder(args: argparse.Namespace, config: Config) -> tuple[Path, str, str | None]:
    """The folder's directory, its domain and its owner (None: a public folder)."""
    try:
        name = normalize(args.folder)
    except StoreError as exc:
        raise UsageError(str(exc)) from None
    if "@" in args.owner:
        owner: str | None = normalize_address(args.owner)
        domain = owner.rpartition("@")[2]
        root = mailbox_path(config.store_dir, owner)
    else:
        owner, domain = None, normalize_domain(args.owner)
        name = name.removeprefix(PUBLIC_PREFIX)
        root = public_path(config.store_dir, domain)
        if name == INBOX:
            raise UsageError("public folders have no INBOX")
    directory = root if name == INBOX else root / to_dir(name)
    if not directory.is_dir():
        raise UsageError(f"no folder {name} of {args.owner}")
    return directory, domain, owner
