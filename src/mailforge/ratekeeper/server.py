"""The rate-keeper process: shared counters for every worker, over one Unix socket.

Modelled on Postfix's anvil: counts that must hold across all worker processes (a service's
connection cap, a client IP's cap) cannot live in any one worker, so one small process keeps
them in memory, with no disk and no network besides its socket. Each accepted connection is one
`owner` (one worker); when it closes, for any reason, everything it held is released.

Wire format: a msgpack stream. Request `[req_id, op, *args]`, reply `[req_id, result]`; a
request whose req_id is None is fire-and-forget and gets no reply. A bad request is answered
with `{"error": "..."}`; bytes that are not msgpack close that one connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import signal
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack
import uvloop

from .abuse import Block, FailureCounters, Thresholds
from .counters import Clock, ConnectionCounters, OpenVerdict
from .outbound import SendCounters
from ..process import sandbox

log = logging.getLogger(__name__)

# Bounds what one client can make us buffer. It must exceed one read (uvloop reads up to
# 256 KiB), since a pipelining worker's read may hold thousands of small requests.
MAX_REQUEST_BUFFER = 1024 * 1024
# How often to check that the supervisor is still our parent (STYLE.md 3): if it died, we are
# an orphan nobody will stop.
PARENT_POLL_INTERVAL = 1.0
# Only the worker account may talk to the rate-keeper; a full counter table would refuse mail.
SOCKET_MODE = 0o600


@dataclass(frozen=True, slots=True)
class Operation:
    """One request the rate-keeper answers: `run(owner, *args)` with args of `params` types."""

    run: Callable[..., object]
    params: tuple[type, ...]

    def check(self, args: list) -> str | None:
        # Exact types: msgpack gives bool for true/false, and bool is not a count.
        if tuple(map(type, args)) == self.params:
            return None
        if len(args) != len(self.params):
            return f"expected {len(self.params)} arguments, got {len(args)}"
        index, arg, param = next(
            (i, arg, param) for i, (arg, param) in enumerate(zip(args, self.params))
            if type(arg) is not param)
        return f"argument {index + 1} must be {param.__name__}, got {type(arg).__name__}"


class RateKeeper:
    """Every counter set the process holds, and the operation table that reaches them.

    A new kind of counter is one more attribute here, a few entries in `ops`, and a line in
    `drop_owner` if it holds per-owner state.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.connections = ConnectionCounters(clock)
        self.failures = FailureCounters(clock)
        self.sends = SendCounters(clock)
        self.ops: dict[str, Operation] = {
            "open": Operation(self.open, (str, str, int, int)),
            "close": Operation(self.close, (str, str)),
            # ip, service, what failed, then Thresholds' fields in order
            # → [delay, seconds blocked]
            "fail": Operation(self.fail, (str, str, str, float, int, float, float, int, float)),
            # ip → seconds its block has left (0.0: none), for the refusal's words
            "blocked_for": Operation(self.blocked_for, (str,)),
            # For `mailforge abuse` and reloads; each lift answers the keys it lifted.
            "blocks": Operation(self.blocks, ()),
            "unblock": Operation(self.unblock, (str,)),
            "unblock_all": Operation(self.unblock_all, ()),
            "exempt": Operation(self.exempt, (list,)),
            # sender, messages, interval, commit → [allowed, new_event]
            "send": Operation(self.send, (str, int, float, bool)),
            "stats": Operation(self.stats, ()),
            # For the console's dashboard: the senders this node refused by their limit now.
            "limited": Operation(self.limited, ()),
        }

    # Each operation takes the owner first; a subclass may answer any of them with a
    # coroutine (cluster.py), which `handle` passes on for the connection to await.

    def open(self, owner: object, service: str, ip: str, max_total: int,
             max_per_ip: int) -> OpenVerdict:
        blocked = self.failures.blocked_for(ip) > 0
        return self.connections.open(owner, service, ip, max_total, max_per_ip, blocked)

    def close(self, owner: object, service: str, ip: str) -> None:
        self.connections.close(owner, service, ip)

    def fail(self, _owner: object, ip: str, service: str, what: str,
             *thresholds: float) -> list[float]:
        return list(self.failures.record(ip, Thresholds(*thresholds), service, what))

    def blocked_for(self, _owner: object, ip: str) -> float:
        return self.failures.blocked_for(ip)

    def blocks(self, _owner: object = None) -> list[dict]:
        """The blocks in force, times as seconds from now (the clock is monotonic: the asker
        turns them into dates)."""
        return [block_entry(key, block) for key, block in self.local_blocks().items()]

    def local_blocks(self) -> dict[str, Block]:
        """This process's blocks in force, times in seconds from now."""
        now = self.failures.clock()
        return {key: dataclasses.replace(block, since=block.since - now, until=block.until - now)
                for key, block in self.failures.blocked().items()}

    def unblock(self, _owner: object, ip: str) -> list[str]:
        return self.failures.unblock(ip)

    def unblock_all(self, _owner: object) -> list[str]:
        return self.failures.unblock_all()

    def exempt(self, _owner: object, networks: list) -> list[str]:
        return self.failures.exempt(networks)

    def send(self, _owner: object, sender: str, messages: int, interval: float,
             commit: bool) -> list[bool]:
        return list(self.sends.take(sender, messages, interval, commit))

    def limited(self, _owner: object = None) -> list[str]:
        return self.sends.limited()

    def stats(self, _owner: object = None) -> dict:
        return {"connections": self.connections.snapshot(), "abuse": self.failures.snapshot(),
                "outbound": self.sends.snapshot()}

    def handle(self, owner: object, request: object) -> tuple[object, object]:
        """One decoded request → (req_id, result); never raises for a bad request."""
        if not isinstance(request, list) or len(request) < 2:
            return None, _error("a request is [req_id, op, *args]")
        req_id, name, *args = request
        op = self.ops.get(name) if isinstance(name, str) else None
        if op is None:
            return req_id, _error(f"unknown operation {name!r}")
        problem = op.check(args)
        if problem:
            return req_id, _error(f"{name}: {problem}")
        try:
            result = op.run(owner, *args)
        except ValueError as exc:
            return req_id, _error(f"{name}: {exc}")
        return req_id, (_answer(name, result) if inspect.isawaitable(result) else result)

    def drop_owner(self, owner: object) -> None:
        self.connections.drop_owner(owner)

    def start(self) -> None:
        """Once the event loop runs; counts in memory need nothing (cluster.py's do)."""

    async def stop(self) -> None:
        """Before the process exits."""


