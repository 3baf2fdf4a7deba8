"""The prefork supervisor ("arbiter", after gunicorn's): binds, forks, watches, replaces.

It never touches client traffic. Signal handlers only record (STYLE.md 1); one loop wakes on
the wake-up fd, the control socket or a tick, then: handle signals, reap, kill the silent or
overdue, spawn what is missing, answer `mailforge status`.
"""

from __future__ import annotations

import collections
import ctypes
import datetime
import importlib
import logging
import math
import os
import resource
import selectors
import shutil
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NoReturn

from .. import config as config_module, metrics, tls
from . import board, control, permissions, privileges, sandbox
from ..config import Config, parse_hostport
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_WORKER_BOOT, MailforgeError, UsageError
from ..health import Health
from .flowmonitor import FlowMonitor
from .heartbeat import Heartbeat

log = logging.getLogger("mailforge.supervisor")

# somaxconn caps it anyway; a big queue absorbs bursts while workers are being replaced.
LISTEN_BACKLOG = 2048
# 10,000 idle connections must fit in one worker, plus its files, pool threads and sockets.
WANTED_OPEN_FILES = 10_000 + 1024
# Used when the hard limit is "unlimited", which setrlimit refuses as a soft value on Linux.
MAX_OPEN_FILES = 1 << 20
# The loop wakes at least this often to check heartbeats and due restarts.
TICK = 0.5
# On top of the grace period: time for a worker to send 421s and close after it ran out.
STOP_MARGIN = 5.0
# Between SIGABRT (dump a traceback if you can) and SIGKILL for a silent child.
ABORT_GRACE = 2.0
RATEKEEPER_START_TIMEOUT = 5.0
RATEKEEPER_STOP_TIMEOUT = 2.0
# A child without a heartbeat (the rate-keeper) counts as serving once it lived this long.
READY_UPTIME = 1.0
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
# A service with no worker left retries at least this often, unless its workers cannot boot.
LAST_WORKER_RETRY = 1.0
# The status answer waits this long at most for the rate-keeper, inside the arbiter's loop.
STATS_TIMEOUT = 0.5

# <sys/prctl.h>
PR_SET_PDEATHSIG = 1

WORKER, DELIVERY, RATEKEEPER = "worker", "delivery", "ratekeeper"
# The web console's service: its workers are forked as the others, but load their TLS context
# and lose sight of every private key before the privilege drop (admin/isolation.py).
ADMIN = "admin"
ChildKey = tuple[str, str, int]
# (host, port, worker slot): the slot of a reuse_port service's socket, None for a shared one.
ListenerKey = tuple[str, int, int | None]


def _default_worker(service: str, config: Config, listeners: list[socket.socket], heartbeat: Heartbeat) -> int:
    from . import worker

    return worker.run(service, config, listeners, heartbeat)


def _default_admin_prepare(config: Config) -> Any:
    from ..admin import isolation

    return isolation.prepare(config)


def _default_admin(config: Config, listeners: list[socket.socket], heartbeat: Heartbeat,
                   prepared: Any) -> int:
    from ..admin import worker

    return worker.run(config, listeners, heartbeat, prepared)


def _default_delivery(config: Config, slot: int, slots: int, heartbeat: Callable[[], None],
                      stopping: Callable[[], bool]) -> None:
    from ..queue import delivery

    delivery.serve(config, slot, slots, heartbeat, stopping)


def _default_ratekeeper(config: Config) -> None:
    from ..ratekeeper import server

    server.serve(config.ratekeeper_socket, sandbox_dir=config.data_dir,
                 redis_url=config.cluster.redis, node=config.node_name)


def _default_recover(queue_dir: Path) -> None:
    from ..queue import spool

    spool.recover(queue_dir)


def _default_queue_length(queue_dir: Path) -> int:
    from ..queue import spool

    return spool.queue_length(queue_dir)


def _default_queue_oldest_age(queue_dir: Path) -> float | None:
    from ..queue import spool

    return spool.oldest_age(queue_dir)


def _default_queue_usage(queue_dir: Path) -> Any:
    from ..queue import spool

    return spool.queue_usage(queue_dir)


def _default_stats(socket_path: Path, timeout: float) -> dict | None:
    """The rate-keeper's counters: "connections" by service, "abuse" (failures and blocks)."""
    from ..ratekeeper import client

    return client.query_stats(socket_path, timeout=timeout)


def _default_ask(socket_path: Path, timeout: float, op: str, *args: object) -> object | None:
    """One rate-keeper request (`mailforge abuse`, a reload); None if it does not answer."""
    from ..ratekeeper import client

    return client.ask(socket_path, timeout, op, *args)


