"""A protocol worker process: asyncio on uvloop, serving the listeners it inherited.

The supervisor forks it with the listening sockets already bound. It asks the rate-keeper
before serving each connection (caps are service-wide), expires idle sessions from one
sweeper task, proves it is alive through the heartbeat, and on SIGTERM stops accepting,
lets sessions in progress finish for the grace period, then tells the rest `421` and closes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import signal
import socket
import ssl
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import uvloop

from .. import metrics, tls
from . import allocator, sandbox
from ..auth.accounts import open_accounts
from ..auth.proxylogin import ProxyLogins, read_secret
from ..auth.routing import owners_to_ask
from ..config import Config, ServiceConfig, parse_hostport
from ..errors import EXIT_OK, EXIT_WORKER_BOOT, MailforgeError
from .heartbeat import Heartbeat
from ..mailauth.inbound import InboundChecker
from .pool import WorkerPool
from ..policy.abuse import AbuseGuard
from ..policy.limits import SendLimiter
from ..policy.networks import parse_networks
from ..policy.relay import RelayPolicy
from ..protocols import httpd, imapd, pop3d, smtpd
from ..protocols.autoconfig import ClientSettings, answer as autoconfig_answer
from ..protocols.connection.driver import SessionContext, SessionDriver
from ..protocols.connection.owners import ClusterRouting, counted_as as _counted_as
from ..protocols.connection.proxied import ProxiedServer
from ..protocols.connection.proxy import ProxyHeader
from ..protocols.connection.record import ServiceMeters
from ..protocols.connection.transport import TLS_HANDSHAKE_TIMEOUT, Connection
from ..protocols.imap.state import IMAPSettings
from ..protocols.imap.summary import SUMMARIZER
from ..protocols.pop3 import POP3Settings
from ..protocols.smtp import SMTPSettings
from ..queue.spool import Spool
from ..ratekeeper.client import RateKeeperClient
from ..resolver import Resolver
from ..ratekeeper.counters import OpenVerdict
from ..store import quota
from ..store.folders import open_mailbox
from ..store.pop3box import MaildirMaildrop

log = logging.getLogger("mailforge.worker")

# How often the worker proves it is alive, checks its parent, and sweeps idle sessions.
TICK = 1.0
LISTEN_BACKLOG = 1024


@dataclass(frozen=True)
class ProtocolSpec:
    driver: type[SessionDriver]  # one per session; its refusals answer connections over a cap
    # What the worker's sessions share, made once the common resources are up.
    context: Callable[[Worker, ssl.SSLContext | None], SessionContext]
    implicit_tls: bool = False  # the TLS handshake comes before the greeting
    require_auth: bool = False  # submission


def _shared(worker: Worker, tls_context: ssl.SSLContext | None) -> dict[str, object]:
    """The SessionContext fields, the same for every protocol."""
    return {"executor": worker.executor, "worker": worker, "guard": worker.guard,
            "meters": worker.meters, "tls_context": tls_context}


def _cluster_routing(worker: Worker) -> ClusterRouting | None:
    """Mailbox routing for POP3 and IMAP: which node owns a mailbox, the proxied logins of
    [cluster] secret_file and the TLS of [cluster] tls; None on a node where nobody can own
    one (auth/routing.py)."""
    config = worker.config
    owners = owners_to_ask(config, worker.accounts.nodes)
    if owners is None:
        return None
    secret = read_secret(config)
    logins = ProxyLogins(secret, worker.accounts.credentials) if secret is not None else None
    return ClusterRouting(config.node_name, owners, logins,
                          parse_networks(config.server.proxy_trusted),
                          tls.cluster_client_context(config))


def _smtp_context(worker: Worker, tls_context: ssl.SSLContext | None) -> smtpd.SMTPContext:
    config = worker.config
    worker.spool = Spool(config.queue_dir, worker.executor)
    settings = SMTPSettings(
        config.server.hostname, config.limits.max_message_size, config.limits.max_recipients,
        config.limits.max_line_length, relay=RelayPolicy.from_config(config.relay),
        tls_available=tls_context is not None, require_auth=worker.protocol.require_auth,
        allow_plaintext_auth=config.server.allow_plaintext_auth,
        sender_login_match=config.relay.sender_login_match,
        quota_full_tempfail=config.limits.quota_full_tempfail,
        cluster_tls=config.cluster.tls_link)
    accounts = worker.accounts
    limiter = SendLimiter(accounts.send_limits, worker.ratekeeper, worker.executor,
                          config.server.hostname, config.abuse.notify,
                          lambda recipient, message: worker.spool.submit("", [recipient], message))
    mailbox_full = functools.partial(quota.mailbox_full, config.store_dir,
                                     accounts.mailbox_settings)
    checker = None
    if worker.service == "smtp" and config.authentication.inbound_checks:  # port 25 only
        checker = InboundChecker(config.authserv_id, Resolver(config.dns),
                                 config.authentication.dmarc_enforce)
    return smtpd.SMTPContext(settings=settings, spool=worker.spool, accounts=accounts.credentials,
                             recipients=accounts.directory, limiter=limiter,
                             mailbox_full=mailbox_full, in_flow_delay=config.queue.in_flow_delay,
                             checker=checker,
                             shared_authserv_id=config.authentication.authserv_id,
                             **_shared(worker, tls_context))


def _pop3_context(worker: Worker, tls_context: ssl.SSLContext | None) -> pop3d.POP3Context:
    config = worker.config
    settings = POP3Settings(config.server.hostname, tls_available=tls_context is not None,
                            allow_plaintext_auth=config.server.allow_plaintext_auth)
    maildrop = functools.partial(MaildirMaildrop.for_user, config.store_dir)
    return pop3d.POP3Context(settings=settings, accounts=worker.accounts.credentials,
                             open_maildrop=maildrop, cluster=_cluster_routing(worker),
                             **_shared(worker, tls_context))


def _imap_context(worker: Worker, tls_context: ssl.SSLContext | None) -> imapd.IMAPContext:
    config = worker.config
    settings = IMAPSettings(config.server.hostname, tls_available=tls_context is not None,
                            allow_plaintext_auth=config.server.allow_plaintext_auth,
                            max_append=config.limits.max_message_size)
    mailbox = functools.partial(open_mailbox, config.store_dir, worker.accounts.mailbox_settings,
                                summarizer=SUMMARIZER)
    return imapd.IMAPContext(settings=settings, accounts=worker.accounts.credentials,
                             open_mailbox=mailbox, ratekeeper=worker.ratekeeper,
                             max_sessions_per_user=config.limits.max_sessions_per_user,
                             cluster=_cluster_routing(worker), **_shared(worker, tls_context))


def _autoconfig_context(worker: Worker, tls_context: ssl.SSLContext | None) -> httpd.HTTPContext:
    config = worker.config
    ports = {name: parse_hostport(service.listen[0])[1] for name, service in config.services().items()}
    settings = ClientSettings.from_ports(config.server.hostname, ports, tls_context is not None)
    return httpd.HTTPContext(settings=settings, answer=functools.partial(autoconfig_answer, settings),
                             **_shared(worker, tls_context))


_SMTP = ProtocolSpec(smtpd.SMTPDriver, _smtp_context)
_POP3 = ProtocolSpec(pop3d.POP3Driver, _pop3_context)
_IMAP = ProtocolSpec(imapd.IMAPDriver, _imap_context)
PROTOCOLS: dict[str, ProtocolSpec] = {
    "smtp": _SMTP,
    "submission": dataclasses.replace(_SMTP, require_auth=True),
    "smtps": dataclasses.replace(_SMTP, implicit_tls=True),
    "pop3": _POP3,
    "pop3s": dataclasses.replace(_POP3, implicit_tls=True),
    "imap": _IMAP,
    "imaps": dataclasses.replace(_IMAP, implicit_tls=True),
    "autoconfig": ProtocolSpec(httpd.HTTPDriver, _autoconfig_context),
}


def run(service: str, config: Config, listeners: list[socket.socket], heartbeat: Heartbeat) -> int:
    # Before any client byte is read, while the process has one thread.
    allocator.return_large_buffers()
    try:
        state = sandbox.confine(config.data_dir, metrics.directory())
    except OSError as exc:
        log.error("%s worker cannot enter its sandbox: %s", service, exc)
        return EXIT_WORKER_BOOT
    # One line per worker: debug. `mailforge status` shows the sandbox for the whole server.
    log.debug("%s worker sandbox: %s", service, state.describe())
    allocator.settle_collector()
    return uvloop.run(Worker(service, config, listeners, heartbeat).main())


class Worker:
    def __init__(self, service: str, config: Config, listeners: list[socket.socket],
                 heartbeat: Heartbeat) -> None:
        self.service = service
        self.config = config
        self.settings: ServiceConfig = getattr(config, service)
        self.protocol = PROTOCOLS[service]
        self.listeners = listeners
        self.heartbeat = heartbeat
        self.parent = os.getppid()
        self.stopping = False  # sessions are told 421 at their next command boundary
        self.retiring = False  # replaced after a reload: sessions end in their own time
        self.connections: set[Connection] = set()
        # Every connection the listeners made, weakly: a retiring worker waits for those
        # still in their TLS handshake, which are in no session yet.
        self.accepted_conns: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.spool: Spool | None = None  # SMTP services only
        self._stop = asyncio.Event()
        self.meters = ServiceMeters(service)
        # Connections and sessions are counted here and published once a tick: per connection
        # that is an integer addition, not two prometheus-client updates.
        self.accepted = self.served = 0
        self._published = (0, 0)

    async def main(self) -> int:
        try:
            context = self._boot()
        except (MailforgeError, OSError) as exc:
            log.error("%s worker cannot start: %s", self.service, exc)
            return EXIT_WORKER_BOOT
        self.context = context
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._retire)
        servers = [await self._listen(loop, sock) for sock in self.listeners]
        ticker = loop.create_task(self._tick())
        await self._stop.wait()
        self.stopping = not self.retiring
        for server in servers:
            server.close()
        # A connection accepted just before the close is connected (connection_made) one
        # loop iteration later: let it be counted before the drain looks.
        await asyncio.sleep(0)
        await self._drain()
        ticker.cancel()
        self._publish_counts()
        await self._shutdown_resources()
        return EXIT_OK

    def _boot(self) -> SessionContext:
        self.executor = WorkerPool(self.settings.max_threads, name=f"{self.service}-io")
        self.accounts = open_accounts(self.config)
        self.ratekeeper = RateKeeperClient(self.config.ratekeeper_socket)
        self.guard = AbuseGuard.from_config(self.config.abuse, self.ratekeeper)
        tls_context = tls.load_server_context(self.config) if tls.certificate_present(self.config) else None
        if self.protocol.implicit_tls and tls_context is None:
            raise MailforgeError(f"[{self.service}] needs a TLS certificate ([tls] cert)")
        return self.protocol.context(self, tls_context)

    async def _listen(self, loop: asyncio.AbstractEventLoop,
                      sock: socket.socket) -> asyncio.Server | ProxiedServer:
        if self.settings.proxy_protocol:
            return ProxiedServer(sock, self._new_connection,
                                 parse_networks(self.config.server.proxy_trusted),
                                 self.context.tls_context if self.protocol.implicit_tls else None)
        if not self.protocol.implicit_tls:
            return await loop.create_server(self._new_connection, sock=sock, backlog=LISTEN_BACKLOG)
        return await loop.create_server(self._new_connection, sock=sock, backlog=LISTEN_BACKLOG,
                                        ssl=self.context.tls_context,
                                        ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)

    def _new_connection(self, header: ProxyHeader | None = None) -> Connection:
        """`header`: the PROXY header a proxy_protocol listener read first."""
        if header is None:
            conn = Connection(self._start_session)
        else:
            conn = Connection(self._start_session, header.source,
                              peer_speaks_for_itself=header.source is None,
                              client_counted=header.client_counted)
        self.accepted_conns.add(conn)
        return conn

    def _in_handshake(self) -> bool:
        """Accepted connections still in their TLS handshake (implicit TLS): connected, and so
        counted in `connections`, only once it is done. One whose handshake failed is dropped
        by the loop and leaves the weak set; the age bound covers one a cycle keeps alive."""
        now = time.monotonic()
        return any(conn.transport is None and not conn.closed
                   and now - conn.last_activity < TLS_HANDSHAKE_TIMEOUT
                   for conn in self.accepted_conns)

    def _start_session(self, conn: Connection) -> Awaitable[None]:
        """Counted as ours from the moment it is connected, before its first await (the
        rate-keeper's verdict): a worker told to stop or retire then waits for it, where it
        used to see none, finish, and leave it a 220 and then a 421."""
        self.connections.add(conn)
        return self._session(conn)

    async def _session(self, conn: Connection) -> None:
        counted_as, max_per_ip = _counted_as(conn, self.settings.max_connections_per_ip)
        try:
            verdict = await self.ratekeeper.open_session(
                self.service, counted_as, self.settings.max_connections, max_per_ip)
            self.accepted += 1
            if verdict is not OpenVerdict.OK:
                metrics.inc("connections_refused_total", service=self.service, reason=verdict)
                log.warning("%s: refused %s: %s", self.service, conn.peer_ip, verdict)
                blocked_for = (await self.ratekeeper.blocked_for(conn.peer_ip)
                               if verdict is OpenVerdict.BLOCKED else 0.0)
                conn.expire(self.protocol.driver.refusals.refusal(
                    verdict, self.config.server.hostname, blocked_for))
                return
            self.served += 1
            try:
                await self.protocol.driver(conn, self.context).run()
            except Exception:
                # One session's bug must not take the worker (and every other session) down.
                log.exception("%s: session from %s failed", self.service, conn.peer_ip)
            finally:
                conn.close()
                await self.ratekeeper.close_session(self.service, counted_as)
        finally:
            self.connections.discard(conn)

    async def _tick(self) -> None:
        idle_timeout, min_rate = self.settings.idle_timeout, self.config.limits.min_transfer_rate
        while True:
            self.heartbeat.notify()
            if os.getppid() != self.parent:
                log.warning("%s worker: supervisor is gone, stopping", self.service)
                self._stop.set()
            self._publish_counts()
            now = time.monotonic()
            for conn in [c for c in self.connections if c.overdue(now, idle_timeout, min_rate)]:
                conn.expire(conn.idle_reply)
            await asyncio.sleep(TICK)

    def _publish_counts(self) -> None:
        """Connection counts since the last tick; the pool's saturation, sampled rather than
        measured per task: the executor's own queue and thread list say it without a lock on
        the IO path."""
        accepted, served = self._published
        metrics.inc("connections_total", self.accepted - accepted, service=self.service)
        metrics.inc("sessions_total", self.served - served, service=self.service)
        self._published = (self.accepted, self.served)
        metrics.set_value("connections_current", len(self.connections), service=self.service)
        queued = self.executor.queued
        metrics.set_value("threadpool_threads", self.executor.threads, service=self.service)
        metrics.set_value("threadpool_max_threads", self.settings.max_threads, service=self.service)
        metrics.set_value("threadpool_queued", queued, service=self.service)
        if queued:
            metrics.inc("threadpool_saturated_total", service=self.service)

    def _retire(self) -> None:
        self.retiring = True
        self._stop.set()

    def _request_stop(self) -> None:
        """SIGTERM wins over a retirement already under way."""
        self.retiring = False
        if self._stop.is_set():
            self.stopping = True
        self._stop.set()

    async def _drain(self) -> None:
        """Stopping: close idle sessions now, give busy ones the grace period. Retiring: give
        every session the grace period. Then close the rest with the protocol's goodbye."""
        goodbye = self.protocol.driver.refusals.shutdown_reply(self.config.server.hostname)
        deadline = time.monotonic() + self.config.server.grace_period
        while (self.connections or self._in_handshake()) and time.monotonic() < deadline:
            self.heartbeat.notify()
            if self.stopping:
                for conn in [c for c in self.connections if c.interruptible]:
                    conn.expire(goodbye)
            await asyncio.sleep(0.1)
        self.stopping = True
        for conn in list(self.connections):
            conn.expire(goodbye)
        tasks = [c.task for c in self.connections if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    async def _shutdown_resources(self) -> None:
        await self.ratekeeper.close()
        if self.spool is not None:
            await self.spool.close()
        self.executor.shutdown(wait=True)
        self.accounts.close()
