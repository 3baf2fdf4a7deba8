"""Every DNS lookup the server makes: MX routing, SPF, DKIM keys, DMARC policies.

One answer model for all of them: records (an empty list when the name exists without
records of that type), `NoSuchDomain` (NXDOMAIN: permanent), or `TemporaryDnsError` (a
timeout, SERVFAIL, REFUSED, no server reachable): a caller turns the last into a 4xx or a
deferral, never into a pass or a fail. Each lookup is bounded by [dns] lifetime.

Answers are cached in one LRU cache shared by the asynchronous side (the event loop: MX
routing) and the blocking side (pyspf and dkimpy call back synchronously, so the inbound checks
run in a worker thread): positive answers for their TTL, NXDOMAIN and no-data answers for the
negative TTL of the zone's SOA (RFC 2308), as dnspython's cache does both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rdata
import dns.resolver

from .config import DnsConfig, parse_nameserver

# Names cached per process: a busy MX sees a few thousand sending domains an hour, each with a
# handful of names (SPF includes, DKIM keys, _dmarc); the LRU drops the rest.
CACHE_ENTRIES = 20_000
# EDNS payload of signed lookups: RRSIGs make answers long; 1232 avoids IP fragmentation
# (DNS flag day 2020), and a longer answer comes over TCP.
SIGNED_PAYLOAD = 1232


class TemporaryDnsError(Exception):
    """No answer could be had now (timeout, SERVFAIL, no server reachable): try again later."""


class NoSuchDomain(Exception):
    """NXDOMAIN: the name does not exist (a permanent answer)."""


class Resolver:
    """Bounded, cached lookups through [dns] nameservers (or the system's resolvers)."""

    def __init__(self, config: DnsConfig | None = None) -> None:
        self.config = config or DnsConfig()
        self.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
        self._async: dns.asyncresolver.Resolver | None = None
        self._sync: dns.resolver.Resolver | None = None
        self._signed: dns.asyncresolver.Resolver | None = None

    async def lookup(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        """The records of `rdtype` at `name` ([] when it has none), from the event loop."""
        if self._async is None:  # made on first use: a server that never looks up reads nothing
            self._async = self._configure(dns.asyncresolver.Resolver)
        try:
            return list(await self._async.resolve(name, rdtype, search=False))
        except Exception as exc:  # noqa: BLE001 (mapped to our three answers, or raised again)
            return _no_records(name, exc)

    async def query_signed(self, name: str, rdtype: str) -> tuple[dns.message.Message, bool]:
        """The whole response, with its RRSIGs and NSEC/NSEC3 records (DO bit) and the
        server's AD flag, for DNSSEC checks (tlspolicy/dnssec.py), and whether it is NXDOMAIN:
        a "no such record" answer is proven there, not taken at its word."""
        if self._signed is None:
            self._signed = self._configure(dns.asyncresolver.Resolver)
            self._signed.use_edns(0, dns.flags.DO, SIGNED_PAYLOAD)
            self._signed.flags = dns.flags.RD | dns.flags.AD  # RFC 6840 5.7: ask for AD
            # Its own cache: an answer without signatures, cached by the plain resolver,
            # must not stand in for a signed one.
            self._signed.cache = dns.resolver.LRUCache(CACHE_ENTRIES // 10)
        try:
            answer = await self._signed.resolve(name, rdtype, search=False,
                                                raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            return exc.response(exc.qnames()[0]), True
        except Exception as exc:  # noqa: BLE001
            _no_records(name, exc)
            raise
        return answer.response, False

    def lookup_blocking(self, name: str, rdtype: str) -> list[dns.rdata.Rdata]:
        """As lookup(), blocking: for libraries that call back synchronously, in a thread."""
        if self._sync is None:
            self._sync = self._configure(dns.resolver.Resolver)
        try:
            return list(self._sync.resolve(name, rdtype, search=False))
        except Exception as exc:  # noqa: BLE001
            return _no_records(name, exc)

    async def addresses(self, name: str) -> list[str]:
        """The name's IPv6 then IPv4 addresses, for a connection to try in turn (RFC 6724's
        order between families); NoSuchDomain, or TemporaryDnsError when neither family could
        be looked up."""
        return _addresses([await _attempt(self.lookup, name, rdtype)
                           for rdtype in ADDRESS_TYPES])

    def addresses_blocking(self, name: str) -> list[str]:
        """As addresses(), blocking."""
        return _addresses([_attempt_blocking(self.lookup_blocking, name, rdtype)
                           for rdtype in ADDRESS_TYPES])

    def txt_blocking(self, name: str) -> list[str]:
        """Each TXT record at `name`, its strings joined (RFC 7208 3.3, RFC 6376 3.6.2.2)."""
        return [b"".join(r.strings).decode("utf-8", "replace")
                for r in self.lookup_blocking(name, "TXT")]

    def _configure(self, kind: type) -> dns.resolver.Resolver:
        servers = self.config.nameservers
        resolver = kind(configure=not servers)
        if servers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(text))
                                    for text in servers]
        resolver.timeout = self.config.timeout
        resolver.lifetime = self.config.lifetime
        resolver.cache = self.cache
        return resolver


ADDRESS_TYPES = ("AAAA", "A")
Records = list[dns.rdata.Rdata]


async def _attempt(lookup: Callable[[str, str], Awaitable[Records]], name: str,
                   rdtype: str) -> Records | TemporaryDnsError:
    try:
        return await lookup(name, rdtype)
    except TemporaryDnsError as exc:
        return exc


def _attempt_blocking(lookup: Callable[[str, str], Records], name: str,
                      rdtype: str) -> Records | TemporaryDnsError:
    try:
        return lookup(name, rdtype)
    except TemporaryDnsError as exc:
        return exc


def _addresses(attempts: list[Records | TemporaryDnsError]) -> list[str]:
    """The addresses the lookups of each type found, in order; the last failure when none
    found any and one failed (NoSuchDomain was raised by the lookup itself)."""
    found = [r.address for attempt in attempts if not isinstance(attempt, Exception)
             for r in attempt]
    failures = [attempt for attempt in attempts if isinstance(attempt, Exception)]
    if not found and failures:
        raise failures[-1]
    return found


def _no_records(name: str, exc: Exception) -> list[dns.rdata.Rdata]:
    """[] for a name without such records; our exceptions for the rest."""
    if isinstance(exc, dns.resolver.NoAnswer):
        return []
    if isinstance(exc, (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN, dns.name.NameTooLong,
                        dns.name.EmptyLabel, dns.name.LabelTooLong)):
        raise NoSuchDomain(f"{name}: no such domain") from None
    if isinstance(exc, dns.exception.Timeout):
        raise TemporaryDnsError(f"{name}: DNS timeout") from None
    if isinstance(exc, dns.resolver.NoNameservers):
        raise TemporaryDnsError(f"{name}: DNS server failure (SERVFAIL)") from None
    if isinstance(exc, (dns.exception.DNSException, OSError)):
        raise TemporaryDnsError(f"{name}: DNS error ({exc})") from None
    raise exc