# The module each default target imports, so that _preload() can import it before fork.
_DEFAULT_MODULES = {
    _default_worker: "mailforge.process.worker",
    _default_admin_prepare: "mailforge.admin.isolation",
    _default_admin: "mailforge.admin.worker",
    _default_delivery: "mailforge.queue.delivery",
    _default_ratekeeper: "mailforge.ratekeeper.server",
    _default_recover: "mailforge.queue.spool",
    _default_queue_length: "mailforge.queue.spool",
    _default_queue_oldest_age: "mailforge.queue.spool",
    _default_queue_usage: "mailforge.queue.spool",
    _default_stats: "mailforge.ratekeeper.client",
    _default_ask: "mailforge.ratekeeper.client",
}


@dataclass
class Targets:
    """What the children run and what the supervisor asks others; tests swap them."""

    worker_target: Callable[..., int] = _default_worker
    admin_prepare: Callable[[Config], Any] = _default_admin_prepare
    admin_target: Callable[..., int] = _default_admin
    delivery_target: Callable[..., None] = _default_delivery
    ratekeeper_target: Callable[[Config], None] = _default_ratekeeper
    recover: Callable[[Path], None] = _default_recover
    queue_length: Callable[[Path], int] = _default_queue_length
    queue_oldest_age: Callable[[Path], float | None] = _default_queue_oldest_age
    queue_usage: Callable[[Path], Any] = _default_queue_usage
    ratekeeper_stats: Callable[[Path, float], dict | None] = _default_stats
    ratekeeper_ask: Callable[..., object | None] = _default_ask
    load_config: Callable[[Path], Config] = config_module.load


@dataclass
class Child:
    pid: int
    kind: str
    service: str
    slot: int
    generation: int
    started: float
    heartbeat: Heartbeat | None
    retiring: bool = False
    aborted: bool = False
    # SIGKILL when the monotonic clock passes this.
    deadline: float | None = None

    @property
    def key(self) -> ChildKey:
        return (self.kind, self.service, self.slot)

    @property
    def name(self) -> str:
        return f"{_describe(*self.key)} (pid {self.pid})"

    def ready(self, now: float) -> bool:
        """Has it got as far as serving? A worker's first heartbeat comes once it listens (the
        parent's own stamp, made before fork, is older than `started`)."""
        if self.heartbeat is None:
            return now - self.started >= READY_UPTIME
        return self.heartbeat.last_update() > self.started


def _describe(kind: str, service: str, slot: int) -> str:
    if kind == RATEKEEPER:
        return "rate-keeper"
    return f"{service if kind == WORKER else 'delivery'} worker #{slot}"


@dataclass
class Listener:
    service: str
    address: str
    sock: socket.socket = field(repr=False)
    slot: int | None = None  # the one worker slot it serves (reuse_port); None: all of them


def serve(config: Config) -> int:
    """`mailforge serve`: run the supervisor in the foreground until SIGTERM/SIGINT."""
    # Certificate faults stop the start (ConfigError: one line, exit 2) before anything binds.
    for warning in tls.check(config):
        print(f"mailforge: warning: {warning}", file=sys.stderr, flush=True)
    return Supervisor(config).run()


