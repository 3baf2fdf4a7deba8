"""Mailbox routing for POP3 and IMAP sessions, as one worker's sessions see it: which node
owns a user's mailbox, logging in there on the user's behalf, and whether this session's
peer may itself make such logins (README, "Scaling out").

A session that logs in a user owned by another node is proxied: the driver logs in at the
owner (`log_in_at_owner`), answers the client with the owner's answer, and splices
(upstream.splice). The owner down, hung or refusing, or (where [cluster] tls asks for TLS)
offering no STARTTLS or a certificate the cluster's CAs did not sign for its host: a
temporary error for the client.

The client is counted against its per-IP cap once, on the node it reached: the owner counts
a session that node marks as counted (`counted_as`) toward the service's cap only, and takes
no login but the node's proxied one on it (`marked_login_refused`); where the link is TLS,
the owner takes that login only inside it (`cleartext_login_refused`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ... import metrics
from ...auth.api import Node, OwnerResolver
from ...auth.proxylogin import ProxyLogins
from ...policy.networks import Network, listed
from ...ratekeeper.counters import UNLIMITED
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
    # [cluster] tls: what an owner's certificate is verified with (tls.cluster_client_context);
    # None: the link is plain, both ways.
    tls: ssl.SSLContext | None

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
                                                (conn.peer_ip, conn.peer_port), self.tls)
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

    def cleartext_login_refused(self, conn: Connection, user: str, via: str) -> bool:
        """Whether a node's proxied login (`via` names the node) must be refused for coming
        outside TLS where the link is TLS: that node is misconfigured, and its sessions fail
        until it is mended rather than go on sending the master secret in the clear. Logged."""
        if not via or conn.tls or self.tls is None:
            return False
        log.warning("%s: refused the proxied login of node %s (%s) outside TLS: [cluster] tls "
                    "wants STARTTLS first", user, via, conn.socket_peer_ip)
        return True


def counted_as(conn: Connection, max_per_ip: int) -> tuple[str, int]:
    """What the rate-keeper counts `conn`'s session under, and its per-IP cap there. A session
    a cluster node proxies here (its PROXY header marked client_counted; only a proxy_trusted
    peer's header is read at all) was counted against the client's cap on that node: here it
    counts toward the service's max_connections alone, which protects this node, under a key
    naming the node that is no IP address, so no client's count or block is touched."""
    if conn.client_counted:
        return f"via {conn.socket_peer_ip}", UNLIMITED
    return conn.peer_ip, max_per_ip


def marked_login_refused(conn: Connection, user: str, via: str) -> bool:
    """Whether a login must be refused: on a connection marked client_counted only the
    marking node's proxied login (the master secret; `via` names the node) may be made, or the
    session would be one that no per-IP cap counted. Logged: a node of ours misbehaves."""
    if not conn.client_counted or via:
        return False
    log.warning("%s: refused a login from %s on a connection %s marked as a proxied session: "
                "only a proxied login may be made there", user, conn.peer_ip, conn.socket_peer_ip)
    return True
