"""Whether this node asks who owns a mailbox (mailbox routing, README "Scaling out"), decided
once per worker: a single node must not pay that query on every login and delivery.

A node of a cluster has a [cluster] secret_file (it cannot proxy a session without one) and
asks every time, since owners change while it runs. A node without one asks only when the
node table had rows as its worker started; a reload (SIGHUP) starts new workers that look
again, so on such a node the first `mailforge node add` takes effect at the next reload.
"""

from __future__ import annotations

from ..config import Config
from .api import AccountsUnavailable, OwnerResolver
from .sql.nodes import Nodes


def owners_to_ask(config: Config, nodes: Nodes) -> OwnerResolver | None:
    """`nodes` where this node must ask who owns a mailbox; None where nobody can own one."""
    if config.cluster.secret_file:
        return nodes
    try:
        listed = nodes.nodes()
    except AccountsUnavailable:
        return nodes  # the database cannot say now: ask each time, as a cluster node does
    return nodes if listed else None
