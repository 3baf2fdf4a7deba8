"""`mailforge domain|user|alias ...`: manage the accounts database from the command line."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path
from typing import Callable

from ..addresses import normalize_address, normalize_alias_source, normalize_domain
from ..auth.accounts import Accounts, open_accounts
from ..config import Config
from ..errors import EXIT_OK, MailforgeError, UsageError
from ..process import permissions
from ..store.maildir import ensure_maildir, mailbox_path

Handler = Callable[[argparse.Namespace, Config], int]


def register(subparsers: argparse._SubParsersAction) -> None:
    domain = group(subparsers, "domain", "hosted mail domains")
    leaf(domain, "add", _domain_add, "host a domain").add_argument("name", metavar="NAME")
    leaf(domain, "list", _domain_list, "list hosted domains")
    leaf(domain, "remove", _domain_remove, "stop hosting a domain with no mailboxes or aliases"
          ).add_argument("name", metavar="NAME")
    domain_set = leaf(domain, "set", _domain_set, "set what a domain's mailboxes share")
    domain_set.add_argument("name", metavar="NAME")
    _node_option(domain_set, "the node that owns the domain's mailboxes (mailbox routing); "
                 "'' for none: every node serves them")

    user = group(subparsers, "user", "mailboxes")
    _password_input(leaf(user, "add", _user_add, "add a mailbox and create its Maildir"))
    _password_input(leaf(user, "passwd", _user_passwd, "set a mailbox's password"))
    leaf(user, "list", _user_list, "list mailboxes").add_argument(
        "domain", metavar="DOMAIN", nargs="?", help="only this domain's")
    address_leaf(user, "remove", _user_remove, "remove a mailbox (its mail stays on disk)")
    address_leaf(user, "disable", _user_disable, "refuse mail and logins for a mailbox")
    apop = leaf(user, "apop", _user_apop,
                "set (or with --off remove) a mailbox's APOP secret, for POP3 clients that "
                "need APOP; not the login password")
    _password_input(apop)
    apop.add_argument("--off", action="store_true", help="remove the secret: no APOP")
    address_leaf(user, "enable", _user_enable, "undo `user disable`, and an outbound limit's disable action")
    _node_option(address_leaf(user, "set", _user_set, "set a mailbox's settings"),
                 "the node that owns the mailbox (mailbox routing), whatever its domain's; "
                 "'' for its domain's")
    address_leaf(user, "show", _user_show, "show a mailbox: its state and the node that owns it")

    alias = group(subparsers, "alias", "aliases: addresses that forward to other addresses")
    add = leaf(alias, "add", _alias_add, "make mail to SOURCE go to TARGET as well; "
               "SOURCE @DOMAIN: a catch-all for the domain's addresses that nothing else has")
    add.add_argument("source", metavar="SOURCE")
    add.add_argument("target", metavar="TARGET")
    leaf(alias, "list", _alias_list, "list aliases").add_argument(
        "domain", metavar="DOMAIN", nargs="?", help="only this domain's")
    remove = leaf(alias, "remove", _alias_remove, "remove one target, or all of SOURCE's")
    remove.add_argument("source", metavar="SOURCE")
    remove.add_argument("target", metavar="TARGET", nargs="?")


def group(subparsers: argparse._SubParsersAction, name: str,
           help: str) -> argparse._SubParsersAction:
    parser = subparsers.add_parser(name, help=help, description=help)
    return parser.add_subparsers(dest="action", metavar="ACTION", required=True)


def leaf(actions: argparse._SubParsersAction, name: str, handler: Handler,
          help: str) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=handler)
    return parser


def address_leaf(actions: argparse._SubParsersAction, name: str, handler: Handler,
                  help: str) -> argparse.ArgumentParser:
    parser = leaf(actions, name, handler, help)
    parser.add_argument("address", metavar="ADDR")
    return parser


def _node_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--node", metavar="NODE", required=True, help=help)


def _password_input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", metavar="ADDR")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password as one line from stdin")


# -- domains

def _domain_add(args: argparse.Namespace, config: Config) -> int:
    name = normalize_domain(args.name)
    with open_accounts(config) as accounts:
        accounts.directory.domain_add(name)
    print(f"added domain {name}")
    return EXIT_OK


def _domain_list(args: argparse.Namespace, config: Config) -> int:
    with open_accounts(config) as accounts:
        for name in accounts.directory.domains():
            print(name)
    return EXIT_OK


def _domain_remove(args: argparse.Namespace, config: Config) -> int:
    name = normalize_domain(args.name)
    with open_accounts(config) as accounts:
        accounts.directory.domain_remove(name)
    print(f"removed domain {name}")
    return EXIT_OK


def _domain_set(args: argparse.Namespace, config: Config) -> int:
    name = normalize_domain(args.name)
    with open_accounts(config) as accounts:
        accounts.nodes.set_domain_node(name, args.node)
    print(f"{name}: owned by node {args.node}" if args.node else f"{name}: owned by no node")
    return EXIT_OK


# -- mailboxes

def _user_add(args: argparse.Namespace, config: Config) -> int:
    # Validated before asking for a password, so a typo costs no typing.
    address = normalize_address(args.address)
    with open_accounts(config) as accounts:
        maildir = add_mailbox(config, accounts, address, read_password(args))
    print(f"added mailbox {address} (Maildir {maildir})")
    return EXIT_OK


def add_mailbox(config: Config, accounts: Accounts, address: str, password: str) -> Path:
    """The account, then its Maildir (owned by the service account): `user add` and the web
    console both add mailboxes this way. The Maildir's path."""
    address = normalize_address(address)
    accounts.directory.user_add(address, password)
    maildir = mailbox_path(config.store_dir, address)
    try:
        ensure_maildir(maildir)
        permissions.hand_to_service(config, config.store_dir, maildir)
    except OSError as exc:
        raise MailforgeError(f"added mailbox {address}, but could not create its Maildir "
                             f"{maildir}: {exc.strerror}") from None
    return maildir


