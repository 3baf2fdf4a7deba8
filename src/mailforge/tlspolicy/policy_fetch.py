"""The HTTPS fetch of an MTA-STS policy (RFC 8461 3.3), apart from mtasts.py so that aiohttp
is imported only when a policy is fetched."""

from __future__ import annotations

import socket
import ssl

import aiohttp
import aiohttp.abc

from ..resolver import NoSuchDomain, Resolver, TemporaryDnsError
from .mtasts import FETCH_TIMEOUT, MAX_POLICY_BYTES, PolicyError


async def fetch_policy(url: str, tls_context: ssl.SSLContext, resolver: Resolver) -> str:
    """The policy's text at `url`: validated certificate, no redirects, text/plain, at most
    MAX_POLICY_BYTES; PolicyError otherwise."""
    connector = aiohttp.TCPConnector(ssl=tls_context, resolver=_OurResolver(resolver))
    try:
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT)) as http:
            async with http.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise PolicyError("sts-policy-fetch-error",
                                      f"{url} answered HTTP {response.status}")
                if response.content_type != "text/plain":
                    raise PolicyError("sts-policy-invalid",
                                      f"{url} is {response.content_type}, not text/plain")
                body = await _read_at_most(response.content, MAX_POLICY_BYTES + 1)
    except aiohttp.ClientConnectorCertificateError as exc:
        raise PolicyError("sts-webpki-invalid", f"{url}: {exc.certificate_error}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise PolicyError("sts-policy-fetch-error", f"{url}: {exc or type(exc).__name__}") from None
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError("sts-policy-invalid", f"{url}: over {MAX_POLICY_BYTES} bytes")
    return body.decode("utf-8", "replace")


async def _read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to `limit` bytes. One read(limit) gives only what has arrived so far: a
    policy in two TCP segments would be cut, and read as no policy at all."""
    body = b""
    while len(body) < limit:
        chunk = await stream.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return body


class _OurResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's name lookups through resolver.py, as every other lookup of the server."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict]:
        """IPv6 and IPv4 addresses: aiohttp tries each in turn."""
        try:
            addresses = await self.resolver.addresses(host)
        except (NoSuchDomain, TemporaryDnsError) as exc:
            raise OSError(str(exc)) from None
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for address in addresses]

    async def close(self) -> None:
        pass
