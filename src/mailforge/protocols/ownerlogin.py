"""The logins a node makes at a mailbox's owner before splicing a session there: read the
owner's greeting, AUTH PLAIN (POP3) or AUTHENTICATE PLAIN (IMAP, with SASL-IR) with the proxied
login's credentials (auth.proxylogin), and hand back the owner's answer for the client.
Anything but success is OwnerUnavailable: the client is told to try later, never that its
password was wrong (the front node checked that itself).
"""

from __future__ import annotations

import base64

from .connection.upstream import OwnerUnavailable, Upstream

# The tag of our AUTHENTICATE at the owner; the client's own tag replaces it in the answer.
IMAP_TAG = b"P1"


async def pop3_login(upstream: Upstream, credentials: bytes) -> bytes:
    """The owner's +OK line to the login."""
    greeting = await upstream.readline()
    if not greeting.startswith(b"+OK"):
        raise OwnerUnavailable(f"greeted with {_quoted(greeting)}")
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
    upstream.write(IMAP_TAG + b" AUTHENTICATE PLAIN " + base64.b64encode(credentials) + b"\r\n")
    untagged = []
    while True:
        line = await upstream.readline()
        if line.startswith(IMAP_TAG + b" "):
            completion = line[len(IMAP_TAG) + 1:]
            if not completion.startswith(b"OK"):
                raise OwnerUnavailable(f"refused the login: {_quoted(line)}")
            return b"".join(untagged), completion
        if not line.startswith(b"* "):  # a continuation: the owner did not take SASL-IR
            raise OwnerUnavailable(f"answered the login with {_quoted(line)}")
        untagged.append(line)


def _quoted(line: bytes) -> str:
    """An owner's line for a log record: bounded, one line."""
    return repr(line.rstrip(b"\r\n")[:200])
