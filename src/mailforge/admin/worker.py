"""A console worker: aiohttp on uvloop serving the [admin] listeners it inherited, as the
service account, sandboxed as the protocol workers are (no exec, writes only in the data dir),
with its TLS context and certificate dates taken before the privilege drop (isolation.py).

It proves it is alive through the heartbeat, leaves when its parent does, and on SIGTERM or
SIGHUP (replaced after a reload) stops accepting and gives requests in progress the grace
period.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

import uvloop
from aiohttp import web

from .. import metrics
from ..auth.accounts import open_accounts
from ..config import Config
from ..errors import EXIT_OK, EXIT_WORKER_BOOT, MailforgeError
from ..policy.abuse import AbuseGuard
from ..process import sandbox
from ..process.heartbeat import Heartbeat
from ..ratekeeper.client import RateKeeperClient
from .gate import Gate
from .history import SAMPLE_EVERY, MetricsHistory, read_totals
from .isolation import Prepared
from .operations import Operations
from .web import Console, make_app

log = logging.getLogger("mailforge.admin")

TICK = 1.0
LISTEN_BACKLOG = 128


def run(config: Config, listeners: list[socket.socket], heartbeat: Heartbeat, prepared: Prepared) -> int:
    try:
        state = sandbox.confine(config.data_dir, metrics.directory())
    except OSError as exc:
        log.error("admin worker cannot enter its sandbox: %s", exc)
        return EXIT_WORKER_BOOT
    log.debug("admin worker sandbox: %s; private keys %s", state.describe(), prepared.keys)
    return uvloop.run(ConsoleWorker(config, listeners, heartbeat, prepared).main())


class ConsoleWorker:
    def __init__(self, config: Config, listeners: list[socket.socket], heartbeat: Heartbeat,
                 prepared: Prepared) -> None:
        self.config = config
        self.settings = config.admin
        self.listeners = listeners
        self.heartbeat = heartbeat
        self.prepared = prepared
        self.parent = os.getppid()
        self.connections: set[Gate] = set()
        self._stop = asyncio.Event()

    async def main(self) -> int:
        try:
            console = self._boot()
        except (MailforgeError, OSError) as exc:
            log.error("admin worker cannot start: %s", exc)
            return EXIT_WORKER_BOOT
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._stop.set)
        runner = web.AppRunner(make_app(console), handle_signals=False, access_log=None,
                               keepalive_timeout=self.settings.idle_timeout,
                               shutdown_timeout=self.config.server.grace_period)
        await runner.setup()
        gate = functools.partial(Gate, runner.server, console.ratekeeper,
                                 self.settings.max_connections, self.settings.max_connections_per_ip,
                                 self.connections)
        servers = [await loop.create_server(gate, sock=sock, backlog=LISTEN_BACKLOG,
                                            ssl=self.prepared.tls_context)
                   for sock in self.listeners]
        ticker = loop.create_task(self._tick(console))
        await self._stop.wait()
        for server in servers:
            server.close()
        await runner.shutdown()
        await self._drain()
        ticker.cancel()
        await runner.cleanup()
        await console.ratekeeper.close()
        console.executor.shutdown(wait=True)
        console.accounts.close()
        return EXIT_OK

    def _boot(self) -> Console:
        executor = ThreadPoolExecutor(self.settings.max_threads, thread_name_prefix="admin-io")
        accounts = open_accounts(self.config)
        ratekeeper = RateKeeperClient(self.config.ratekeeper_socket)
        directory = metrics.directory()
        history = MetricsHistory(functools.partial(read_totals, directory)) if directory else None
        return Console(self.config, accounts, Operations(self.config, accounts), ratekeeper,
                       AbuseGuard.from_config(self.config.abuse, ratekeeper), executor, history,
                       self.prepared)

    async def _tick(self, console: Console) -> None:
        since_sample = SAMPLE_EVERY
        while True:
            self.heartbeat.notify()
            if os.getppid() != self.parent:
                log.warning("admin worker: supervisor is gone, stopping")
                self._stop.set()
            since_sample += TICK
            if console.history is not None and since_sample >= SAMPLE_EVERY:
                since_sample = 0.0
                await console.blocking(console.history.sample)
            await asyncio.sleep(TICK)

    async def _drain(self) -> None:
        """Requests in progress get the grace period; then every connection is closed."""
        deadline = asyncio.get_running_loop().time() + self.config.server.grace_period
        while self.connections and asyncio.get_running_loop().time() < deadline:
            self.heartbeat.notify()
            await asyncio.sleep(0.1)
        for conn in list(self.connections):
            conn.close()
