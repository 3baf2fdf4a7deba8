"""Mailbox routing: the cluster's nodes, and which node owns a domain's or a mailbox's mail
(auth.api.OwnerResolver). A mailbox's own node wins over its domain's; with neither, nobody
owns it and every node serves it, as a single node always does."""

from __future__ import annotations

import re
import time

from ...addresses import normalize_address, normalize_domain
from ...errors import UsageError
from ..api import Node
from .database import Connection, Database, count, exists, require_domain, require_mailbox

# A node's name as [cluster] node spells it: printable, no white space (config.py checks it
# there too), short enough for a log line.
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_COLUMNS = "name, host, imap_port, pop3_port, smtp_port"
# The owner of a mailbox: its own node, else its domain's; joined to the node's addresses.
_OWNER = f"""
SELECT {', '.join('nodes.' + c for c in _COLUMNS.split(', '))}
FROM mailboxes JOIN domains ON domains.name = mailboxes.domain
JOIN nodes ON nodes.name = COALESCE(mailboxes.node, domains.node)
WHERE mailboxes.address = ?
"""


class Nodes:
    def __init__(self, database: Database) -> None:
        self._database = database

    def node_add(self, node: Node) -> None:
        _check_node(node)
        with self._database.write() as db:
            if _is_node(db, node.name):
                raise UsageError(f"node {node.name} exists already")
            db.execute(f"INSERT INTO nodes ({_COLUMNS}, created) VALUES (?, ?, ?, ?, ?, ?)",
                       (node.name, node.host, node.imap_port, node.pop3_port, node.smtp_port,
                        time.time()))

    def node_remove(self, name: str) -> None:
        with self._database.write() as db:
            _require_node(db, name)
            domains = count(db, "SELECT COUNT(*) FROM domains WHERE node = ?", name)
            mailboxes = count(db, "SELECT COUNT(*) FROM mailboxes WHERE node = ?", name)
            if domains or mailboxes:
                raise UsageError(f"node {name} still owns {domains} domain(s) and {mailboxes} "
                                 "mailbox(es); give them another node (or none) first")
            db.execute("DELETE FROM nodes WHERE name = ?", (name,))

    def nodes(self) -> list[Node]:
        rows = self._database.fetchall(f"SELECT {_COLUMNS} FROM nodes ORDER BY name")
        return [Node(*row) for row in rows]

    def set_domain_node(self, domain: str, name: str) -> None:
        """The node that owns the domain's mailboxes unless they name their own; "": none."""
        domain = normalize_domain(domain)
        with self._database.write() as db:
            require_domain(db, domain)
            db.execute("UPDATE domains SET node = ? WHERE name = ?",
                       (_known_node(db, name), domain))

    def set_user_node(self, address: str, name: str) -> None:
        """The node that owns the mailbox, whatever its domain's; "": its domain's."""
        address = normalize_address(address)
        with self._database.write() as db:
            require_mailbox(db, address)
            db.execute("UPDATE mailboxes SET node = ? WHERE address = ?",
                       (_known_node(db, name), address))

    def ownership(self, address: str) -> tuple[str, str]:
        """(the mailbox's own node, its domain's node) of an existing mailbox; "" for none."""
        address = normalize_address(address)
        with self._database.read() as db:
            require_mailbox(db, address)
            own, domain = db.execute(
                "SELECT mailboxes.node, domains.node FROM mailboxes JOIN domains "
                "ON domains.name = mailboxes.domain WHERE address = ?", (address,)).fetchone()
        return own or "", domain or ""

    def owner(self, address: str) -> Node | None:
        row = self._database.fetchone(_OWNER, address)
        return Node(*row) if row else None


def _check_node(node: Node) -> None:
    if not _NODE_NAME.fullmatch(node.name):
        raise UsageError(f"invalid node name {node.name!r}: letters, digits, '.', '_' and '-', "
                         "as [cluster] node names the node")
    if not node.host or any(c.isspace() for c in node.host):
        raise UsageError(f"invalid host {node.host!r} for node {node.name}")
    for service, port in (("imap", node.imap_port), ("pop3", node.pop3_port),
                          ("smtp", node.smtp_port)):
        if not 0 < port < 65536:
            raise UsageError(f"invalid {service} port {port} for node {node.name}")


def _is_node(db: Connection, name: str) -> bool:
    return exists(db, "SELECT 1 FROM nodes WHERE name = ?", name)


def _require_node(db: Connection, name: str) -> None:
    if not _is_node(db, name):
        raise UsageError(f"no such node: {name} (see `mailforge node list`)")


def _known_node(db: Connection, name: str) -> str | None:
    """A node name to store: None for "" (no owner), else a node that exists."""
    if not name:
        return None
    _require_node(db, name)
    return name
