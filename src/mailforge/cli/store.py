"""`mailforge store check|repair ADDR`, `mailforge quota set|show ADDR`,
`mailforge public set|show DOMAIN`: the mailbox store from the command line."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .accounts import address_leaf, group, leaf
from ..addresses import normalize_address, normalize_domain
from ..auth.accounts import Accounts, open_accounts
from ..auth.api import PUBLIC_EVERYONE, PUBLIC_NOBODY
from ..config import Config
from ..errors import EXIT_FAILURE, EXIT_OK, UsageError
from ..store.maildir import mailbox_path
from ..store.quota import Limits, MaildirSize
from ..store.repair import check, repair

UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
WRITERS = {"everyone": PUBLIC_EVERYONE, "nobody": PUBLIC_NOBODY}


def register(subparsers: argparse._SubParsersAction) -> None:
    store = group(subparsers, "store", "mailbox store: UID indexes")
    address_leaf(store, "check", _store_check,
                  "report UID index problems of a mailbox (exit 1 when there are any)")
    address_leaf(store, "repair", _store_repair,
                  "rebuild damaged or lost UID indexes from the Maildir files")

    quota = group(subparsers, "quota", "mailbox quotas (RFC 9208)")
    limit = address_leaf(quota, "set", _quota_set, "set a mailbox's storage limit")
    limit.add_argument("size", metavar="SIZE|none", help="octets, with K/M/G/T (1024s), or none")
    limit.add_argument("--messages", metavar="N|none", default="none",
                       help="at most N messages (default: no limit)")
    address_leaf(quota, "show", _quota_show, "show a mailbox's limits and usage")

    public = group(subparsers, "public", "a domain's shared #public/ folders")
    switch = leaf(public, "set", _public_set, "share a domain's public folders, or stop")
    switch.add_argument("domain", metavar="DOMAIN")
    switch.add_argument("state", choices=("on", "off"))
    switch.add_argument("--writers", metavar="everyone|nobody|ADDR,...",
                        help="who may change them (default when first switched on: everyone)")
    leaf(public, "show", _public_show, "show a domain's public-folder setting"
          ).add_argument("domain", metavar="DOMAIN")


def _store_check(args: argparse.Namespace, config: Config) -> int:
    maildir = _maildir(config, args.address)
    reports = check(maildir)
    for report in reports:
        print("\n".join(report.lines()))
    return EXIT_FAILURE if any(report.problems for report in reports) else EXIT_OK


def _store_repair(args: argparse.Namespace, config: Config) -> int:
    maildir = _maildir(config, args.address)
    done = repair(maildir)
    print("\n".join(done) if done else f"{maildir}: nothing to repair")
    return EXIT_OK


def _quota_set(args: argparse.Namespace, config: Config) -> int:
    address = normalize_address(args.address)
    limit_bytes, limit_messages = parse_size(args.size), parse_count(args.messages)
    with open_accounts(config) as accounts:
        accounts.mailbox_settings.set_quota(address, limit_bytes, limit_messages)
    print(f"quota of {address}: {_describe(limit_bytes, limit_messages)}")
    return EXIT_OK


def _quota_show(args: argparse.Namespace, config: Config) -> int:
    address = normalize_address(args.address)
    with open_accounts(config) as accounts:
        _require_mailbox(accounts, address)
        limits = Limits(*accounts.mailbox_settings.quota_limits(address))
    maildir = mailbox_path(config.store_dir, address)
    used = MaildirSize(maildir, limits).quota() if maildir.is_dir() else None
    print(f"limit: {_describe(limits.bytes, limits.messages)}")
    if used is not None:
        print(f"used: {used.used_bytes} octets in {used.used_messages} messages")
    return EXIT_OK


def _public_set(args: argparse.Namespace, config: Config) -> int:
    domain = normalize_domain(args.domain)
    writers = None if args.writers is None else WRITERS.get(args.writers, args.writers)
    with open_accounts(config) as accounts:
        accounts.mailbox_settings.set_public_folders(domain, args.state == "on", writers)
    return _public_show(args, config)


def _public_show(args: argparse.Namespace, config: Config) -> int:
    with open_accounts(config) as accounts:
        enabled, writers = accounts.mailbox_settings.public_folders(args.domain)
    names = {value: name for name, value in WRITERS.items()}
    print(f"public folders of {normalize_domain(args.domain)}: {'on' if enabled else 'off'}, "
          f"writers: {names.get(writers, writers)}")
    return EXIT_OK


def parse_size(text: str) -> int | None:
    """"none", or octets with an optional K/M/G/T suffix (binary: 1K = 1024)."""
    if text.lower() == "none":
        return None
    match = re.fullmatch(r"(\d+)([KMGT]?)B?", text.strip().upper())
    if match is None:
        raise UsageError(f"bad size {text!r} (examples: 500M, 2G, 1048576, none)")
    return int(match[1]) * UNITS[match[2]]


def parse_count(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not (text.isascii() and text.isdigit()):  # "²" is a digit to isdigit, not to int
        raise UsageError(f"bad message count {text!r} (a number, or none)")
    return int(text)


def _describe(limit_bytes: int | None, limit_messages: int | None) -> str:
    parts = [f"{limit_bytes} octets" if limit_bytes is not None else "no storage limit",
             f"{limit_messages} messages" if limit_messages is not None else "no message limit"]
    return ", ".join(parts)


def _require_mailbox(accounts: Accounts, address: str) -> None:
    """UsageError unless `address` (canonical) is a mailbox of the accounts DB."""
    users = accounts.directory.users(address.rpartition("@")[2])
    if address not in {user.address for user in users}:
        raise UsageError(f"no such mailbox: {address}")


def _maildir(config: Config, address: str) -> Path:
    """The Maildir of `address`; also one left without its account, which can still be
    checked and repaired. An address with neither is named as unknown, not by the directory
    it would have."""
    address = normalize_address(address)
    maildir = mailbox_path(config.store_dir, address)
    if maildir.is_dir():
        return maildir
    with open_accounts(config) as accounts:
        _require_mailbox(accounts, address)
    raise UsageError(f"no Maildir at {maildir}")
