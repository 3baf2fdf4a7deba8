"""`mailforge queue list|show|flush|retry|delete|badmail`: look at and steer the mail queue."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from ..config import Config
from ..errors import EXIT_OK
from ..queue.admin import DEFERRED, QueueAdmin, QueuedEntry

Handler = Callable[[argparse.Namespace, Config], int]
# `queue list` cuts long errors to keep one line per message; `queue show` has them whole.
ERROR_WIDTH = 80


def register(subparsers: argparse._SubParsersAction) -> None:
    queue = subparsers.add_parser("queue", help="the mail queue", description="the mail queue")
    actions = queue.add_subparsers(dest="action", metavar="ACTION", required=True)
    _leaf(actions, "list", _list, "queued messages: id, age, sender, recipients, next try, "
          "last error").add_argument("--json", action="store_true", help="one JSON object")
    _leaf(actions, "show", _show, "one message: envelope, errors and headers").add_argument("id")
    _leaf(actions, "flush", _flush, "make every deferred message due now")
    _leaf(actions, "retry", _retry, "make one deferred message due now").add_argument("id")
    _leaf(actions, "delete", _delete, "remove a message from the queue, unsent").add_argument("id")
    badmail = actions.add_parser("badmail", help="messages that could be neither delivered nor bounced")
    badmail_actions = badmail.add_subparsers(dest="badmail_action", metavar="ACTION", required=True)
    _leaf(badmail_actions, "list", _badmail_list, "list badmail/")
    _leaf(badmail_actions, "requeue", _badmail_requeue,
          "queue a badmail message again for its recipient").add_argument("id")


def _leaf(actions: argparse._SubParsersAction, name: str, handler: Handler,
          help: str) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help, description=help)
    parser.set_defaults(handler=handler)
    return parser


def _admin(config: Config) -> QueueAdmin:
    return QueueAdmin(config.queue_dir, config.badmail_dir)


def _list(args: argparse.Namespace, config: Config) -> int:
    entries = _admin(config).entries()
    now = time.time()
    if args.json:
        print(json.dumps([_as_json(e, now) for e in entries], indent=1))
        return EXIT_OK
    if not entries:
        print("queue is empty")
        return EXIT_OK
    rows = [("ID", "AGE", "SENDER", "RECIPIENTS", "NEXT TRY", "LAST ERROR")]
    rows += [(e.envelope.id, duration(now - e.envelope.received_at), f"<{e.envelope.sender}>",
              ",".join(e.envelope.recipients), next_try(e, now),
              _cut(last_error(e))) for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5])
    print(f"{len(entries)} message{'s' if len(entries) != 1 else ''} queued")
    return EXIT_OK


def _show(args: argparse.Namespace, config: Config) -> int:
    admin = _admin(config)
    entry = admin.find(args.id)
    env, now = entry.envelope, time.time()
    print(f"id: {env.id}\nstate: {entry.state}\nsender: <{env.sender}>")
    print(f"received: {_when(env.received_at)} ({duration(now - env.received_at)} ago) "
          f"from {env.helo or '-'} [{env.client_ip or 'local'}]")
    print(f"size: {env.size}\nattempts: {env.attempts}\nnext try: {next_try(entry, now)}")
    if env.envid or env.ret:
        print(f"dsn: envid={env.envid or '-'} ret={env.ret or 'default'}")
    for rcpt in env.recipients:
        extras = [f"notify={env.notify[rcpt]}"] if rcpt in env.notify else []
        extras += [f"orcpt={env.orcpt[rcpt]}"] if rcpt in env.orcpt else []
        print(f"recipient: <{rcpt}>{' ' + ' '.join(extras) if extras else ''}")
        if rcpt in env.errors:
            print(f"  last error: {env.errors[rcpt]}")
    print("headers:")
    message = admin.message(entry)[env.prefix_size:]
    print(message.split(b"\n\n", 1)[0].decode("utf-8", "replace"))
    return EXIT_OK


def _flush(args: argparse.Namespace, config: Config) -> int:
    count = _admin(config).flush()
    print(f"mailforge: {count} deferred message{'s' if count != 1 else ''} due now")
    return EXIT_OK


def _retry(args: argparse.Namespace, config: Config) -> int:
    _admin(config).retry(args.id)
    print(f"mailforge: {args.id} due now")
    return EXIT_OK


def _delete(args: argparse.Namespace, config: Config) -> int:
    entry = _admin(config).delete(args.id)
    print(f"mailforge: deleted {args.id} from <{entry.envelope.sender}> to "
          f"{len(entry.envelope.recipients)} recipient(s), unsent")
    return EXIT_OK


def _badmail_list(args: argparse.Namespace, config: Config) -> int:
    items = _admin(config).badmail()
    if not items:
        print("badmail is empty")
        return EXIT_OK
    for item in items:
        print(f"{item.id}  <{item.sender}>  <{item.recipient}>  {item.reason}")
    print(f"{len(items)} message{'s' if len(items) != 1 else ''} in badmail")
    return EXIT_OK


def _badmail_requeue(args: argparse.Namespace, config: Config) -> int:
    queue_id = _admin(config).requeue(args.id)
    print(f"mailforge: {args.id} queued again as {queue_id}")
    return EXIT_OK


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def next_try(entry: QueuedEntry, now: float) -> str:
    if entry.state == DEFERRED:
        return f"in {duration(entry.envelope.next_attempt - now)}"
    return "now" if entry.state != "delivering" else "delivering"


def _as_json(entry: QueuedEntry, now: float) -> dict:
    env = entry.envelope
    return {"id": env.id, "state": entry.state, "age": now - env.received_at,
            "sender": env.sender, "recipients": env.recipients, "next_attempt": env.next_attempt,
            "attempts": env.attempts, "last_error": env.last_error, "errors": env.errors}


def last_error(entry: QueuedEntry) -> str:
    """The errors without the recipients they are about (the row names those already)."""
    env = entry.envelope
    return "; ".join(dict.fromkeys(env.errors.values())) if env.errors else env.last_error


def _cut(text: str) -> str:
    return text if len(text) <= ERROR_WIDTH else text[:ERROR_WIDTH - 1] + "…"


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(timestamp))
