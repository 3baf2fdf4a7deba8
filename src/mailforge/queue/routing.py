"""Where mail for a domain goes: smarthost, mx_override, or MX then A/AAAA (RFC 5321 5.1).

MX hosts are tried in preference order, hosts of equal preference in random order; a domain
without MX records is its own implicit MX. A null MX (RFC 7505: one MX of preference 0 for
".") says the domain takes no mail. NXDOMAIN is permanent; SERVFAIL and timeouts are not.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field

import dns.name
import dns.rdata

from ..auth.api import Node
from ..config import DeliveryConfig, parse_hostport
from ..resolver import NoSuchDomain, Resolver, TemporaryDnsError
from ..tlspolicy.dnssec import DnssecError, SecureLookup

SMTP_PORT = 25
# RFC 5321 5.1: a sender should give up past some number of MX hosts; Postfix tries 5.
MAX_MX_HOSTS = 5


class RouteError(Exception):
    """No host to deliver to: `permanent` says whether a retry could help."""

    def __init__(self, status: str, text: str, permanent: bool) -> None:
        super().__init__(f"{status} {text}")
        self.status, self.text, self.permanent = status, text, permanent


@dataclass(frozen=True)
class Host:
    name: str  # what the host is called: for logs, DSNs and the TLS server name
    address: str
    port: int
    # A cluster node's internal port (mailbox routing): it takes a PROXY header first.
    proxy_protocol: bool = False
    # Where its TLSA records may be looked up, in order (RFC 7672 2.2.2): only when the MX
    # lookup and this address's lookup were both DNSSEC-secure; empty: no DANE.
    tlsa_names: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """The host as DSNs and logs name it (RFC 3464 Remote-MTA)."""
        return f"{self.name}[{self.address}]:{self.port}"


@dataclass
class Destination:
    """Hosts to try in order. `key` groups recipients that may share a connection."""

    key: str
    hosts: list[Host] = field(default_factory=list)
    smarthost: bool = False
    # The domain whose TLS policies (DANE, MTA-STS) apply: a destination found by MX lookup.
    # "" for the smarthost, an mx_override or an address literal: the operator chose those.
    policy_domain: str = ""
    # Its messages carry "TLS-Required: No" (RFC 8689 5): a TLS policy failure may pass.
    tls_optional: bool = False
    # Its messages carry REQUIRETLS (RFC 8689): only a host with validated TLS that offers
    # REQUIRETLS may take them; the others are passed over.
    requiretls: bool = False


def owner_destination(owner: Node) -> Destination:
    """The internal SMTP port of the node that owns a mailbox (Postfix's transport_maps)."""
    return Destination(f"node {owner.name}", [Host(owner.name, owner.host, owner.smtp_port,
                                                   proxy_protocol=True)])


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


class Router:
    def __init__(self, config: DeliveryConfig, resolver: Resolver,
                 dnssec: SecureLookup | None = None) -> None:
        """`dnssec`: MX lookups validated (for DANE); None: plain lookups, never secure."""
        self.config = config
        self.resolver = resolver
        self.dnssec = dnssec
        self._overrides = {d.lower().rstrip("."): parse_hostport(t)
                           for d, t in config.mx_override.items()}

    async def route(self, domain: str) -> Destination:
        domain = domain.lower().rstrip(".")
        if self.config.smarthost:
            host, port = parse_hostport(self.config.smarthost)
            return Destination("smarthost", await self._addresses(host, port), smarthost=True)
        if domain in self._overrides:
            host, port = self._overrides[domain]
            return Destination(f"{host}:{port}", await self._addresses(host, port))
        if domain.startswith("[") and domain.endswith("]"):
            literal = domain[1:-1].removeprefix("ipv6:")
            return Destination(domain, [Host(literal, literal, SMTP_PORT)])
        mx, secure = await self._mx_records(domain)
        return Destination(domain, await self._mx_hosts(domain, mx, secure),
                           policy_domain=domain)

    async def _mx_records(self, domain: str) -> tuple[list[tuple[int, dns.name.Name]], bool]:
        """(preference, exchange) of each MX record, and whether the lookup was secure."""
        try:
            if self.dnssec is None:
                records, secure = await self.resolver.lookup(domain, "MX"), False
            else:
                answer = await self.dnssec.lookup(domain, "MX")
                if answer.nxdomain:
                    raise NoSuchDomain(domain)
                records, secure = answer.records, answer.secure
        except NoSuchDomain:
            raise RouteError("5.1.2", f"domain {domain} does not exist (NXDOMAIN)", True) from None
        except TemporaryDnsError as exc:
            raise RouteError("4.4.3", f"cannot look up MX: {exc}", False) from None
        except DnssecError as exc:
            # RFC 7672 2.2.1: a bogus MX RRset is not used; the destination waits.
            raise RouteError("4.7.5", f"MX of {domain} is DNSSEC-bogus: {exc}", False) from None
        return [(r.preference, r.exchange) for r in records], secure

    async def _mx_hosts(self, domain: str, records: list[tuple[int, dns.name.Name]],
                        mx_secure: bool) -> list[Host]:
        """`mx_secure`: the MX lookup (or its denial) was DNSSEC-secure, so the hosts it
        names may use DANE (RFC 7672 2.2.1)."""
        if any(name == dns.name.root for _, name in records):
            # RFC 7505 3: a null MX, whatever else is there, means "no mail".
            raise RouteError("5.1.10", f"domain {domain} accepts no mail (null MX)", True)
        port = self.config.mx_port
        if not records:  # RFC 5321 5.1: the domain itself is the host
            return await self._addresses(domain, port, implicit=True, dane=mx_secure)
        hosts: list[Host] = []
        failures: list[RouteError] = []
        for name in _mx_order(records)[:MAX_MX_HOSTS]:
            try:
                hosts += await self._addresses(name.to_text(omit_final_dot=True), port,
                                               dane=mx_secure)
            except RouteError as exc:
                failures.append(exc)
        if hosts:
            return hosts
        permanent = all(f.permanent for f in failures)
        raise RouteError("5.4.4" if permanent else failures[-1].status,
                         f"no MX host of {domain} has an address: {failures[-1].text}", permanent)

    async def _addresses(self, host: str, port: int, implicit: bool = False,
                         dane: bool = False) -> list[Host]:
        """The host's IPv6 then IPv4 addresses (each family as the resolver ordered it).
        `dane`: the MX lookup that named it was secure; its address lookups are validated."""
        try:
            ipaddress.ip_address(host)
            return [Host(host, host, port)]
        except ValueError:
            pass
        found: list[Host] = []
        errors: list[Exception] = []
        for rdtype in ("AAAA", "A"):
            try:
                records, tlsa_names = await self._address_records(host, rdtype, dane)
                found += [Host(host, r.address, port, tlsa_names=tlsa_names) for r in records]
            except NoSuchDomain as exc:
                errors.append(exc)
                break  # the name does not exist: no other type will
            except TemporaryDnsError as exc:
                errors.append(exc)
        if found:
            return found
        if any(isinstance(e, TemporaryDnsError) for e in errors):
            raise RouteError("4.4.3", f"cannot look up {errors[-1]}", False)
        status = "5.1.2" if implicit else "5.4.4"
        raise RouteError(status, f"host {host} not found", True)

    async def _address_records(self, host: str, rdtype: str,
                               dane: bool) -> tuple[list[dns.rdata.Rdata], tuple[str, ...]]:
        """The host's records of `rdtype`, and where its TLSA records may be looked up.
        RFC 7672 2.2.2: only a secure address lookup lets DANE apply (an insecure one could
        point anywhere); a bogus one makes the host unusable. Behind a secure CNAME chain, the
        expanded name comes first, then the name the MX record gave."""
        if not dane or self.dnssec is None:
            return await self.resolver.lookup(host, rdtype), ()
        try:
            answer = await self.dnssec.lookup(host, rdtype)
        except DnssecError as exc:
            raise RouteError("4.7.5", f"address of {host} is DNSSEC-bogus: {exc}", False) from None
        if answer.nxdomain:
            raise NoSuchDomain(f"{host}: no such domain")
        if not answer.secure:
            return answer.records, ()
        expanded = answer.expanded.to_text(omit_final_dot=True) if answer.expanded else host
        return answer.records, tuple(dict.fromkeys((expanded.lower(), host.lower())))


def _mx_order(records: list[tuple[int, dns.name.Name]]) -> list[dns.name.Name]:
    """By preference; equal preferences shuffled to spread load (RFC 5321 5.1)."""
    shuffled = random.sample(records, len(records))
    return [name for _, name in sorted(shuffled, key=lambda r: r[0])]
