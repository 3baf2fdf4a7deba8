"""`mailforge node add|list|remove`: the cluster's nodes and the internal ports where the
others reach them, for mailbox routing (README, "Scaling out")."""

from __future__ import annotations

import argparse

from ..auth.accounts import open_accounts
from ..auth.api import DEFAULT_NODE_PORTS, Node
from ..config import Config
from ..errors import EXIT_OK
from .accounts import group, leaf, print_table


def register(subparsers: argparse._SubParsersAction) -> None:
    node = group(subparsers, "node", "cluster nodes, for mailbox routing")
    add = leaf(node, "add", _add, "name a node ([cluster] node) and where the other nodes reach "
               "it; its ports must take PROXY headers (proxy_protocol)")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--host", required=True, help="its internal address or host name")
    for service, port in DEFAULT_NODE_PORTS.items():
        add.add_argument(f"--{service}-port", type=int, default=port, metavar="P",
                         help=f"its internal {service.upper()} port (default: {port})")
    leaf(node, "list", _list, "list the nodes")
    leaf(node, "remove", _remove, "forget a node that owns no domain or mailbox"
         ).add_argument("name", metavar="NAME")


def _add(args: argparse.Namespace, config: Config) -> int:
    node = Node(args.name, args.host, args.imap_port, args.pop3_port, args.smtp_port)
    with open_accounts(config) as accounts:
        accounts.nodes.node_add(node)
    print(f"added node {node.name} ({_ports(node)})")
    return EXIT_OK


def _list(args: argparse.Namespace, config: Config) -> int:
    with open_accounts(config) as accounts:
        nodes = accounts.nodes.nodes()
    print_table([(node.name, _ports(node)) for node in nodes])
    return EXIT_OK


def _remove(args: argparse.Namespace, config: Config) -> int:
    with open_accounts(config) as accounts:
        accounts.nodes.node_remove(args.name)
    print(f"removed node {args.name}")
    return EXIT_OK


def _ports(node: Node) -> str:
    return (f"host {node.host} imap {node.imap_port} pop3 {node.pop3_port} "
            f"smtp {node.smtp_port}")
