"""Relay a batch of queued messages: route each domain, then deliver per destination.

Recipients routed to one destination (an MX domain, an override host, the smarthost) share
connections: at most `max_per_destination` at once, each carrying up to
`messages_per_connection` messages before it is closed. In a delivery worker that limit holds
for the whole server: the rate-keeper counts every worker's connections to a destination, as
it counts client sessions (Postfix's per-destination concurrency is likewise one figure for
the queue manager, not per delivery agent). Every recipient comes back with a `Result`;
nothing here touches the queue.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..config import Config
from ..ratekeeper.client import RateKeeperClient
from ..ratekeeper.counters import OpenVerdict
from .relay import Message, Reply, SMTPClient, SMTPClientError, TLSFailed
from ..resolver import Resolver
from ..tlspolicy import tlsrpt
from ..tlspolicy.mtasts import Policy
from ..tlspolicy.policy import HostSecurity, TLSPolicies, TLSPolicyFailure
from .routing import Destination, Host, RouteError, Router, domain_of

log = logging.getLogger("mailforge.delivery")

# RFC 5321 4.5.3.1.8: a server must take 100 recipients per message; more go in another one.
MAX_RCPTS_PER_TRANSACTION = 100
# The rate-keeper's name for connections to destinations, counted per destination key.
DESTINATION_SERVICE = "relay-destinations"
# How long a destination's first connection waits for other workers to free a slot before
# its messages are put back for a little while (not long: the worker's local deliveries wait
# for the batch), and how often it asks meanwhile (doubling from the first).
SLOT_WAIT = 2.0
SLOT_POLL = (0.05, 1.0)
# RFC 3463: a deferral because the TLS a policy requires could not be had.
TLS_POLICY_STATUS = "4.7.5"
# RFC 8689 5: no host could take a REQUIRETLS message as it requires.
REQUIRETLS_STATUS = "5.7.30"


@dataclass(frozen=True)
class Result:
    """One recipient's outcome: accepted (2xx), temporary (4xx) or permanent (5xx)."""

    code: int
    status: str
    text: str
    remote_mta: str = ""  # host[address]:port that gave the answer, "" when none did
    dsn_passed: bool = False  # the next hop took our DSN parameters and reports from now on
    untried: bool = False  # no connection to spare for its destination: not an attempt

    @property
    def accepted(self) -> bool:
        return self.code < 400

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def describe(self) -> str:
        return self.text if not self.remote_mta else f"{self.remote_mta} said: {self.text}"


def failure(permanent: bool, status: str, text: str, remote_mta: str = "") -> Result:
    return Result(550 if permanent else 451, status, text, remote_mta)


def from_reply(reply: Reply, client: SMTPClient) -> Result:
    return Result(reply.code, reply.status, reply.describe(), client.label,
                  reply.code < 400 and "DSN" in client.extensions)


@dataclass
class Job:
    message: Message  # its recipients are those of one destination, at most 100
    results: dict[str, Result]  # where this job's outcomes go


def client_tls_context() -> ssl.SSLContext:
    """Opportunistic TLS: encrypt when offered, without checking the certificate (RFC 7435)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class DestinationSlots:
    """Connections to each destination over all delivery workers, counted by the rate-keeper.
    Fails open, as every use of it does: while it is unreachable each worker keeps to the
    limit on its own."""

    def __init__(self, ratekeeper: RateKeeperClient, limit: int) -> None:
        self._ratekeeper = ratekeeper
        self._limit = limit

    async def take(self, key: str, wait: float) -> bool:
        """A slot for one connection to `key`, waiting up to `wait` seconds for one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay, most = SLOT_POLL
        while True:
            verdict = await self._ratekeeper.open_session(DESTINATION_SERVICE, _counted(key), 0,
                                                          self._limit)
            if verdict is OpenVerdict.OK:
                return True
            if loop.time() + delay > deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, most)

    async def give_back(self, key: str) -> None:
        await self._ratekeeper.close_session(DESTINATION_SERVICE, _counted(key))

    async def close(self) -> None:
        await self._ratekeeper.close()
        await asyncio.sleep(0)  # the cancelled reconnect task ends before the loop closes


def _counted(key: str) -> str:
    # Not an address literal: the rate-keeper would apply a client block on that address.
    return f"to {key}"


