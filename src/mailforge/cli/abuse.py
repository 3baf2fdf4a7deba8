"""`mailforge abuse list|unblock`: the brute-force and harvesting blocks of the running server.

The blocks live in the rate-keeper's memory only; these commands reach it through the
supervisor's control socket, so they need a running server (and no restart to lift a block).
"""

from __future__ import annotations

import argparse
import ipaddress
import json

from .accounts import group, leaf, print_table
from ..config import Config
from ..errors import EXIT_OK, UsageError
from ..process.control import ask


def register(subparsers: argparse._SubParsersAction) -> None:
    abuse = group(subparsers, "abuse", "addresses blocked after repeated failed logins or "
                  "unknown recipients")
    listing = leaf(abuse, "list", _list, "show the blocks in force: address, services, "
                   "failures, since, until, why")
    listing.add_argument("--json", action="store_true", help="print them as a JSON list")
    unblock = leaf(abuse, "unblock", _unblock, "lift a block at once (its failures are "
                   "forgotten too)")
    which = unblock.add_mutually_exclusive_group(required=True)
    which.add_argument("address", metavar="ADDR", nargs="?",
                       help="an IP address (an IPv6 one lifts its /64, as it was counted)")
    which.add_argument("--all", action="store_true", help="every block")


def _list(args: argparse.Namespace, config: Config) -> int:
    blocks = ask(config, "abuse-list")["blocks"]
    if args.json:
        print(json.dumps(blocks, indent=2))
    elif not blocks:
        print("no address is blocked")
    else:
        print_table([("ADDRESS", "SERVICES", "FAILURES", "SINCE", "UNTIL", "WHY")]
                    + [(b["address"], ",".join(b["services"]), str(b["failures"]), b["since"],
                        f"{b['until']} ({b['seconds_left']} s left)", b["why"]) for b in blocks])
    return EXIT_OK


def _unblock(args: argparse.Namespace, config: Config) -> int:
    if args.all:
        lifted = ask(config, "abuse-unblock")["lifted"]
        print(f"lifted {len(lifted)} block" + ("" if len(lifted) == 1 else "s")
              + (f": {', '.join(lifted)}" if lifted else ""))
        return EXIT_OK
    address = _ip(args.address)
    lifted = ask(config, "abuse-unblock", address=address)["lifted"]
    if not lifted:
        raise UsageError(f"{address} is not blocked (`mailforge abuse list` shows the blocks)")
    print(f"lifted the block on {', '.join(lifted)}")
    return EXIT_OK


def _ip(text: str) -> str:
    """An address as the rate-keeper counts it; a /64 as `abuse list` shows IPv6 blocks."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    try:
        return str(ipaddress.ip_network(text))
    except ValueError:
        raise UsageError(f"not an IP address: {text!r}") from None
