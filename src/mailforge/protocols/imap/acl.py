"""Access control commands (RFC 4314: GETACL, SETACL, DELETEACL, LISTRIGHTS, MYRIGHTS).
Which flags a right lets a session set is the store's rule (store/acl.py `permitted_flags`).

The store keeps and enforces the lists (store/acl.py); handlers run in the thread pool.
"""

from __future__ import annotations

from ...store.acl import ALL_RIGHTS, render
from ...store.api import Mailbox
from . import wire
from .command_session import CommandSession
from .responses import Bad, Tagged, astring, count, folder_name, ok


def _mailbox(session: CommandSession) -> Mailbox:
    assert session.mailbox is not None
    return session.mailbox


def getacl(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 1, syntax="GETACL mailbox")
    name = folder_name(args[0], session.sync.utf8_names)
    entries = b"".join(b" %s %s" % (wire.astring(who), wire.astring(render(rights)))
                       for who, rights in sorted(_mailbox(session).acl(name).items()))
    session.untagged(b"* ACL %s%s\r\n" % (wire.mailbox_name(name, session.sync.utf8_names),
                                           entries))
    return ok("GETACL completed")


def setacl(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 3, syntax="SETACL mailbox identifier rights")
    try:
        name = folder_name(args[0], session.sync.utf8_names)
        _mailbox(session).set_acl(name, _text(args[1]), _text(args[2]))
    except ValueError as exc:
        raise Bad(str(exc)) from None
    return ok("SETACL completed")


def deleteacl(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 2, syntax="DELETEACL mailbox identifier")
    _mailbox(session).delete_acl(folder_name(args[0], session.sync.utf8_names), _text(args[1]))
    return ok("DELETEACL completed")


def listrights(session: CommandSession, tag: str, args: list) -> Tagged:
    """The rights always held, then each other right on its own (they are independent)."""
    count(args, 2, syntax="LISTRIGHTS mailbox identifier")
    name, who = folder_name(args[0], session.sync.utf8_names), _text(args[1])
    fixed = _mailbox(session).fixed_rights(name, who)
    optional = b"".join(b" " + letter.encode() for letter in ALL_RIGHTS if letter not in fixed)
    session.untagged(b"* LISTRIGHTS %s %s %s%s\r\n" % (
        wire.mailbox_name(name, session.sync.utf8_names), wire.astring(who),
        wire.astring(render(fixed)), optional))
    return ok("LISTRIGHTS completed")


def myrights(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 1, syntax="MYRIGHTS mailbox")
    name = folder_name(args[0], session.sync.utf8_names)
    rights = render(_mailbox(session).rights(name))
    session.untagged(b"* MYRIGHTS %s %s\r\n" % (wire.mailbox_name(name, session.sync.utf8_names),
                                                 wire.astring(rights)))
    return ok("MYRIGHTS completed")


def _text(arg: object) -> str:
    return astring(arg).decode("utf-8", "replace")
