"""The supervisor's control socket and the `mailforge status` command.

Protocol: one JSON line in (`{"command": "status"}`, or with the command's arguments:
`{"command": "abuse-unblock", "args": {"address": "192.0.2.7"}}`), one JSON line out, then
close. The
server side runs inside the supervisor's own select loop, non-blocking, so a client that
connects and says nothing costs the arbiter nothing and is dropped after a short timeout.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import EXIT_OK, MailforgeError

log = logging.getLogger("mailforge.supervisor")

# A request is one short line; anything longer is not one of ours.
MAX_REQUEST = 4096
# How long a client may take to send its line; the arbiter never waits on it.
REQUEST_TIMEOUT = 1.0
# Writing the answer is the only blocking step; a few KB fit any socket buffer, this bounds it.
REPLY_TIMEOUT = 0.2
BACKLOG = 16

# Called with the request's "args" as keyword arguments.
Handler = Callable[..., dict[str, Any]]
# struct ucred of SO_PEERCRED: pid, uid, gid.
_UCRED = struct.Struct("3i")


class CommandFailed(Exception):
    """A handler's answer that the command could not be done (and why): no traceback logged."""


@dataclass
class _Client:
    sock: socket.socket
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)


class ControlServer:
    """Serves `handlers` (command name → function of the request's arguments, returning a
    JSON-able dict) on `path`."""

    def __init__(self, path: Path, selector: selectors.BaseSelector, handlers: dict[str, Handler],
                 peer_allowed: Callable[[int], bool] | None = None,
                 owner: tuple[int, int] | None = None):
        """`peer_allowed`: asked with each client's pid (SO_PEERCRED), which is dropped unless
        it says yes; `owner`: (uid, gid) the socket is handed to, so that a process running
        as that account may connect."""
        self.path = Path(path)
        self._selector = selector
        self._handlers = handlers
        self._peer_allowed = peer_allowed
        self._clients: dict[int, _Client] = {}
        self._sock = _bind_unix(self.path)
        if owner is not None:
            os.chown(self.path, *owner)
        selector.register(self._sock, selectors.EVENT_READ, self._accept)

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        if self._peer_allowed is not None and not self._peer_allowed(_peer_pid(conn)):
            conn.close()
            return
        conn.setblocking(False)
        client = _Client(conn, time.monotonic() + REQUEST_TIMEOUT)
        self._clients[conn.fileno()] = client
        self._selector.register(conn, selectors.EVENT_READ, lambda: self._read(client))

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        client.buffer += data
        if b"\n" in client.buffer:
            self._reply(client, self._answer(bytes(client.buffer).split(b"\n", 1)[0]))
        elif not data or len(client.buffer) > MAX_REQUEST:
            self._drop(client)

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            command = request["command"]
            handler = self._handlers[command]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": f"unknown request; commands: {', '.join(self._handlers)}"}
        arguments = request.get("args", {})
        try:
            inspect.signature(handler).bind(**arguments)
        except TypeError as exc:  # also for args that are not an object
            return {"ok": False, "error": f"{command}: bad arguments: {exc}"}
        try:
            return {"ok": True, **handler(**arguments)}
        except CommandFailed as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug in one answer must not take the arbiter down
            log.exception("control command %r failed", command)
            return {"ok": False, "error": f"{command} failed: {exc}"}

    def _reply(self, client: _Client, answer: dict[str, Any]) -> None:
        try:
            client.sock.settimeout(REPLY_TIMEOUT)
            client.sock.sendall(json.dumps(answer).encode() + b"\n")
        except OSError:
            pass  # the client went away or is not reading: its loss, not the arbiter's
        self._drop(client)

    def _drop(self, client: _Client) -> None:
        self._clients.pop(client.sock.fileno(), None)
        self._selector.unregister(client.sock)
        client.sock.close()

    def expire(self, now: float) -> None:
        """Drop clients that did not send their request in time (called from the main loop)."""
        for client in [c for c in self._clients.values() if c.deadline <= now]:
            self._drop(client)

    def close(self) -> None:
        """Stop serving and remove the socket file (the supervisor is exiting)."""
        for client in list(self._clients.values()):
            self._drop(client)
        self._selector.unregister(self._sock)
        self._sock.close()
        self.path.unlink(missing_ok=True)

    def close_in_child(self) -> None:
        """After fork: close our copies only. Unregistering would edit the parent's epoll set
        (shared across fork) and unlinking would remove the parent's socket."""
        for client in self._clients.values():
            client.sock.close()
        self._sock.close()


def _peer_pid(conn: socket.socket) -> int:
    pid, _, _ = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid


