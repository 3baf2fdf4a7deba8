"""A TLS-RPT report delivered over HTTPS (RFC 8460 3, rua=https:): one POST of the gzipped
JSON report as application/tlsrpt+gzip, to a server whose certificate validates for the URI's
host (WebPKI, plus [outbound_tls] ca_file), its address found by resolver.py as every other
lookup of the server. Blocking: the report sender runs outside any event loop.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.parse

from ..resolver import NoSuchDomain, Resolver, TemporaryDnsError

CONTENT_TYPE = "application/tlsrpt+gzip"
# Seconds to connect and then for each read or write: the hourly report run waits meanwhile.
POST_TIMEOUT = 30.0
# What of the server's answer is read: only its status matters.
MAX_ANSWER_BYTES = 64 * 1024


class PostError(Exception):
    """The report could not be delivered to the URI (tried again with the day's next run)."""


def post_report(uri: str, body: bytes, context: ssl.SSLContext, resolver: Resolver,
                timeout: float = POST_TIMEOUT) -> None:
    """POST `body` to the https: `uri`; PostError unless it answers 2xx."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise PostError(f"{uri}: not an https URI")
    try:
        port = parts.port or 443
        addresses = resolver.addresses_blocking(parts.hostname)
    except (ValueError, NoSuchDomain, TemporaryDnsError) as exc:
        raise PostError(f"{uri}: {exc}") from None
    if not addresses:
        raise PostError(f"{uri}: {parts.hostname} has no address")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = http.client.HTTPSConnection(parts.hostname, port, timeout=timeout, context=context)
    try:
        raw = _connect(addresses, port, timeout)
        # Connected to an address we looked up, but TLS checks the URI's host name.
        connection.sock = context.wrap_socket(raw, server_hostname=parts.hostname)
        connection.request("POST", path, body, {"Content-Type": CONTENT_TYPE})
        answer = connection.getresponse()
        answer.read(MAX_ANSWER_BYTES)
    except (OSError, http.client.HTTPException) as exc:
        raise PostError(f"{uri}: {exc or type(exc).__name__}") from None
    finally:
        connection.close()
    if not 200 <= answer.status < 300:
        raise PostError(f"{uri} answered HTTP {answer.status}")


def _connect(addresses: list[str], port: int, timeout: float) -> socket.socket:
    """A connection to the first of `addresses` (IPv6 first) that takes one; the last one's
    error when none does."""
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            failure = exc
    raise failure