class Supervisor:
    def __init__(self, config: Config, **targets: Callable[..., Any]) -> None:
        self.config = config
        self.targets = Targets(**targets)
        self.pid = os.getpid()
        self.started = time.monotonic()
        self.generation = 1
        self.listeners: dict[ListenerKey, Listener] = {}
        self.children: dict[int, Child] = {}
        self.failures: dict[ChildKey, int] = {}
        self.not_before: dict[ChildKey, float] = {}
        self.control: control.ControlServer | None = None
        self.admin_control: control.ControlServer | None = None
        self.service_ids: tuple[int, int] | None = None  # [server] user/group, when set
        self.selector: selectors.BaseSelector | None = None
        self._wake: tuple[int, int] | None = None
        self._signals: collections.deque[int] = collections.deque()
        self._stopping = False
        self._killing = False  # a second stop signal: every child is being killed
        self.metrics_server: Any = None  # the /metrics HTTP server, when [metrics] listen is set
        # Counted here, not in a metrics file: the supervisor writes into no mapped file, whose
        # page on a full file system would be a SIGBUS that takes every child with it.
        self.restarts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.flow: FlowMonitor  # made at start, once the data dir is there

    # ---- life cycle -------------------------------------------------------------------

    def run(self) -> int:
        try:
            self._start()
        except (MailforgeError, OSError) as exc:
            code = exc.exit_code if isinstance(exc, MailforgeError) else EXIT_FAILURE
            print(f"mailforge: {exc}", file=sys.stderr, flush=True)
            self._cleanup()
            return code
        try:
            self._loop()
            log.info("supervisor %d stopped", self.pid)
            return EXIT_OK
        except Exception:
            log.exception("supervisor failed; killing every child")
            return EXIT_FAILURE
        finally:
            self._cleanup()

    def _start(self) -> None:
        self._refuse_if_running()
        server = self.config.server
        ids = privileges.prepare(server.user, server.group) if server.user else None
        self.service_ids = ids
        self._prepare_run_dir(ids)
        self.flow = FlowMonitor(self.config, self.targets.queue_usage, time.monotonic)
        board.open_board()  # before the first fork: every child shares it
        self._start_metrics(ids)
        raise_open_files_limit()
        self._preload()
        self.listeners = self._rebind(self.config)
        self._open_loop()
        self.targets.recover(self.config.queue_dir)
        # Recovery ran as root and may have made the queue's directories: the workers write there.
        permissions.hand_to_service(self.config, self.config.data_dir, self.config.queue_dir)
        self._start_ratekeeper()
        self._spawn_generation()
        self.flow.log_limits()
        self._announce()

    def _refuse_if_running(self) -> None:
        path = self.config.control_socket
        try:
            answer = control.request(path, "ping", timeout=1.0)
        except (OSError, ValueError):
            return  # nobody answers: a leftover socket file is replaced when we bind ours
        raise MailforgeError(f"another supervisor (pid {answer.get('pid')}) is already running ({path})")

    def _preload(self) -> None:
        """Import the children's code now, still as root and once for all children: after the
        privilege drop the interpreter's own library may be unreadable (a Python under /root),
        and a broken install should stop the start with one line, not crash every child."""
        for target in vars(self.targets).values():
            module = _DEFAULT_MODULES.get(target)
            if module:
                try:
                    importlib.import_module(module)
                except ImportError as exc:
                    raise MailforgeError(f"cannot load {module}: {exc}") from exc

    def _prepare_run_dir(self, ids: tuple[int, int] | None) -> None:
        run_dir = self.config.run_dir
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        if ids:
            # The rate-keeper creates its socket here after it has dropped root.
            os.chown(run_dir, *ids)

    def _start_metrics(self, ids: tuple[int, int] | None) -> None:
        """Multiprocess metrics in a directory of this run's own (metrics.make_directory),
        served from here."""
        if not self.config.metrics.listen:
            return
        directory = metrics.make_directory(self.config.metrics.directory, self.config.data_dir)
        metrics.enable(directory)
        if ids:
            os.chown(directory, *ids)  # each worker writes its own files after the drop
        from .. import metrics_endpoint

        health = Health(self._serving_problem, self._accounts_problem)
        self.metrics_server = metrics_endpoint.start(self.config.metrics.listen,
                                                     self._metrics_snapshot, health)

    def _serving_problem(self) -> str | None:
        """For /health, from the endpoint's thread: why this node takes no sessions now."""
        if self._stopping:
            return "stopping"
        now = time.monotonic()
        workers = [c for c in list(self.children.values()) if c.kind == WORKER]
        for service in self.config.services():
            if not any(c.service == service and c.ready(now) for c in workers):
                return f"starting: no {service} worker serving yet"
        return None

    def _accounts_problem(self) -> str | None:
        """For /health: a PostgreSQL accounts database that does not answer. A SQLite file is
        not asked: it is on this node's disk, and opening it here, as root, could leave its
        journal files unwritable by the workers."""
        settings = self.config.accounts
        if settings.backend != "postgresql":
            return None
        from ..auth.accounts import postgresql_dsn
        from ..auth.postgresql import probe

        try:
            dsn = postgresql_dsn(self.config, settings.dsn)
        except MailforgeError as exc:
            return f"accounts database: {exc}"
        return probe.problem(dsn, settings.timeout)

    def _metrics_snapshot(self) -> Any:
        """Called from the endpoint's thread: reads only, and copies before iterating."""
        from ..metrics_endpoint import Snapshot

        children: dict[tuple[str, str], int] = {}
        for child in list(self.children.values()):
            key = (child.kind, child.service)
            children[key] = children.get(key, 0) + 1
        return Snapshot(self._queue_length(), self._queue_oldest_age(), self._ratekeeper_stats(),
                        children, dict(self.restarts), self.flow.status(time.monotonic()))

    def _open_loop(self) -> None:
        self.selector = selectors.DefaultSelector()
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.set_blocking(write_end, False)
        self._wake = (read_end, write_end)
        self.selector.register(read_end, selectors.EVENT_READ, self._drain_wake_pipe)
        # The C-level handler writes the signal number here, so select() returns at once.
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._record_signal)
        self.config.control_socket.unlink(missing_ok=True)
        self.control = control.ControlServer(
            self.config.control_socket, self.selector,
            {"ping": self._ping, "status": self._status, "abuse-list": self._abuse_list,
             "abuse-unblock": self._abuse_unblock})
        # The console's workers run as the service account, which may not reach the control
        # socket: they get one of their own, answered for their pids alone (a mail worker
        # of the same account is turned away), with only what the console shows and does.
        self.config.admin_socket.unlink(missing_ok=True)
        self.admin_control = control.ControlServer(
            self.config.admin_socket, self.selector,
            {"status": self._status, "abuse-list": self._abuse_list,
             "abuse-unblock": self._abuse_unblock, "outbound-limited": self._outbound_limited,
             "config-set": self._config_set},
            peer_allowed=self._is_admin_worker, owner=self.service_ids)

    def _announce(self) -> None:
        for service, address in dict.fromkeys((l.service, l.address) for l in self.listeners.values()):
            workers = getattr(self.config, service).workers
            plural = "worker" if workers == 1 else "workers"
            print(f"mailforge: {service} listening on {address} ({workers} {plural})")
        print(f"mailforge: ready (pid {self.pid})", flush=True)

    def _cleanup(self) -> None:
        """Leave nothing behind: no child, no socket, no handler pointing at a closed pipe."""
        for child in self.children.values():
            _signal(child.pid, signal.SIGKILL)
        for child in self.children.values():
            try:
                os.waitpid(child.pid, 0)
            except ChildProcessError:
                pass
            if child.heartbeat:
                child.heartbeat.close()
        self.children.clear()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
            self.metrics_server = None
        if metrics.directory() is not None:
            shutil.rmtree(metrics.directory(), ignore_errors=True)
        _close_listeners(self.listeners.values())
        self.listeners = {}
        for server in (self.control, self.admin_control):
            if server:
                server.close()
        self.control = self.admin_control = None
        if self._wake:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            self.selector.close()
            for fd in self._wake:
                os.close(fd)
            self._wake = None

    # ---- the main loop ----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            for key, _ in self.selector.select(self._timeout()):
                key.data()
            self._handle_signals()
            now = time.monotonic()
            self._reap(now)
            self._murder(now)
            if self._stopping and self._stop_done(now):
                return
            self._manage(now)
            self.flow.sample(now)
            self.control.expire(now)

    def _timeout(self) -> float:
        now = time.monotonic()
        due = [t - now for t in (*self.not_before.values(), self.flow.next_sample) if t > now]
        return max(0.0, min([TICK, *due]))

    def _record_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def _drain_wake_pipe(self) -> None:
        try:
            while os.read(self._wake[0], 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _handle_signals(self) -> None:
        handlers = {signal.SIGTERM: self._handle_term, signal.SIGINT: self._handle_term,
                    signal.SIGHUP: self._handle_hup}
        while self._signals:
            signum = self._signals.popleft()
            if signum in handlers:  # SIGCHLD only woke us: the reap step follows
                log.info("received %s", signal.Signals(signum).name)
                handlers[signum]()

    # ---- children: reap, watch, spawn -------------------------------------------------

    def _reap(self, now: float) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            metrics.mark_dead(pid)
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self._on_exit(child, os.waitstatus_to_exitcode(status), now)
            if child.heartbeat:
                child.heartbeat.close()

    def _on_exit(self, child: Child, code: int, now: float) -> None:
        how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with status {code}"
        uptime = now - child.started
        if child.retiring or self._stopping:
            # Asked to go: routine, one line per worker, unless it went otherwise than asked.
            log.log(logging.DEBUG if code == 0 else logging.INFO, "%s %s", child.name, how)
            return
        self.restarts[(child.kind, child.service or child.kind)] += 1
        delay = self._backoff(child, code, now)
        self.not_before[child.key] = now + delay
        if code == EXIT_WORKER_BOOT:
            log.error("%s could not boot (status %d); next try in %.1f s", child.name, code, delay)
        else:
            log.warning("%s %s after %.1f s; restarting in %.1f s", child.name, how, uptime, delay)

    def _backoff(self, child: Child, code: int, now: float) -> float:
        """Seconds before the replacement starts. A child that got as far as serving and then
        died (killed by the OOM killer or an operator, or a bug) is replaced at once: waiting
        would only leave its service short. One that died before serving failed to boot: the
        delay doubles while its slot keeps failing, so a broken build does not fork in a tight
        loop; but a service left with no worker at all retries within LAST_WORKER_RETRY,
        unless the child said it cannot boot (EXIT_WORKER_BOOT: the config, a certificate)."""
        if code != EXIT_WORKER_BOOT and child.ready(now):
            self.failures.pop(child.key, None)
            return 0.0
        failures = self.failures[child.key] = self.failures.get(child.key, 0) + 1
        delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (failures - 1))
        if code != EXIT_WORKER_BOOT and not self._others_serve(child):
            delay = min(delay, LAST_WORKER_RETRY)
        return delay

    def _others_serve(self, gone: Child) -> bool:
        return any(c.kind == gone.kind and c.service == gone.service and not c.retiring
                   for c in self.children.values())

    def _murder(self, now: float) -> None:
        timeout = self.config.server.worker_timeout
        for child in list(self.children.values()):
            if child.deadline is not None and now >= child.deadline:
                log.warning("%s did not stop in time: SIGKILL", child.name)
                child.deadline = None
                _signal(child.pid, signal.SIGKILL)
            elif child.heartbeat and not child.retiring and not child.aborted:
                silent = child.heartbeat.silent_for(now)
                if silent > timeout:
                    log.error("%s silent for %.1f s: SIGABRT, then SIGKILL", child.name, silent)
                    child.aborted = True
                    child.deadline = now + ABORT_GRACE
                    _signal(child.pid, signal.SIGABRT)

    def _wanted(self) -> list[ChildKey]:
        keys: list[ChildKey] = [(RATEKEEPER, "", 0)]
        for name, service in self.config.services().items():
            keys.extend((WORKER, name, slot) for slot in range(service.workers))
        keys.extend((DELIVERY, "", slot) for slot in range(self.config.delivery.workers))
        return keys

    def _manage(self, now: float) -> None:
        if self._stopping:
            # Draining workers still report to the rate-keeper: keep one while they run.
            draining = any(c.kind != RATEKEEPER for c in self.children.values())
            if (draining and not self._killing
                    and not any(c.kind == RATEKEEPER for c in self.children.values())):
                self._spawn(RATEKEEPER, "", 0)
            return
        filled = {c.key for c in self.children.values() if not c.retiring}
        for key in self._wanted():
            if key not in filled and now >= self.not_before.get(key, 0.0):
                self._spawn(*key)

    def _spawn_generation(self) -> None:
        for key in self._wanted():
            if key[0] != RATEKEEPER:
                self._spawn(*key)

    def _start_ratekeeper(self) -> None:
        """Start it first and wait briefly for its socket, so workers find it at boot."""
        path = self.config.ratekeeper_socket
        path.unlink(missing_ok=True)
        child = self._spawn(RATEKEEPER, "", 0)
        deadline = time.monotonic() + RATEKEEPER_START_TIMEOUT
        while child and not path.exists():
            if _exited(child.pid):
                return  # the reap loop restarts it, with backoff
            if time.monotonic() > deadline:
                log.warning("rate-keeper has not created %s after %.0f s", path, RATEKEEPER_START_TIMEOUT)
                return
            time.sleep(0.02)

    def _spawn(self, kind: str, service: str, slot: int) -> Child | None:
        heartbeat = None if kind == RATEKEEPER else Heartbeat()
        _flush_stdio()  # or buffered output would be written twice, once by the child
        try:
            pid = os.fork()
        except OSError as exc:
            log.error("cannot fork a %s %s: %s", service, kind, exc)
            self.not_before[(kind, service, slot)] = time.monotonic() + BACKOFF_MAX
            if heartbeat:
                heartbeat.close()
            return None
        if pid == 0:
            self._child_main(kind, service, slot, heartbeat)
        child = Child(pid, kind, service, slot, self.generation, time.monotonic(), heartbeat)
        self.children[pid] = child
        log.debug("started %s", child.name)  # the terminal shows the listeners and `ready`
        return child

    def _terminate(self, child: Child, deadline: float, retire: bool = False) -> None:
        """SIGTERM stops; SIGHUP retires a protocol worker after a reload: its sessions go on
        (up to the grace period) instead of being told the service is shutting down."""
        child.retiring = True
        child.deadline = deadline
        _signal(child.pid, signal.SIGHUP if retire and child.kind == WORKER else signal.SIGTERM)

    # ---- in the child -----------------------------------------------------------------

    def _child_main(self, kind: str, service: str, slot: int, heartbeat: Heartbeat | None) -> NoReturn:
        code = EXIT_FAILURE
        try:
            code = self._child_body(kind, service, slot, heartbeat)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else EXIT_FAILURE
        except MailforgeError as exc:
            # Our own errors are environment or config problems (a missing database, a
            # bad certificate): one line, and the supervisor backs off as for a boot failure.
            log.error("%s cannot run: %s", _describe(kind, service, slot), exc)
            code = EXIT_WORKER_BOOT
        except BaseException:
            log.exception("%s crashed", _describe(kind, service, slot))
        finally:
            _flush_stdio()
            os._exit(code)

    def _child_body(self, kind: str, service: str, slot: int, heartbeat: Heartbeat | None) -> int:
        listeners = []
        if kind == WORKER:
            # A reuse_port worker gets its own slot's sockets only: the kernel's share for the
            # others must wait for them, not be taken by this one.
            listeners = [held.sock for held in self.listeners.values()
                         if held.service == service and held.slot in (None, slot)]
        self._detach(listeners, heartbeat)
        console = kind == WORKER and service == ADMIN
        # Still with the supervisor's rights: what the console needs of them, taken now.
        prepared = self.targets.admin_prepare(self.config) if console else None
        user, group = self.config.server.user, self.config.server.group
        if user:
            try:
                privileges.drop(user, group)
            except OSError as exc:
                log.error("%s cannot drop privileges: %s", _describe(kind, service, slot), exc)
                return EXIT_WORKER_BOOT
        if not _die_with_parent(self.pid):
            return EXIT_OK
        if kind != RATEKEEPER:  # the rate-keeper keeps no metrics
            metrics.claim_process_files()
        if console:
            return self.targets.admin_target(self.config, listeners, heartbeat, prepared)
        if kind == WORKER:
            return self.targets.worker_target(service, self.config, listeners, heartbeat)
        if kind == DELIVERY:
            return self._run_delivery(slot, heartbeat)
        self.targets.ratekeeper_target(self.config)
        return EXIT_OK

    def _detach(self, keep: list[socket.socket], heartbeat: Heartbeat | None) -> None:
        """Drop what belongs to the arbiter: its handlers, loop, control socket, the other
        services' listeners (or a removed address would stay bound by a long-lived child)."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        # Ctrl-C reaches the whole process group; the supervisor alone decides how to stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.control.close_in_child()
        self.admin_control.close_in_child()
        self.selector.close()  # closes our epoll fd only; the parent's registrations stay
        if self.metrics_server is not None:
            self.metrics_server.socket.close()  # our copy only: the thread lives in the parent
        for fd in self._wake:
            os.close(fd)
        for listener in self.listeners.values():
            if listener.sock not in keep:
                listener.sock.close()
        for other in self.children.values():
            if other.heartbeat and other.heartbeat is not heartbeat:
                other.heartbeat.close()

    def _run_delivery(self, slot: int, heartbeat: Heartbeat) -> int:
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        self.targets.delivery_target(self.config, slot, self.config.delivery.workers, heartbeat.notify,
                                     lambda: stop.is_set() or os.getppid() != self.pid)
        return EXIT_OK

    # ---- signals: stop and reload -----------------------------------------------------

    def _handle_term(self) -> None:
        now = time.monotonic()
        if self._stopping:
            log.warning("asked again to stop: killing every child now")
            self._killing = True
            for child in self.children.values():
                child.deadline = now
            return
        grace = self.config.server.grace_period
        log.info("stopping: listeners closed, sessions get %.0f s to finish", grace)
        self._stopping = True
        _close_listeners(self.listeners.values())
        self.listeners = {}
        for child in self.children.values():
            if child.kind != RATEKEEPER:
                self._terminate(child, now + grace + STOP_MARGIN)

    def _stop_done(self, now: float) -> bool:
        """Once the workers are gone, stop the rate-keeper; True when nothing is left."""
        if any(c.kind != RATEKEEPER for c in self.children.values()):
            return False
        for child in self.children.values():
            if not child.retiring:
                self._terminate(child, now + RATEKEEPER_STOP_TIMEOUT)
        return not self.children

    def _handle_hup(self) -> None:
        if self._stopping:
            return
        try:
            new = self.targets.load_config(self.config.path)
            _check_reloadable(self.config, new)
            # A certificate broken since start must not retire workers that still serve.
            for warning in tls.check(new):
                log.warning("%s", warning)
            listeners = self._rebind(new)
        except (MailforgeError, OSError) as exc:
            log.error("reload failed, still running the previous config: %s", exc)
            return
        if new.metrics.listen != self.config.metrics.listen:
            log.warning("[metrics] listen changed: it takes effect at the next restart")
        old_children = [c for c in self.children.values() if c.kind != RATEKEEPER and not c.retiring]
        gone = [held for key, held in self.listeners.items() if key not in listeners]
        self.config, self.listeners = new, listeners
        self.flow.configure(new)
        self.generation += 1
        self.failures.clear()  # the operator changed something: give every slot a fresh start
        self.not_before.clear()
        # The old generation holds its own copies until it exits; ours go now, before the new
        # generation forks, or it would inherit them and keep the removed sockets listening.
        _close_listeners(gone)
        self._spawn_generation()
        self._lift_exempt_blocks()
        deadline = time.monotonic() + new.server.grace_period + STOP_MARGIN
        for child in old_children:
            self._terminate(child, deadline, retire=True)
        log.info("reloaded %s: generation %d started, %d old processes retiring",
                 new.path, self.generation, len(old_children))

    def _lift_exempt_blocks(self) -> None:
        """The new workers stop counting failures from [abuse] exempt_networks; the blocks
        such addresses already have are the rate-keeper's to lift."""
        lifted = self.targets.ratekeeper_ask(self.config.ratekeeper_socket, STATS_TIMEOUT,
                                             "exempt", self.config.abuse.exempt_networks)
        if lifted is None:
            log.warning("reload: the rate-keeper did not answer; blocks on addresses in [abuse] "
                        "exempt_networks stay until they end (`mailforge abuse unblock` lifts them)")
        elif lifted:
            log.warning("reload: lifted the blocks on %s, now in [abuse] exempt_networks",
                        ", ".join(lifted))

    def _rebind(self, config: Config) -> dict[ListenerKey, Listener]:
        """Listeners for `config`, reusing every socket we already hold (per address, and per
        worker slot with reuse_port), so a reload never refuses a connection on an address
        that stays."""
        result: dict[ListenerKey, Listener] = {}
        held_addresses = {key[:2] for key in self.listeners}
        try:
            for service, settings in config.services().items():
                slots = range(settings.workers) if settings.reuse_port else [None]
                for text in settings.listen:
                    address = parse_hostport(text)
                    if settings.reuse_port and address not in held_addresses:
                        # SO_REUSEPORT would let us join another process's sockets unnoticed.
                        probe_address(service, text)
                    for slot in slots:
                        key = (*address, slot)
                        held = self.listeners.get(key)
                        sock = held.sock if held else bind_listener(service, text, settings.reuse_port)
                        result[key] = Listener(service, text, sock, slot)
        except BaseException:
            for key, listener in result.items():
                if key not in self.listeners:
                    listener.sock.close()
            raise
        return result

    # ---- control socket ---------------------------------------------------------------

    def _ping(self) -> dict[str, Any]:
        return {"pid": self.pid}

    def _status(self) -> dict[str, Any]:
        from ..speedups import IMPLEMENTATION

        now = time.monotonic()
        rk = [c for c in self.children.values() if c.kind == RATEKEEPER]
        stats = self._ratekeeper_stats()
        # Always an object, so that monitoring reads the same keys while it is being replaced.
        ratekeeper: dict[str, Any] = {"state": "stopping" if self._stopping else "restarting",
                                      "pid": None, "uptime": None, "abuse": None,
                                      "cluster": None}
        if rk:
            ratekeeper.update(state="running" if rk[0].ready(now) else "starting", pid=rk[0].pid,
                              uptime=round(now - rk[0].started, 1),
                              abuse=stats.get("abuse") if stats is not None else None,
                              cluster=stats.get("cluster") if stats is not None else None)
        return {
            "pid": self.pid,
            "uptime": round(now - self.started, 1),
            "generation": self.generation,
            "stopping": self._stopping,
            "implementation": IMPLEMENTATION,
            "sandbox": sandbox.support().describe(),
            "queue": {"length": self._queue_length(), "oldest_age": self._queue_oldest_age(),
                      "flow": self.flow.status(now)},
            "metrics": self.config.metrics.listen or None,
            "ratekeeper": ratekeeper,
            "services": self._service_status(now, None if stats is None else stats.get("connections", {})),
            "delivery": [{**_process(c, now), "storage_backoff": board.storage_backoff(c.slot)}
                         for c in self._children_of(DELIVERY, "")],
        }

    def _abuse_list(self) -> dict[str, Any]:
        """The blocks in force; the rate-keeper's times (seconds from now) made dates."""
        blocks = self._ask_ratekeeper("blocks")
        now = time.time()
        return {"blocks": [{**block, "since": _date(now + block["since"]),
                            "until": _date(now + block["until"]),
                            "seconds_left": math.ceil(block["until"])} for block in blocks]}

    def _abuse_unblock(self, address: str | None = None) -> dict[str, Any]:
        """Lift the block on `address`, or every block when it is None; the addresses lifted."""
        if address is not None and not isinstance(address, str):
            raise control.CommandFailed("address must be a string")
        lifted = (self._ask_ratekeeper("unblock_all") if address is None
                  else self._ask_ratekeeper("unblock", address))
        return {"lifted": lifted}

    def _outbound_limited(self) -> dict[str, Any]:
        return {"senders": self._ask_ratekeeper("limited")}

    def _config_set(self, section: str, values: dict[str, Any]) -> dict[str, Any]:
        """The console's services form: change keys of one section (config_edit.EDITABLE),
        validated as check-config validates, then reload as SIGHUP does. Nothing is written
        when the change is refused; the answer's error is check-config's line."""
        from .. import config_edit

        if not isinstance(section, str) or not isinstance(values, dict):
            raise control.CommandFailed("section must be a string and values an object")
        try:
            config_edit.update(self.config.path, section, values)
        except (MailforgeError, OSError) as exc:
            raise control.CommandFailed(str(exc)) from None
        log.info("config %s: [%s] %s changed by the console; reloading", self.config.path, section,
                 ", ".join(f"{key} = {value!r}" for key, value in values.items()))
        os.kill(self.pid, signal.SIGHUP)  # the reload takes the same path as an operator's
        return {"reloading": True}

    def _is_admin_worker(self, pid: int) -> bool:
        return any(c.pid == pid and c.kind == WORKER and c.service == ADMIN
                   for c in self.children.values())

    def _ask_ratekeeper(self, op: str, *args: object) -> Any:
        answer = self.targets.ratekeeper_ask(self.config.ratekeeper_socket, STATS_TIMEOUT, op, *args)
        if answer is None:
            raise control.CommandFailed("the rate-keeper did not answer; try again in a moment")
        return answer

    def _service_status(self, now: float, stats: dict | None) -> dict[str, Any]:
        names = [*self.config.services(), *(c.service for c in self.children.values() if c.kind == WORKER)]
        services = {}
        for name in dict.fromkeys(names):
            counters = stats.get(name, {}) if stats is not None else {}
            services[name] = {
                "listen": [{"address": l.address, "fd": l.sock.fileno()}
                           for l in self.listeners.values() if l.service == name],
                "workers": [_process(c, now) for c in self._children_of(WORKER, name)],
                "connections": counters.get("connections", 0 if stats is not None else None),
                "ips": counters.get("ips", 0 if stats is not None else None),
                "refused": counters.get("refused", {}),
            }
        return services

    def _children_of(self, kind: str, service: str) -> list[Child]:
        found = [c for c in self.children.values() if c.kind == kind and c.service == service]
        return sorted(found, key=lambda c: (c.generation, c.slot))

    def _ratekeeper_stats(self) -> dict | None:
        try:
            return self.targets.ratekeeper_stats(self.config.ratekeeper_socket, STATS_TIMEOUT)
        except Exception as exc:  # status must answer even when the rate-keeper cannot
            log.debug("rate-keeper stats unavailable: %s", exc)
            return None

    def _queue_oldest_age(self) -> float | None:
        try:
            age = self.targets.queue_oldest_age(self.config.queue_dir)
        except Exception as exc:
            log.debug("queue age unavailable: %s", exc)
            return None
        return None if age is None else round(age, 1)

    def _queue_length(self) -> int | None:
        try:
            return self.targets.queue_length(self.config.queue_dir)
        except Exception as exc:
            log.debug("queue length unavailable: %s", exc)
            return None


