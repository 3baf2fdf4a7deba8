"""What TLS a connection to each MX host of a destination must have, and the check of it.

Per host, DANE first (RFC 8461 2: a host with secure TLSA records is judged by them), then
the destination's MTA-STS policy, else opportunistic TLS. A mailbox's owner node (mailbox
routing) has the cluster's own requirement instead: with [cluster] tls = "starttls", TLS
verified by [cluster] tls_ca_file, as Postfix's `secure` level for a transport. A requirement
that is not met is `TLSPolicyFailure`, with the TLS-RPT result type (RFC 8460 4.3): an
enforced one defers the delivery, never falls back to plain or unchecked TLS; one of an
MTA-STS policy in `testing` mode is only reported.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from .. import tls
from ..config import Config
from ..resolver import Resolver, TemporaryDnsError
from .dane import Tlsa, check_chain, usable
from .dnssec import DnssecError, SecureLookup
from .mtasts import MtaSts, Policy, PolicyCache, PolicyError

# The OpenSSL verify codes that TLS-RPT names apart (x509_vfy.h).
_HOSTNAME_MISMATCH, _EXPIRED = 62, 10


class TLSPolicyFailure(Exception):
    def __init__(self, result_type: str, text: str, enforced: bool = True) -> None:
        super().__init__(text)
        self.result_type = result_type
        self.enforced = enforced  # false: only reported (an MTA-STS policy in testing mode)


@dataclass
class HostSecurity:
    """The requirement on a connection to one host. kind "" is opportunistic TLS."""

    kind: str  # "dane", "sts", "node" (a mailbox's owner node) or ""
    enforced: bool  # not met: deferred (DANE, MTA-STS enforce); else only reported
    context: ssl.SSLContext
    domain: str = ""  # the policy domain, for TLS-RPT
    policy: Policy | None = None
    tlsa: list[Tlsa] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # names a DANE-TA certificate may carry
    # The name the certificate is verified for, where not the host's: an owner node's is the
    # node table's host, as for the proxied logins (an address needs an IP SAN).
    server_name: str = ""

    @property
    def describe(self) -> str:
        if self.kind == "dane":
            return "DANE"
        if self.kind == "node":
            return "cluster's TLS ([cluster] tls_ca_file)"
        assert self.policy is not None
        return f"MTA-STS policy of {self.domain} ({self.policy.mode})"

    def check(self, ssl_object: ssl.SSLObject) -> None:
        """After the handshake: DANE's match (MTA-STS's check was the handshake's own)."""
        if self.kind != "dane" or not self.tlsa:
            return
        # The chain as the server sent it: public from Python 3.13 (SSLObject's
        # get_unverified_chain); the same C method before.
        chain = [c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
                 for c in ssl_object._sslobj.get_unverified_chain() or []]  # type: ignore[attr-defined]
        problem = check_chain(self.tlsa, chain, self.names)
        if problem:
            raise TLSPolicyFailure("validation-failure",
                                   f"certificate does not match the TLSA records: {problem}")

    @property
    def validated(self) -> bool:
        """Is a connection that met it authenticated (what REQUIRETLS asks for)?"""
        return self.kind == "sts" or bool(self.tlsa)

    @property
    def waivable(self) -> bool:
        """May a message's "TLS-Required: No" (RFC 8689 5) let its failure pass? That field
        speaks of the recipient domain's policies (DANE, MTA-STS), not of the link between
        our own nodes, which the operator asked to keep private."""
        return self.kind != "node"


def handshake_failure(exc: BaseException) -> str:
    """TLS-RPT's result type for a failed handshake."""
    code = getattr(exc, "verify_code", 0)
    if code == _HOSTNAME_MISMATCH:
        return "certificate-host-mismatch"
    if code == _EXPIRED:
        return "certificate-expired"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate-not-trusted"
    return "validation-failure"


def verifying_context(ca_file: str) -> ssl.SSLContext:
    """WebPKI validation with host names, as MTA-STS asks (policy fetch and MX hosts)."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(ca_file)
    return context


class TLSPolicies:
    def __init__(self, config: Config, resolver: Resolver, opportunistic: ssl.SSLContext) -> None:
        settings = config.outbound_tls
        self.port = config.delivery.mx_port
        self.opportunistic = opportunistic
        self.verifying = verifying_context(settings.ca_file)
        self.cluster = tls.cluster_client_context(config)  # None: [cluster] tls = "none"
        self.dane = SecureLookup(resolver, config.dns) if settings.dane and config.dns.dnssec != "off" else None
        self.mta_sts = (MtaSts(resolver, PolicyCache(config.tls_policy_dir / "mta-sts"),
                               self.verifying, settings.mta_sts_port) if settings.mta_sts else None)

    async def destination(self, domain: str) -> tuple[Policy | None, PolicyError | None]:
        """The MTA-STS policy of a destination domain (or why it could not be had)."""
        if self.mta_sts is None:
            return None, None
        try:
            policy = await self.mta_sts.policy(domain)
        except PolicyError as exc:
            return None, exc
        return (policy if policy is not None and policy.mode != "none" else None), None

    async def host(self, domain: str, host: str, policy: Policy | None,
                   tlsa_names: tuple[str, ...]) -> HostSecurity:
        """The requirement on `host`, an MX host of `domain`. TLSPolicyFailure when the host
        may not be used at all (DNSSEC bogus, or not an MX host of an enforced policy).
        `tlsa_names`: where the host's TLSA records may be looked up, in order; empty unless
        the MX lookup and the host's address lookup were DNSSEC-secure (else an attacker could
        have named the host or its address, and its TLSA records prove nothing: RFC 7672
        2.2.1, 2.2.2)."""
        for name in tlsa_names:
            tlsa = await self._tlsa(name)
            if tlsa is not None:
                return HostSecurity("dane", True, self.opportunistic, domain, policy, tlsa,
                                    list(dict.fromkeys((*tlsa_names, host, domain))))
        if policy is None:
            return HostSecurity("", False, self.opportunistic)
        security = HostSecurity("sts", policy.mode == "enforce", self.verifying, domain, policy)
        if not policy.allows(host):
            raise TLSPolicyFailure("validation-failure",
                                   f"{host} is not an MX host of the {security.describe}",
                                   security.enforced)
        return security

    def node(self, host: str) -> HostSecurity | None:
        """The requirement on a mailbox's owner node, `host` as its node table names it: TLS
        verified by the cluster's CAs for that host; None with [cluster] tls = "none" (TLS
        where offered, unchecked, as towards any MTA without a policy)."""
        if self.cluster is None:
            return None
        return HostSecurity("node", True, self.cluster, server_name=host)

    async def _tlsa(self, host: str) -> list[Tlsa] | None:
        """Usable TLSA records of a host whose records are secure; None: none there."""
        if self.dane is None:
            return None
        try:
            answer = await self.dane.lookup(f"_{self.port}._tcp.{host}", "TLSA")
        except DnssecError as exc:
            raise TLSPolicyFailure("dnssec-invalid", f"DANE: {exc}") from None
        except TemporaryDnsError as exc:
            # RFC 7672 2.2: a failed TLSA lookup makes the host unusable, not DANE-less.
            raise TLSPolicyFailure("tlsa-invalid", f"DANE: TLSA lookup failed: {exc}") from None
        if not answer.secure or not answer.records:
            return None  # insecure, or securely denied: opportunistic TLS (RFC 7672 2.2)
        return usable(answer.records)