async def _answer(name: str, result: Awaitable[object]) -> object:
    try:
        return await result
    except ValueError as exc:
        return _error(f"{name}: {exc}")


def block_entry(key: str, block: Block) -> dict:
    """A block as `blocks` answers it."""
    return {"address": key, "services": list(block.services), "failures": block.failures,
            "since": block.since, "until": block.until, "why": block.why}


def _error(message: str) -> dict[str, str]:
    return {"error": message}


class _WorkerConnection(asyncio.Protocol):
    """One worker's connection: it is the `owner` of every count it asks for."""

    def __init__(self, keeper: RateKeeper, live: set[_WorkerConnection]) -> None:
        self._keeper = keeper
        self._live = live
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_REQUEST_BUFFER)
        self._packer = msgpack.Packer()
        self._transport: asyncio.Transport | None = None
        self._waiting: set[asyncio.Future] = set()  # replies the shared counters still owe

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._live.add(self)

    def close(self) -> None:
        self._transport.close()

    def data_received(self, data: bytes) -> None:
        replies: list[bytes] = []
        garbage = None
        try:
            self._unpacker.feed(data)
            for request in self._unpacker:
                reply = self._handle(request)
                if reply is not None:
                    replies.append(reply)
        except (ValueError, msgpack.UnpackException) as exc:
            garbage = exc
        # One write per read: a pipelining client gets all its replies in one segment.
        if replies:
            self._transport.write(b"".join(replies))
        if garbage is not None:
            # The stream cannot be resynchronised; closing it releases what it held, after
            # answering the requests that came before the garbage.
            log.warning("rate-keeper: closing a client that sent bad msgpack: %s", garbage)
            self._transport.close()

    def _handle(self, request: object) -> bytes | None:
        req_id, result = self._keeper.handle(self, request)
        if inspect.isawaitable(result):  # the shared counters answer later
            task = asyncio.ensure_future(self._reply_later(req_id, result))
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
            return None
        if req_id is not None:
            return self._packer.pack([req_id, result])
        if isinstance(result, dict) and "error" in result:
            log.warning("rate-keeper: bad request without a req_id: %s", result["error"])
        return None

    async def _reply_later(self, req_id: object, result: Awaitable[object]) -> None:
        answer = await result
        if req_id is not None and not self._transport.is_closing():
            self._transport.write(self._packer.pack([req_id, answer]))

    def pause_writing(self) -> None:
        # A client that does not read its replies must not grow our buffers: stop reading it.
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        self._keeper.drop_owner(self)


