"""MX/A/AAAA routing against a tiny DNS server on loopback that the test starts (no internet)."""

from __future__ import annotations

import asyncio
import collections

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from mailforge.config import DeliveryConfig
from mailforge.config import DnsConfig
from mailforge.queue.routing import Host, RouteError, Router
from mailforge.resolver import Resolver

ZONE = {
    ("mx.test.", "MX"): ["20 backup.mx.test.", "10 primary.mx.test."],
    ("primary.mx.test.", "A"): ["192.0.2.10"],
    ("primary.mx.test.", "AAAA"): ["2001:db8::10"],
    ("backup.mx.test.", "A"): ["192.0.2.20"],
    ("implicit.test.", "A"): ["192.0.2.30"],
    ("null.test.", "MX"): ["0 ."],
    ("dangling.test.", "MX"): ["10 gone.dangling.test."],
    ("halfbroken.test.", "MX"): ["10 gone.halfbroken.test.", "20 ok.halfbroken.test."],
    ("ok.halfbroken.test.", "A"): ["192.0.2.40"],
    ("smart.test.", "A"): ["192.0.2.50"],
}
# Names that exist (NOERROR, possibly with no answer for a type).
EXISTING = {name for name, _ in ZONE} | {"empty.test."}
SERVFAIL = {"broken.test."}


class Responder(asyncio.DatagramProtocol):
    """Answers from ZONE; SERVFAIL for SERVFAIL names; NXDOMAIN for the rest."""

    def __init__(self) -> None:
        self.queries: collections.Counter = collections.Counter()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        self.queries[(name, rdtype)] += 1
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in EXISTING:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rdtype) in ZONE:
            response.answer.append(dns.rrset.from_text_list(name, 300, "IN", rdtype, ZONE[(name, rdtype)]))
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
def run_routes():
    """Route domains with a resolver that asks only the loopback responder."""

    def run(config: DeliveryConfig, *domains: str):
        async def main():
            loop = asyncio.get_running_loop()
            transport, responder = await loop.create_datagram_endpoint(
                Responder, local_addr=("127.0.0.1", 0))
            port = transport.get_extra_info("sockname")[1]
            dns_config = DnsConfig(nameservers=[f"127.0.0.1:{port}"], lifetime=2.0)
            router = Router(config, Resolver(dns_config))
            try:
                results = []
                for domain in domains:
                    try:
                        results.append(await router.route(domain))
                    except RouteError as exc:
                        results.append(exc)
                return results, responder.queries
            finally:
                transport.close()
        return asyncio.run(main())
    return run


def test_mx_in_preference_order_with_both_families(run_routes):
    (dest,), _ = run_routes(DeliveryConfig(), "mx.test")
    assert dest.key == "mx.test" and not dest.smarthost
    assert dest.hosts == [Host("primary.mx.test", "2001:db8::10", 25),
                          Host("primary.mx.test", "192.0.2.10", 25),
                          Host("backup.mx.test", "192.0.2.20", 25)]


def test_no_mx_falls_back_to_the_domain_itself(run_routes):
    (dest,), _ = run_routes(DeliveryConfig(), "implicit.test")
    assert dest.hosts == [Host("implicit.test", "192.0.2.30", 25)]


def test_null_mx_is_permanent(run_routes):
    (error,), _ = run_routes(DeliveryConfig(), "null.test")
    assert isinstance(error, RouteError) and error.permanent and error.status == "5.1.10"


def test_nxdomain_is_permanent(run_routes):
    (error,), _ = run_routes(DeliveryConfig(), "nowhere.test")
    assert error.permanent and error.status == "5.1.2" and "NXDOMAIN" in error.text


def test_servfail_is_temporary(run_routes):
    (error,), _ = run_routes(DeliveryConfig(), "broken.test")
    assert not error.permanent and error.status == "4.4.3" and "SERVFAIL" in error.text


def test_existing_name_without_addresses_is_permanent(run_routes):
    (error,), _ = run_routes(DeliveryConfig(), "empty.test")
    assert error.permanent


def test_mx_host_that_does_not_exist_is_skipped(run_routes):
    (dangling, half), _ = run_routes(DeliveryConfig(), "dangling.test", "halfbroken.test")
    assert isinstance(dangling, RouteError) and dangling.permanent and dangling.status == "5.4.4"
    assert half.hosts == [Host("ok.halfbroken.test", "192.0.2.40", 25)]


def test_override_and_smarthost_skip_mx(run_routes):
    config = DeliveryConfig(mx_override={"mx.test": "127.0.0.1:2600"})
    (over, other), queries = run_routes(config, "MX.test", "implicit.test")
    assert over.hosts == [Host("127.0.0.1", "127.0.0.1", 2600)] and over.key == "127.0.0.1:2600"
    assert ("mx.test.", "MX") not in queries and other.hosts[0].address == "192.0.2.30"
    (smart,), queries = run_routes(DeliveryConfig(smarthost="smart.test:587"), "mx.test")
    assert smart.smarthost and smart.key == "smarthost"
    assert smart.hosts == [Host("smart.test", "192.0.2.50", 587)]
    assert ("mx.test.", "MX") not in queries


def test_address_literal_goes_straight_to_the_address(run_routes):
    (dest,), queries = run_routes(DeliveryConfig(), "[192.0.2.9]")
    assert dest.hosts == [Host("192.0.2.9", "192.0.2.9", 25)] and not queries
