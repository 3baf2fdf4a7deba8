"""resolver.py against a real authoritative server (Knot DNS on loopback): answers, the three
kinds of no-answer, time bounds, and the cache honouring TTLs; MX routing through it."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailforge.config import DeliveryConfig, DnsConfig
from mailforge.queue.routing import Host, RouteError, Router
from mailforge.resolver import NoSuchDomain, Resolver, TemporaryDnsError
from tests.system.dns_server import txt

SPF = "v=spf1 ip4:192.0.2.0/24 -all"
LONG = "v=DKIM1; k=rsa; p=" + "A" * 400  # over one 255-octet string


@pytest.fixture
def zone(dns_server):
    dns_server.zone("auth.test", [txt("@", SPF), txt("sel._domainkey", LONG),
                                  txt("brief", "gone soon", ttl=1), "mx MX 10 host.auth.test.",
                                  "host A 192.0.2.7", "empty A 192.0.2.8"])
    return dns_server


def resolver_for(*nameservers: str, lifetime: float = 2.0) -> Resolver:
    return Resolver(DnsConfig(nameservers=list(nameservers), timeout=lifetime / 2,
                              lifetime=lifetime))


def test_answers_no_data_and_nxdomain_are_told_apart(zone):
    resolver = resolver_for(zone.nameserver)
    assert resolver.txt_blocking("auth.test") == [SPF]
    assert resolver.txt_blocking("sel._domainkey.auth.test") == [LONG]
    assert resolver.lookup_blocking("empty.auth.test", "TXT") == []
    with pytest.raises(NoSuchDomain):
        resolver.lookup_blocking("missing.auth.test", "TXT")


def test_refused_and_silent_servers_are_temporary_and_bounded(zone, silent_nameserver):
    with pytest.raises(TemporaryDnsError, match="SERVFAIL"):  # Knot serves no such zone
        resolver_for(zone.nameserver).lookup_blocking("elsewhere.test", "TXT")
    started = time.monotonic()
    with pytest.raises(TemporaryDnsError, match="timeout"):
        resolver_for(silent_nameserver.nameserver, lifetime=0.5).txt_blocking("auth.test")
    assert time.monotonic() - started < 2.0
    with pytest.raises(TemporaryDnsError, match="timeout"):
        asyncio.run(resolver_for(silent_nameserver.nameserver, lifetime=0.5)
                    .lookup("auth.test", "MX"))


def test_cache_keeps_answers_for_their_ttl(zone):
    resolver = resolver_for(zone.nameserver, lifetime=0.5)
    resolver.txt_blocking("auth.test")
    resolver.txt_blocking("brief.auth.test")
    with pytest.raises(NoSuchDomain):
        resolver.lookup_blocking("missing.auth.test", "TXT")
    zone.stop()  # from now on only the cache can answer
    assert resolver.txt_blocking("auth.test") == [SPF]
    with pytest.raises(NoSuchDomain):  # negative answers too, for the SOA's minimum TTL
        resolver.lookup_blocking("missing.auth.test", "TXT")
    time.sleep(1.1)
    with pytest.raises(TemporaryDnsError):  # its 1 s TTL is over: asked again, nobody answers
        resolver.txt_blocking("brief.auth.test")


def test_mx_routing_goes_through_the_same_resolver(zone):
    async def route(domain: str):
        try:
            return await Router(DeliveryConfig(), resolver_for(zone.nameserver)).route(domain)
        except RouteError as exc:
            return exc
    dest = asyncio.run(route("mx.auth.test"))
    assert dest.hosts == [Host("host.auth.test", "192.0.2.7", 25)]
    missing = asyncio.run(route("nowhere.auth.test"))
    assert missing.permanent and missing.status == "5.1.2"
    refused = asyncio.run(route("elsewhere.test"))
    assert not refused.permanent and refused.status == "4.4.3"