class Outbound:
    def __init__(self, config: Config, router: Router | None = None,
                 tls_context: ssl.SSLContext | None = None,
                 slots: DestinationSlots | None = None) -> None:
        self.config = config
        self.delivery = config.delivery
        self.tls_context = tls_context if tls_context is not None else client_tls_context()
        self.slots = slots  # None: the limit holds per Outbound only (tests, tools)
        resolver = router.resolver if router is not None else Resolver(config.dns)
        self.policies = TLSPolicies(config, resolver, self.tls_context)
        self.router = router or Router(config.delivery, resolver, self.policies.dane)
        self.recorder = (tlsrpt.Recorder(config.tls_policy_dir / "tlsrpt")
                         if config.outbound_tls.tlsrpt else None)

    async def deliver(self, messages: Iterable[Message],
                      pinned: Mapping[str, Destination] | None = None
                      ) -> dict[str, dict[str, Result]]:
        """message id → recipient → Result, for every recipient of every message. `pinned`:
        recipients whose destination is decided already (a mailbox's owner node)."""
        pinned = pinned or {}
        messages = list(messages)
        results: dict[str, dict[str, Result]] = {m.id: {} for m in messages}
        domains = sorted({domain_of(r) for m in messages for r in m.recipients if r not in pinned})
        routes = dict(zip(domains, await asyncio.gather(*(self._route(d) for d in domains))))
        # Messages saying "TLS-Required: No" go over connections of their own: a TLS policy
        # failure that defers the others lets them through. REQUIRETLS ones too: they may
        # pass over hosts the others use.
        jobs: dict[tuple[str, bool, bool], list[Job]] = collections.defaultdict(list)
        destinations: dict[tuple[str, bool, bool], Destination] = {}
        for message in messages:
            by_key: dict[tuple[str, bool, bool], list[str]] = collections.defaultdict(list)
            for rcpt in message.recipients:
                route = pinned[rcpt] if rcpt in pinned else routes[domain_of(rcpt)]
                if isinstance(route, RouteError):
                    results[message.id][rcpt] = failure(route.permanent, route.status, route.text)
                    continue
                key = (route.key, message.tls_optional, message.requiretls)
                destinations[key] = dataclasses.replace(route, tls_optional=message.tls_optional,
                                                        requiretls=message.requiretls)
                by_key[key].append(rcpt)
            for key, rcpts in by_key.items():
                for start in range(0, len(rcpts), MAX_RCPTS_PER_TRANSACTION):
                    part = _for_recipients(message, rcpts[start:start + MAX_RCPTS_PER_TRANSACTION])
                    jobs[key].append(Job(part, results[message.id]))
        try:
            await asyncio.gather(*(self._destination(destinations[k], js) for k, js in jobs.items()))
        finally:
            if self.recorder is not None:
                self.recorder.flush()
        return results

    async def _route(self, domain: str) -> Destination | RouteError:
        try:
            return await self.router.route(domain)
        except RouteError as exc:
            log.warning("no route to %s: %s", domain, exc)
            return exc

    async def _destination(self, destination: Destination, jobs: list[Job]) -> None:
        queue = collections.deque(jobs)
        connections = min(self.delivery.max_per_destination, len(jobs))
        # The first connection waits for a slot other workers hold; more are opened only
        # where a slot is free now.
        await asyncio.gather(*(self._connection(destination, queue, SLOT_WAIT if n == 0 else 0.0)
                               for n in range(connections)))
        busy = Result(451, "4.4.5", f"{destination.key}: the most connections "
                      f"({self.delivery.max_per_destination}) are open to it already",
                      untried=True)
        while queue:
            _settle(queue.popleft(), busy)

    async def _connection(self, destination: Destination, queue: collections.deque[Job],
                          slot_wait: float) -> None:
        if self.slots is None:
            await self._send_all(destination, queue)
            return
        if not await self.slots.take(destination.key, slot_wait):
            return
        try:
            await self._send_all(destination, queue)
        finally:
            await self.slots.give_back(destination.key)

    async def _send_all(self, destination: Destination, queue: collections.deque[Job]) -> None:
        """Connect, send up to messages_per_connection jobs, repeat while jobs are left."""
        while queue:
            try:
                client = await self._connect(destination)
            except SMTPClientError as exc:
                # Every host refused: the jobs still waiting would meet the same refusal.
                outcome = failure(exc.permanent, exc.status, str(exc))
                while queue:
                    _settle(queue.popleft(), outcome)
                return
            try:
                await self._send_some(client, queue)
            finally:
                await client.quit()

    async def _send_some(self, client: SMTPClient, queue: collections.deque[Job]) -> None:
        for _ in range(self.delivery.messages_per_connection):
            if not queue:
                return
            job = queue.popleft()
            if client.needs_utf8_refused(job.message):
                _settle(job, failure(True, "5.6.7", f"{client.label} does not support SMTPUTF8, "
                                     "needed for a non-ASCII address", client.label))
                continue
            try:
                replies = await client.send(job.message)
            except SMTPClientError as exc:
                _settle(job, failure(False, "4.4.2", str(exc), client.label))
                return  # the connection is unusable; the next job gets a new one
            for rcpt, reply in replies.items():
                job.results[rcpt] = from_reply(reply, client)
                log.info("%s id=%s to=<%s> relay=%s reply=%s",
                         "relayed" if reply.code < 400 else "refused", job.message.id, rcpt,
                         client.label, reply.describe())

    async def _connect(self, destination: Destination) -> SMTPClient:
        """A greeted (and, for the smarthost, authenticated) client to the first host that works,
        in TLS that meets the host's TLS policy."""
        errors: list[SMTPClientError] = []
        policy = await self._sts_policy(destination)
        for host in destination.hosts:
            try:
                client = await self._open(destination, host, policy)
                why = _requiretls_refusal(client) if destination.requiretls else ""
                if why:
                    await client.quit()
                    raise RequireTlsRefused(f"REQUIRETLS: {client.label} {why}")
                if destination.smarthost and self.delivery.smarthost_user:
                    await client.authenticate(self.delivery.smarthost_user,
                                              self.delivery.smarthost_password,
                                              self.delivery.smarthost_require_tls)
                return client
            except SMTPClientError as exc:
                log.warning("%s", exc)
                errors.append(exc)
        if not errors:
            raise SMTPClientError(f"no host to deliver to for {destination.key}")
        # A host refused for want of the TLS its policy asks is the reason worth telling.
        refused = [e for e in errors if e.status in (TLS_POLICY_STATUS, REQUIRETLS_STATUS)]
        last = refused[-1] if refused else errors[-1]
        # Permanent only when every host refused us outright (a 5xx greeting, or no REQUIRETLS
        # where it is required): one that could not be reached may qualify later.
        if all(e.permanent for e in errors):
            raise last
        raise SMTPClientError(str(last), status="4" + last.status[1:])

    async def _sts_policy(self, destination: Destination) -> Policy | None:
        if not destination.policy_domain:
            return None
        policy, problem = await self.policies.destination(destination.policy_domain)
        if problem is not None:
            log.warning("MTA-STS: no policy for %s: %s", destination.policy_domain, problem)
            self._record(tlsrpt.outcome(None, destination.policy_domain, problem.result_type,
                                        reason=str(problem)))
        return policy

    async def _open(self, destination: Destination, host: Host, policy: Policy | None) -> SMTPClient:
        """A client connected to `host`: under its TLS policy, or opportunistic where the
        policy's failure is only to be reported (MTA-STS testing, TLS-Required: No)."""
        security: HostSecurity | None = None
        client = self._client()
        try:
            if destination.policy_domain:
                security = await self.policies.host(destination.policy_domain, host.name, policy,
                                                    host.tlsa_names)
            elif host.proxy_protocol:  # a mailbox's owner node: the cluster's requirement
                security = self.policies.node(host.address)
            await self._greet(client, host, security)
        except TLSPolicyFailure as exc:
            client.close()
            enforced = exc.enforced if security is None else security.enforced
            # host.label: the failure may come before the client connected (DNSSEC bogus).
            text = f"{host.label}: {security.describe if security else 'TLS policy'}: {exc}"
            if destination.policy_domain:  # TLS-RPT reports on a domain's policies alone
                self._record(tlsrpt.outcome(security, destination.policy_domain, exc.result_type,
                                            host.name, host.address, str(exc)))
            waived = destination.tls_optional and (security is None or security.waivable)
            if enforced and not waived:
                raise SMTPClientError(f"{TLS_POLICY_STATUS} {text}; deferred, not sent without it",
                                      status=TLS_POLICY_STATUS) from None
            log.warning("%s; sent with opportunistic TLS instead", text)
            client = self._client()
            await self._greet(client, host, None)
            return client
        if destination.policy_domain and client.tls:
            self._record(tlsrpt.outcome(security, destination.policy_domain, "success"))
        if security is not None and security.kind:
            log.info("TLS to %s meets the %s", client.label, security.describe)
        return client

    def _client(self) -> SMTPClient:
        return SMTPClient(self.config.server.hostname, self.delivery.command_timeout,
                          self.tls_context)

    async def _greet(self, client: SMTPClient, host: Host, security: HostSecurity | None) -> None:
        try:
            try:
                await client.connect(host, self.delivery.connect_timeout, security=security)
            except TLSFailed as exc:
                log.warning("%s; trying again without TLS", exc)
                client.close()
                await client.connect(host, self.delivery.connect_timeout, use_tls=False)
        except SMTPClientError:
            client.close()
            raise

    def _record(self, item: tlsrpt.Outcome) -> None:
        if self.recorder is not None:
            self.recorder.add(item)


