"""The logins a node makes at a mailbox's owner before splicing a session there: read the
owner's greeting, STLS (POP3, RFC 2595) or STARTTLS (IMAP) and the handshake where the
cluster's link is TLS ([cluster] tls), AUTH PLAIN (POP3) or AUTHENTICATE PLAIN (IMAP, with
SASL-IR) with the proxied login's credentials (auth.proxylogin), and hand back the owner's
answer for the client. Anything but success is OwnerUnavailable: the client is told to try
later, never that its password was wrong (the front node checked that itself), and a
failure before the login (STARTTLS refused, a certificate not verified) sends no secret.
"""

from __future__ import annotations

import base64

from .connection.upstream import OwnerUnavailable, Upstream

# The tag of our commands at the owner; the client's own tag replaces it in the answer.
IMAP_TAG = b"P1"


async def pop3_login(upstream: Upstream, credentials: bytes) -> bytes:
    """The owner's +OK line to the login."""
    greeting = await upstream.readline()
    if not greeting.startswith(b"+OK"):
        raise OwnerUnavailable(f"greeted with {_quoted(greeting)}")
    if upstream.needs_tls:
        upstream.write(b"STLS\r\n")
        answer = await upstream.readline()
        if not answer.startswith(b"+OK"):
            raise OwnerUnavailable(f"refused STLS: {_quoted(answer)}")
        await upstream.start_tls()
    upstream.write(b"AUTH PLAIN " + base64.b64encode(credentials) + b"\r\n")
    answer = await upstream.readline()
    if not answer.startswith(b"+OK"):
        raise OwnerUnavailable(f"refused the login: {_quoted(answer)}")
    return answer


async def imap_login(upstream: Upstream, credentials: bytes) -> tuple[bytes, bytes]:
    """The owner's untagged lines and its tagged OK, less the tag (with the capabilities it
    announces after a login)."""
    greeting = await upstream.readline()
    if not greeting.startswith(b"* OK"):
        raise OwnerUnavailable(f"greeted with {_quoted(greeting)}")
    if upstream.needs_tls:
        _, completion = await _imap_command(upstream, b"STARTTLS")
        if not completion.startswith(b"OK"):
            raise OwnerUnavailable(f"refused STARTTLS: {_quoted(completion)}")
        await upstream.start_tls()
    untagged, completion = await _imap_command(
        upstream, b"AUTHENTICATE PLAIN " + base64.b64encode(credentials))
    if not completion.startswith(b"OK"):
        raise OwnerUnavailable(f"refused the login: {_quoted(completion)}")
    return untagged, completion


async def _imap_command(upstream: Upstream, command: bytes) -> tuple[bytes, bytes]:
    """`command` sent under our tag: the owner's untagged lines and its completion, less the
    tag."""
    upstream.write(IMAP_TAG + b" " + command + b"\r\n")
    untagged = []
    while True:
        line = await upstream.readline()
        if line.startswith(IMAP_TAG + b" "):
            return b"".join(untagged), line[len(IMAP_TAG) + 1:]
        if not line.startswith(b"* "):  # a continuation: AUTHENTICATE without SASL-IR
            raise OwnerUnavailable(f"answered {command.split()[0].decode()} with "
                                   f"{_quoted(line)}")
        untagged.append(line)


def _quoted(line: bytes) -> str:
    """An owner's line for a log record: bounded, one line."""
    return repr(line.rstrip(b"\r\n")[:200])