def _user_passwd(args: argparse.Namespace, config: Config) -> int:
    address = normalize_address(args.address)
    with open_accounts(config) as accounts:
        accounts.credentials.user_passwd(address, read_password(args))
    print(f"changed the password of {address}")
    return EXIT_OK


def _user_list(args: argparse.Namespace, config: Config) -> int:
    with open_accounts(config) as accounts:
        users = accounts.directory.users(args.domain)
    # The owner column only where some mailbox has one: a single node's listing is unchanged.
    owned = any(user.node for user in users)
    print_table([(user.address, "disabled" if user.disabled else "enabled",
                   time.strftime("%Y-%m-%d %H:%M", time.localtime(user.created)),
                   *([f"node {user.node or '-'}"] if owned else []))
                  for user in users])
    return EXIT_OK


def _user_set(args: argparse.Namespace, config: Config) -> int:
    address = normalize_address(args.address)
    with open_accounts(config) as accounts:
        accounts.nodes.set_user_node(address, args.node)
    print(f"{address}: owned by node {args.node}" if args.node
          else f"{address}: owned by its domain's node, if any")
    return EXIT_OK


def _user_show(args: argparse.Namespace, config: Config) -> int:
    address = normalize_address(args.address)
    with open_accounts(config) as accounts:
        own, domain = accounts.nodes.ownership(address)
        user = accounts.directory.user(address)
    owner = (f"{own} (its own)" if own else f"{domain} (its domain's)" if domain
             else "none (served by every node)")
    print_table([("address", address), ("state", "disabled" if user.disabled else "enabled"),
                 ("created", time.strftime("%Y-%m-%d %H:%M", time.localtime(user.created))),
                 ("node", owner)])
    return EXIT_OK


def _user_remove(args: argparse.Namespace, config: Config) -> int:
    address = normalize_address(args.address)
    with open_accounts(config) as accounts:
        accounts.directory.user_remove(address)
    print(f"removed mailbox {address}; its mail stays on disk in "
          f"{mailbox_path(config.store_dir, address)} (delete it by hand if it is not wanted)")
    return EXIT_OK


def _user_disable(args: argparse.Namespace, config: Config) -> int:
    address = normalize_address(args.address)
    with open_accounts(config) as accounts:
        accounts.directory.user_disable(address)
    print(f"disabled {address}")
    return EXIT_OK


def _user_enable(args: argparse.Namespace, config: Config) -> int:
    address = normalize_address(args.address)
    with open_accounts(config) as accounts:
        accounts.directory.user_enable(address)
    print(f"enabled {address}")
    return EXIT_OK


def _user_apop(args: argparse.Namespace, config: Config) -> int:
    address = normalize_address(args.address)
    secret = None if args.off else read_password(args)
    with open_accounts(config) as accounts:
        accounts.credentials.set_apop_secret(address, secret)
    print(f"removed the APOP secret of {address}" if args.off else f"set the APOP secret of {address}")
    return EXIT_OK


# -- aliases

def _alias_add(args: argparse.Namespace, config: Config) -> int:
    source, target = normalize_alias_source(args.source), normalize_address(args.target)
    with open_accounts(config) as accounts:
        accounts.directory.alias_add(source, target)
    print(f"added alias {source} -> {target}")
    return EXIT_OK


def _alias_list(args: argparse.Namespace, config: Config) -> int:
    with open_accounts(config) as accounts:
        aliases = accounts.directory.aliases(args.domain)
    print_table([(source, "->", target) for source, target in aliases])
    return EXIT_OK


def _alias_remove(args: argparse.Namespace, config: Config) -> int:
    source = normalize_alias_source(args.source)
    target = normalize_address(args.target) if args.target is not None else None
    with open_accounts(config) as accounts:
        accounts.directory.alias_remove(source, target)
    print(f"removed alias {source} -> {target}" if target else f"removed alias {source}")
    return EXIT_OK


# -- helpers

def read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise UsageError("the passwords do not match")
    else:
        raise UsageError("stdin is not a terminal: "
                         "give the password on stdin with --password-stdin")
    if not password:
        raise UsageError("empty password refused")
    return password


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Columns padded to their widest cell, the last one left ragged."""
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        print("  ".join(cells + [row[-1]]))
