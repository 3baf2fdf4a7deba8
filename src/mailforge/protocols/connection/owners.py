"""Mailbox routing for POP3 and IMAP sessions, as one worker's sessions see it: which node
owns a user's mailbox, logging in there on the user's behalf, and whether this session's
peer may itself make such logins (README, "Scaling out").

A session that logs in a user owned by another node is proxied: the driver logs in at the
owner (`log_in_at_owner`), answers the client with the owner's answer, and splices
(upstream.splice). The owner down, hung or refusing: a temporary error for the client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ... import metrics
from ...auth.api import Node, OwnerResolver
from ...auth.proxylogin import ProxyLogins
from ...policy.networks import Network, listed
from . import upstream
from .transport import Connection
from .upstream import OwnerUnavailable, Upstream

log = logging.getLogger("mailforge.proxy")

T = TypeVar("T")
# The owner's internal port for each service that is proxied.
OWNER_PORTS: dict[str, Callable[[Node], int]] = {"pop3": lambda node: node.pop3_port,
                                                 "imap": lambda node: node.imap_port}


@dataclass(frozen=True)
class ClusterRouting:
    node: str                     # this node's name ([cluster] node, else the hostname)
    owners: OwnerResolver
    logins: ProxyLogins | None    # None: no [cluster] secret_file, so no proxying
    trusted: tuple[Network, ...]  # [server] proxy_trusted: the peers whose proxied logins count

    def owner_elsewhere(self, user: str) -> Node | None:
        """The node that owns `user`'s mailbox when it is not this one (blocking: the
        accounts database; AccountsUnavailable when it cannot answer)."""
        owner = self.owners.owner(user)
        return owner if owner is not None and owner.name != self.node else None

    def logins_from(self, conn: Connection) -> ProxyLogins | None:
        """The proxied logins a session may make: only where the connection itself (not the
        client its PROXY header names) comes from a trusted peer."""
        return self.logins if listed(conn.socket_peer_ip, self.trusted) else None

    async def log_in_at_owner(self, conn: Connection, service: str, user: str, owner: Node,
                              login: Callable[[Upstream, bytes], Awaitable[T]]
                              ) -> tuple[Upstream, T]:
        """Connected to `owner`, `login` done there for `user`: the connection and what the
        login gave back. OwnerUnavailable (logged, counted) when that could not be done."""
        try:
            if self.logins is None:
                raise OwnerUnavailable("no [cluster] secret_file to log in there with")
            connection = await upstream.connect(owner.host, OWNER_PORTS[service](owner),
                                                (conn.peer_ip, conn.peer_port))
            try:
                answer = await login(connection, self.logins.credentials(user, self.node))
            except BaseException:
                connection.close()
                raise
        except OwnerUnavailable as exc:
            log.warning("%s: cannot proxy the %s session from %s to node %s: %s", user,
                        service, conn.peer_ip, owner.name, exc)
            metrics.inc("proxied_sessions_total", service=service, node=owner.name,
                        result="unavailable")
            raise
        log.info("%s: %s session from %s proxied to node %s", user, service, conn.peer_ip,
                 owner.name)
        metrics.inc("proxied_sessions_total", service=service, node=owner.name, result="ok")
        return connection, answer