class RequireTlsRefused(SMTPClientError):
    """The host cannot take a REQUIRETLS message (RFC 8689 4.2.1): the next one is tried;
    when none can, the message bounces at once."""

    def __init__(self, text: str) -> None:
        super().__init__(text, status=REQUIRETLS_STATUS)

    @property
    def permanent(self) -> bool:
        return True


def _requiretls_refusal(client: SMTPClient) -> str:
    """Why the connection may not carry a REQUIRETLS message, "" when it may: TLS validated
    by DANE or MTA-STS (but to a mailbox's owner node), to a server that offers REQUIRETLS
    (RFC 8689 4.2.1)."""
    assert client.host is not None
    # A mailbox's owner node (its internal port) is no other MTA: this hop is our own local
    # delivery, which RFC 8689 does not constrain, over the private link the cluster trusts
    # already (the owner takes the relaying node's mail unchecked; proxied logins cross it).
    # So it need not be TLS validated by DANE or MTA-STS: there is no policy domain to
    # validate TLS by, and the link's safety is the cluster's, as for every other use of it
    # ([cluster] tls: "starttls" verifies the owner, else the network must be private). The
    # owner must still take the REQUIRETLS flag (it offers it to a node, TLS or not), so
    # that it relays the message on (a forward) only as its sender asked.
    if not client.validated and not client.host.proxy_protocol:
        return "has no TLS validated by DANE or MTA-STS"
    return "" if "REQUIRETLS" in client.extensions else "does not offer REQUIRETLS"