def serve(socket_path: str | Path, sandbox_dir: Path | None = None, redis_url: str = "",
          node: str = "") -> None:
    """Run the rate-keeper until SIGTERM or until our parent process changes; locked in
    like the workers (no program, writes only under `sandbox_dir`) when that is given.
    With `redis_url`, the counts are shared with the other nodes there (cluster.py)."""
    if sandbox_dir is not None:
        try:
            log.debug("rate-keeper sandbox: %s", sandbox.confine(sandbox_dir).describe())
        except OSError as exc:
            # Serving unconfined beats not serving: without it every limit fails open.
            log.error("rate-keeper cannot enter its sandbox: %s", exc)
    uvloop.run(_serve(Path(socket_path), redis_url, node))


async def _serve(path: Path, redis_url: str, node: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Not SIGINT: Ctrl-C reaches the whole process group, and the supervisor, which ignores
    # it in its children, decides when the rate-keeper stops (after the draining workers).
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if redis_url:
        from .cluster import ClusteredKeeper  # imports redis only where a cluster needs it
        keeper: RateKeeper = ClusteredKeeper(redis_url, node)
    else:
        keeper = RateKeeper()
    keeper.start()
    live: set[_WorkerConnection] = set()
    server = await _listen(loop, path, lambda: _WorkerConnection(keeper, live))
    inode = path.stat().st_ino
    watcher = asyncio.create_task(_watch_parent(os.getppid(), stop))
    log.debug("rate-keeper: listening on %s", path)
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        server.close()
        _unlink_if_ours(path, inode)
        # asyncio.Server.close leaves accepted connections open (before 3.12).
        for client in list(live):
            client.close()
        await asyncio.sleep(0)  # let their connection_lost run before the loop closes
        await keeper.stop()
    log.info("rate-keeper: stopped")


async def _listen(
    loop: asyncio.AbstractEventLoop, path: Path, protocol: Callable[[], asyncio.Protocol]
) -> asyncio.Server:
    _unlink_stale(path)
    # Create the socket with its final mode, so there is no moment where others could connect.
    old_umask = os.umask(0o777 & ~SOCKET_MODE)
    try:
        return await loop.create_unix_server(protocol, str(path))
    finally:
        os.umask(old_umask)


def _unlink_stale(path: Path) -> None:
    """A socket left by a rate-keeper that died; anything else there is not ours to delete."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    path.unlink()


def _unlink_if_ours(path: Path, inode: int) -> None:
    # A replacement rate-keeper may already have bound a fresh socket at the same path.
    try:
        if path.stat().st_ino == inode:
            path.unlink()
    except FileNotFoundError:
        pass


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_POLL_INTERVAL)
    log.warning("rate-keeper: parent process %d is gone; exiting", parent)
    stop.set()
