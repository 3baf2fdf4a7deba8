"""Proxied logins between the nodes of a cluster (mailbox routing, README "Scaling out").

A node that authenticated a user whose mailbox another node owns logs in there on the user's
behalf, as Dovecot's proxy does with a master user: SASL PLAIN (RFC 4616) with the user as
authorization identity, its own node name as authentication identity, and the cluster's
master secret ([cluster] secret_file) as password. The owner accepts it only from a
[server] proxy_trusted peer (protocols/connection/owners.py decides), compares the secret in
constant time, and logs the node, never the secret. A wrong secret is a failed login like
any other, counted against the client the PROXY header names.
"""

from __future__ import annotations

import hmac

from ..config import Config
from ..errors import UsageError
from .api import LoginStatus

# A master secret shorter than this is refused at start: it guards every mailbox at once.
MIN_SECRET_LENGTH = 16


class ProxyLogins:
    def __init__(self, secret: bytes, logins: LoginStatus) -> None:
        self._secret = secret
        self._logins = logins

    def authorize(self, user: str, node: str, password: str) -> bool:
        """May `node`, presenting `password`, log in as `user` (an enabled mailbox)?"""
        presented = password.encode("utf-8", "surrogateescape")
        return hmac.compare_digest(presented, self._secret) and self._logins.may_log_in(user)

    def credentials(self, user: str, node: str) -> bytes:
        """The PLAIN message with which `node` logs in as `user` on the owner."""
        return b"\0".join((user.encode(), node.encode(), self._secret))


def read_secret(config: Config) -> bytes | None:
    """The master secret of [cluster] secret_file; None when none is configured. UsageError
    for a file that cannot be read or a secret too weak: `serve` and `check-config` say so
    before any worker starts."""
    name = config.cluster.secret_file
    if not name:
        return None
    path = config.data_dir / name
    try:
        with open(path, "rb") as fh:
            secret = fh.readline().rstrip(b"\r\n")
    except OSError as exc:
        raise UsageError(f"[cluster] secret_file: cannot read {path}: {exc.strerror}") from None
    if b"\0" in secret:
        raise UsageError(f"[cluster] secret_file: the secret in {path} holds a NUL byte, "
                             "which SASL PLAIN cannot carry")
    if len(secret) < MIN_SECRET_LENGTH:
        raise UsageError(f"[cluster] secret_file: the secret in {path} is shorter than "
                             f"{MIN_SECRET_LENGTH} characters")
    return secret