def _for_recipients(message: Message, rcpts: list[str]) -> Message:
    return dataclasses.replace(message, recipients=rcpts)


def _settle(job: Job, outcome: Result) -> None:
    for rcpt in job.message.recipients:
        job.results[rcpt] = outcome


class OutboundRunner:
    """Runs outbound deliveries for the synchronous delivery agent, on one event loop kept
    for the worker's life (the resolver and TLS context are reused)."""

    # The agent's heartbeat is called at least this often while the network is waited on.
    HEARTBEAT_INTERVAL = 1.0

    def __init__(self, config: Config, outbound: Outbound | None = None) -> None:
        self._outbound = outbound or Outbound(config)
        self._loop: asyncio.AbstractEventLoop | None = None

    def deliver(self, messages: list[Message], heartbeat: Callable[[], None],
                pinned: Mapping[str, Destination] | None = None) -> dict[str, dict[str, Result]]:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self._deliver(messages, heartbeat, pinned))

    async def _deliver(self, messages: list[Message], heartbeat: Callable[[], None],
                       pinned: Mapping[str, Destination] | None) -> dict[str, dict[str, Result]]:
        beating = asyncio.ensure_future(self._beat(heartbeat))
        try:
            return await self._outbound.deliver(messages, pinned)
        finally:
            beating.cancel()

    async def _beat(self, heartbeat: Callable[[], None]) -> None:
        while True:
            heartbeat()
            await asyncio.sleep(self.HEARTBEAT_INTERVAL)

    def close(self) -> None:
        if self._loop is not None:
            if self._outbound.slots is not None:
                self._loop.run_until_complete(self._outbound.slots.close())
            self._loop.close()
            self._loop = None


def shared_runner(config: Config) -> OutboundRunner:
    """A delivery worker's runner: its limit per destination is shared with the other workers."""
    slots = DestinationSlots(RateKeeperClient(config.ratekeeper_socket),
                             config.delivery.max_per_destination)
    return OutboundRunner(config, Outbound(config, slots=slots))