def _process(child: Child, now: float) -> dict[str, Any]:
    return {"pid": child.pid, "slot": child.slot, "generation": child.generation,
            "uptime": round(now - child.started, 1), "retiring": child.retiring,
            "ready": child.ready(now)}


def _date(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(
        timespec="seconds")


def _check_reloadable(old: Config, new: Config) -> None:
    if new.data_dir != old.data_dir:
        raise UsageError("[server] data_dir changed: that needs a restart")
    if (new.server.user, new.server.group) != (old.server.user, old.server.group):
        raise UsageError("[server] user/group changed: that needs a restart")
    # A shared socket and a reuse_port group cannot hold one address at once, and closing
    # either first would refuse connections meanwhile.
    before = _reuse_port_by_address(old)
    for address, (service, text, reuse_port) in _reuse_port_by_address(new).items():
        if address in before and before[address][2] != reuse_port:
            raise UsageError(f"[{service}] reuse_port changed for {text}: that needs a restart")


def _reuse_port_by_address(config: Config) -> dict[tuple[str, int], tuple[str, str, bool]]:
    return {parse_hostport(text): (service, text, settings.reuse_port)
            for service, settings in config.services().items() for text in settings.listen}


def bind_listener(service: str, text: str, reuse_port: bool = False) -> socket.socket:
    """A listening socket for `text` (host:port from the config); one clear line on failure.
    With `reuse_port` it joins the other sockets of the address (SO_REUSEPORT)."""
    try:
        sock = _bound_socket(text, reuse_port)
        try:
            sock.listen(LISTEN_BACKLOG)
            # Several workers accept on it: a blocking accept could hang after losing the race.
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise _cannot_listen(service, text, exc) from None
    return sock


def probe_address(service: str, text: str) -> None:
    """Fail as bind_listener does if anyone listens on `text`: bound without SO_REUSEPORT,
    and never listening, so that no client's connection can land in it."""
    try:
        _bound_socket(text, reuse_port=False).close()
    except OSError as exc:
        raise _cannot_listen(service, text, exc) from None


def _bound_socket(text: str, reuse_port: bool) -> socket.socket:
    family, address, dual_stack = _socket_address(*parse_hostport(text))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # Explicit IPv6 addresses must not also grab the IPv4 port ("0.0.0.0:25" may
            # be configured beside "[::]:25"); only "*" means both.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _cannot_listen(service: str, text: str, exc: OSError) -> UsageError:
    return UsageError(f"cannot listen for {service} on {text}: {exc.strerror or exc}")


def _socket_address(host: str, port: int) -> tuple[int, tuple, bool]:
    if host == "*":
        if socket.has_ipv6:
            return socket.AF_INET6, ("::", port), True
        return socket.AF_INET, ("0.0.0.0", port), False
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return family, address, False


def raise_open_files_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return soft
    target = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit to %d: %s", target, exc)
    if soft < WANTED_OPEN_FILES:
        log.warning("open files limit is %d; a worker with 10,000 connections needs %d "
                    "(raise the hard limit: ulimit -Hn, LimitNOFILE=)", soft, WANTED_OPEN_FILES)
    return soft


def _close_listeners(listeners: Iterable[Listener]) -> None:
    for listener in listeners:
        listener.sock.close()
        whose = "" if listener.slot is None else f" (worker #{listener.slot}'s socket)"
        log.info("%s stopped listening on %s%s", listener.service, listener.address, whose)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _exited(pid: int) -> bool:
    """Has child `pid` exited? Peeks (WNOWAIT) so the reap loop still sees it; False where
    waitid is missing (macOS before Python 3.13), which only means waiting longer."""
    if not hasattr(os, "waitid"):
        return False
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _die_with_parent(parent: int) -> bool:
    """Ask Linux for SIGTERM when the supervisor dies, then check it is still there; False if
    it is gone already. A child that reads os.getppid() only once it runs could otherwise
    miss a supervisor that died right after fork, and the rate-keeper has no check at all.
    Called after the privilege drop, which clears the setting."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: children still notice their new parent through os.getppid()
    return os.getppid() == parent


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass  # already gone; the reap loop will hear of it


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