def _bind_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes the socket 0600 from the start: a chmod after bind leaves a window.
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def request(socket_path: Path | str, command: str, timeout: float = 2.0,
            **arguments: Any) -> dict[str, Any]:
    """Ask the supervisor; OSError (incl. TimeoutError) if none answers, ValueError if garbled."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        message = {"command": command, "args": arguments} if arguments else {"command": command}
        sock.sendall(json.dumps(message).encode() + b"\n")
        answer = bytearray()
        while b"\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    result = json.loads(answer)
    if not isinstance(result, dict):
        raise ValueError(f"unexpected answer from the control socket: {result!r}")
    return result


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="show the running server's processes and counters")
    parser.add_argument("--json", action="store_true", help="print the raw JSON answer")
    parser.set_defaults(handler=status)


def ask(config: Any, command: str, **arguments: Any) -> dict[str, Any]:
    """The running server's answer for the command line; MailforgeError (one line, exit 1)
    when it is not running or the command failed."""
    path = config.control_socket
    try:
        answer = request(path, command, **arguments)
    except (OSError, ValueError):
        raise MailforgeError(f"not running (nothing answers on {path})") from None
    if not answer.get("ok"):
        raise MailforgeError(f"{command} failed: {answer.get('error', 'no reason given')}")
    return answer


def status(args: argparse.Namespace, config: Any) -> int:
    answer = ask(config, "status")
    if getattr(args, "json", False):
        print(json.dumps(answer, indent=2, sort_keys=True))
    else:
        print(format_status(answer))
    return EXIT_OK


def format_status(answer: dict[str, Any]) -> str:
    """The status answer as a table for people."""
    lines = [
        f"supervisor   pid {answer['pid']}  up {_duration(answer['uptime'])}  "
        f"generation {answer['generation']}  implementation {answer['implementation']}",
        f"sandbox      {answer.get('sandbox', 'unknown')}",
        f"queue        {_queue_summary(answer['queue'])}",
        f"queue flow   {_flow_summary(answer['queue']['flow'])}",
        f"metrics      {'http://' + answer['metrics'] + '/metrics' if answer.get('metrics') else 'off'}",
    ]
    rk = answer["ratekeeper"]
    lines.append(f"rate-keeper  {rk['state']}  pid {rk['pid']}  up {_duration(rk['uptime'])}"
                 if rk["pid"] else f"rate-keeper  {rk['state']}")
    if rk.get("cluster") is not None:
        lines.append(f"cluster      {_cluster_summary(rk['cluster'])}")
    if rk.get("abuse") is not None:
        blocked = rk["abuse"]["blocked_now"]
        lines.append(f"abuse        {blocked} address{'' if blocked == 1 else 'es'} blocked now"
                     " (`mailforge abuse list`)")
    for name, service in answer["services"].items():
        lines.append("")
        lines.append(_service_header(name, service))
        lines.extend(_process_row(w) for w in service["workers"])
    lines.append("")
    lines.append(f"delivery     {_count(len(answer['delivery']), 'worker')}")
    lines.extend(_process_row(w) + _storage_note(w) for w in answer["delivery"])
    return "\n".join(lines)


def _cluster_summary(cluster: dict[str, Any]) -> str:
    where = f"node {cluster['node']}, {cluster['redis']}"
    if cluster["shared"]:
        return f"shared counters ({where}) for {_duration(cluster['since'])}"
    return (f"LOCAL COUNTS ONLY: {where} unreachable for {_duration(cluster['since'])} "
            f"({cluster['reason']}); limits hold per node until it is back")


def _queue_summary(queue: dict[str, Any]) -> str:
    summary = _count(queue["length"], "message")
    if queue.get("oldest_age") is not None:
        summary += f", oldest {_duration(queue['oldest_age'])}"
    return summary


def _flow_summary(flow: dict[str, Any]) -> str:
    state = {"flowing": "flowing",
             "delaying": f"delaying each MAIL {flow['in_flow_delay']:g} s (queue growing)",
             "refusing": "REFUSING new mail (451 4.3.1)"}[flow["state"]]
    return (f"{state} for {_duration(flow['since'])}; limits "
            f"{_count(flow['max_messages'], 'message')}, {_size(flow['max_bytes'])}, "
            f"{_size(flow['bytes'] or 0)} queued")


def _storage_note(process: dict[str, Any]) -> str:
    backoff = process.get("storage_backoff")
    return f"  storage error: paused {backoff:g} s" if backoff else ""


def _size(octets: float) -> str:
    if octets < 1024:
        return f"{int(octets)} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        octets /= 1024
        if octets < 1024:
            break
    return f"{octets:.1f} {unit}"


def _service_header(name: str, service: dict[str, Any]) -> str:
    # A reuse_port service has one socket per worker on each address: each address once.
    listen = ", ".join(dict.fromkeys(entry["address"] for entry in service["listen"])) or "not listening"
    counts = "connections unknown (rate-keeper did not answer)"
    if service.get("connections") is not None:
        counts = f"{_count(service['connections'], 'connection')} from {_count(service['ips'], 'IP')}"
        refused = sum((service.get("refused") or {}).values())
        if refused:
            counts += f", {refused} refused"
    return f"{name:<12} {listen}  {counts}"


def _process_row(process: dict[str, Any]) -> str:
    note = "  (retiring)" if process.get("retiring") else ""
    return (f"  slot {process['slot']:<3} pid {process['pid']:<8} up {_duration(process['uptime']):>8}"
            f"  generation {process['generation']}{note}")


def _count(n: int | None, noun: str) -> str:
    if n is None:
        return f"? {noun}s"
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
