"""`mailforge limits set|show|reset`: outbound message limits for the system, domains and users."""

from __future__ import annotations

import argparse

from .accounts import group, leaf, print_table
from ..addresses import normalize_address, normalize_domain
from ..auth.accounts import open_accounts
from ..auth.api import SEND_LIMIT_ACTIONS, SendLimit
from ..config import Config
from ..errors import EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    limits = group(subparsers, "limits", "outbound message limits (the hacked-account regulator)")
    setter = leaf(limits, "set", _set, "set the limit of the system, a domain or a user")
    _level(setter, required=True)
    setter.add_argument("--messages", type=int, required=True, metavar="N",
                        help="messages a sender may send per interval")
    setter.add_argument("--interval", type=float, required=True, metavar="SECONDS")
    setter.add_argument("--action", choices=SEND_LIMIT_ACTIONS, default="throttle",
                        help="at the limit: defer further messages (throttle) or stop the "
                             "account from sending until `user enable` (disable)")
    show = leaf(limits, "show", _show, "list the limits, or the one that applies to a user")
    show.add_argument("address", metavar="ADDR", nargs="?")
    reset = leaf(limits, "reset", _reset, "clear the limits set below a level (system: every "
                 "domain's and user's; domain: its users'), or a user's own")
    _level(reset, required=True)


def _level(parser: argparse.ArgumentParser, required: bool) -> None:
    level = parser.add_mutually_exclusive_group(required=required)
    level.add_argument("--system", action="store_true", help="the default for every sender")
    level.add_argument("--domain", metavar="DOMAIN")
    level.add_argument("--user", metavar="ADDR")


def _scope(args: argparse.Namespace) -> tuple[str, str]:
    if args.user:
        return "user", normalize_address(args.user)
    if args.domain:
        return "domain", normalize_domain(args.domain)
    return "system", ""


def _describe(limit: SendLimit) -> str:
    return f"{limit.messages} messages per {limit.interval:g} s, then {limit.action}"


def _set(args: argparse.Namespace, config: Config) -> int:
    scope, name = _scope(args)
    limit = SendLimit(scope, name, args.messages, args.interval, args.action)
    with open_accounts(config) as accounts:
        accounts.send_limits.limit_set(limit)
    print(f"{scope} {name}".rstrip() + f": {_describe(limit)}")
    return EXIT_OK


def _show(args: argparse.Namespace, config: Config) -> int:
    with open_accounts(config) as accounts:
        if args.address is None:
            limits = accounts.send_limits.limits()
            print_table([(limit.scope, limit.name or "-", _describe(limit)) for limit in limits])
            if not limits:
                print("no limits set: every logged-in sender may send without limit "
                      "(`limits set --system` sets a default)")
            return EXIT_OK
        address = normalize_address(args.address)
        status = accounts.send_limits.send_status(address)
    limit = status.limit
    source = "no limit" if limit is None else f"{_describe(limit)} ({limit.scope} setting)"
    print(f"{address}: {source}"
          + ("; sending disabled (`user enable` lifts it)" if status.disabled else ""))
    return EXIT_OK


def _reset(args: argparse.Namespace, config: Config) -> int:
    scope, name = _scope(args)
    with open_accounts(config) as accounts:
        removed = accounts.send_limits.limit_reset(scope, name)
    below = {"system": "domain and user limits", "domain": f"user limits in {name}",
             "user": f"the limit of {name}"}[scope]
    print(f"cleared {below}: {removed} removed")
    return EXIT_OK


