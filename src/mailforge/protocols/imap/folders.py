"""IMAP commands on folders as a whole (RFC 3501 6.3, RFC 2342 NAMESPACE, RFC 6154
SPECIAL-USE's CREATE, RFC 9208 QUOTA, RFC 4315 APPENDUID, RFC 3502 MULTIAPPEND, RFC 4469
CATENATE, RFC 3516 literal8, RFC 7162 CONDSTORE and QRESYNC at SELECT and STATUS).

Each handler takes the session, the command's tag and its parsed arguments, adds untagged
responses to the session and returns the completion; it runs in the thread pool.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ...speedups import Literal
from ...store.api import (INBOX, PUBLIC_PREFIX, SEPARATOR, SHARED_PREFIX, FolderStatus, Mailbox,
                          NewMessage)
from ...store.steps import Steps
from . import catenate, condstore, wire
from .binary_parts import without_binary_parts
from .command_session import CommandSession
from .responses import Bad, Tagged, astring, atom, count, flag_list, folder_name, no, ok
from .selected import Selected

APPEND_SYNTAX = "APPEND mailbox [(flags)] [date-time] (literal / CATENATE (...)) ..."
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ",
                "DELETED")
# RFC 9208 5.1: STORAGE is counted in units of 1024 octets.
KIB = 1024
QUOTA_ROOT = ""


def _mailbox(session: CommandSession) -> Mailbox:
    assert session.mailbox is not None
    return session.mailbox


# --- SELECT, EXAMINE ---------------------------------------------------------------------------

def select(session: CommandSession, tag: str, args: list) -> Tagged:
    return _open(session, args, read_only=False)


def examine(session: CommandSession, tag: str, args: list) -> Tagged:
    return _open(session, args, read_only=True)


def _open(session: CommandSession, args: list, read_only: bool) -> Tagged:
    count(args, 1, 2, syntax="SELECT mailbox [(CONDSTORE | QRESYNC (...))]")
    name = folder_name(args[0], session.sync.utf8_names)
    # Checked before the old folder is closed: a BAD command is not carried out, so its
    # folder stays selected (as Dovecot does).
    resync = condstore.select_parameters(args[1], session.sync) if len(args) == 2 else None
    # RFC 3501 6.3.1: a failed SELECT leaves no folder selected. RFC 7162 3.2.11 (a server
    # that offers QRESYNC, enabled or not, as Dovecot reads it) and RFC 9051 7.1 have the
    # client told so, which also marks where the old folder's untagged responses end.
    if session.selected is not None:
        session.untagged(b"* OK [CLOSED] Previous mailbox closed\r\n")
    session.select_folder(None)
    mailbox = _mailbox(session)
    selected = Selected(mailbox.select(name, read_only), mailbox.rights(name), session.sync)
    session.select_folder(selected)
    view = selected.messages()
    selected.note_keywords(view)
    for line in selected.flags_lines() + selected.counts():
        session.untagged(line)
    # IMAP4rev2 has no UNSEEN code (RFC 9051 E.7): a SEARCH finds the first unseen message.
    unseen = next((seq for seq, info in enumerate(view, 1) if "\\Seen" not in info.flags), 0)
    if unseen and not session.sync.rev2:
        session.untagged(b"* OK [UNSEEN %d] First unseen message\r\n" % unseen)
    folder = selected.folder
    session.untagged(b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % folder.uidvalidity)
    session.untagged(b"* OK [UIDNEXT %d] Predicted next UID\r\n" % folder.uidnext)
    # Always: our folders keep MODSEQs, so NOMODSEQ never applies (RFC 7162 3.1.2.1).
    session.untagged(condstore.highestmodseq_line(folder.highestmodseq))
    if resync is not None:
        condstore.resync(session, selected, resync)
    if session.sync.rev2:  # RFC 9051 6.3.2: the folder's name as the server spells it
        session.untagged(b'* LIST () "/" %s\r\n' % wire.mailbox_name(folder.name, True))
    mode = "READ-ONLY" if selected.read_only else "READ-WRITE"
    return ok(f"{'EXAMINE' if read_only else 'SELECT'} completed", mode)


# --- CREATE, DELETE, RENAME, SUBSCRIBE ---------------------------------------------------------

def create(session: CommandSession, tag: str, args: list) -> Tagged:
    """CREATE mailbox [(USE (attribute ...))] (RFC 4466 create parameters, RFC 6154 USE)."""
    count(args, 1, 2, syntax="CREATE mailbox [(USE (attribute ...))]")
    name = folder_name(args[0], session.sync.utf8_names).rstrip(SEPARATOR)
    special_use = _create_use(args[1]) if len(args) == 2 else None
    if name == INBOX:
        return no("INBOX always exists", "ALREADYEXISTS")
    _mailbox(session).create(name, special_use)
    return ok("CREATE completed")


def _create_use(arg: object) -> list[str]:
    """The attributes of a (USE (...)) parameter list, the only create parameter known."""
    if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str)
            and arg[0].upper() == "USE" and isinstance(arg[1], list)):
        raise Bad("Syntax: CREATE mailbox [(USE (attribute ...))]")
    return [atom(use) for use in arg[1]]


def delete(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 1, syntax="DELETE mailbox")
    name = folder_name(args[0], session.sync.utf8_names)
    if name == INBOX:
        return no("INBOX cannot be deleted", "CANNOT")
    if session.selected is not None and session.selected.folder.name == name:
        session.select_folder(None)
    _mailbox(session).delete(name)
    return ok("DELETE completed")


def rename(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 2, syntax="RENAME mailbox new-name")
    utf8 = session.sync.utf8_names
    old, new = folder_name(args[0], utf8), folder_name(args[1], utf8).rstrip(SEPARATOR)
    _mailbox(session).rename(old, new)
    return ok("RENAME completed")


def subscribe(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 1, syntax="SUBSCRIBE mailbox")
    _mailbox(session).subscribe(folder_name(args[0], session.sync.utf8_names), True)
    return ok("SUBSCRIBE completed")


def unsubscribe(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 1, syntax="UNSUBSCRIBE mailbox")
    _mailbox(session).subscribe(folder_name(args[0], session.sync.utf8_names), False)
    return ok("UNSUBSCRIBE completed")


# --- STATUS, APPEND ----------------------------------------------------------------------------

def status(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 2, syntax="STATUS mailbox (items)")
    name = folder_name(args[0], session.sync.utf8_names)
    status_response(session, name, parse_status_items(args[1]))
    return ok("STATUS completed")


def parse_status_items(arg: object) -> list[str]:
    items = arg if isinstance(arg, list) else [arg]
    wanted = [atom(item).upper() for item in items]
    if not wanted or any(item not in STATUS_ITEMS for item in wanted):
        raise Bad(f"STATUS items are {' '.join(STATUS_ITEMS)}")
    return wanted


def status_response(session: CommandSession, name: str, wanted: list[str]) -> None:
    """The untagged STATUS of a folder (STATUS, and LIST's RETURN (STATUS ...))."""
    current = _mailbox(session).status(name)
    if "HIGHESTMODSEQ" in wanted:
        condstore.start_condstore(session)
    session.untagged(status_line(name, current, wanted, session.sync.utf8_names))


def status_line(name: str, current: FolderStatus, wanted: Iterable[str], utf8: bool) -> bytes:
    """`* STATUS name (item value ...)` with the `wanted` items, in that order; the name in
    UTF-8 when the session enabled it."""
    values = {"MESSAGES": current.messages, "RECENT": current.recent, "UIDNEXT": current.uidnext,
              "UIDVALIDITY": current.uidvalidity, "UNSEEN": current.unseen, "SIZE": current.size,
              "HIGHESTMODSEQ": current.highestmodseq, "DELETED": current.deleted}
    listing = " ".join(f"{item} {values[item]}" for item in wanted)
    return b"* STATUS %s (%s)\r\n" % (wire.mailbox_name(name, utf8), listing.encode())


@dataclass(frozen=True)
class _AppendRequest:
    """One message of an APPEND as the client gave it: a literal, or CATENATE's pieces."""

    pieces: list[catenate.Piece]
    flags: frozenset[str]
    date: float | None


def append(session: CommandSession, tag: str, args: list) -> Steps[Tagged]:
    """APPEND mailbox 1*([(flags)] [date-time] literal) (RFC 3501 6.3.11, RFC 3502
    MULTIAPPEND: every message is stored, or none; RFC 4469 CATENATE for a message). A change
    whose syncs the machine runs (store/steps.py)."""
    if len(args) < 2:
        raise Bad(f"Syntax: {APPEND_SYNTAX}")
    name = folder_name(args[0], session.sync.utf8_names)
    requests = _append_requests(args[1:], session.sync.utf8)
    mailbox = _mailbox(session)
    if any(isinstance(piece, str) for request in requests for piece in request.pieces):
        mailbox.status(name)  # RFC 4469 5: a missing target is TRYCREATE, whatever the URLs
    try:
        messages = [NewMessage(without_binary_parts(
            catenate.join(mailbox, request.pieces, session.settings.max_append)),
            request.flags, request.date) for request in requests]
    except catenate.BadUrl as exc:
        return no("The URL names no message", f"BADURL {exc.url.replace(']', '%5D')}")
    except catenate.TooBig:
        return no("The message would be too big", "TOOBIG")
    if not all(message.data for message in messages):
        return no("Cannot append an empty message", "CANNOT")
    selected = session.selected.folder if session.selected is not None else None
    appended = yield from mailbox.append_steps(name, messages, selected)
    uids = ",".join(str(uid) for uid in appended.uids)
    return ok("APPEND completed", f"APPENDUID {appended.uidvalidity} {uids}" if uids else "")


def _append_requests(items: list, utf8: bool) -> list[_AppendRequest]:
    requests = []
    items = list(items)
    while items:
        flags = flag_list(items.pop(0)) if isinstance(items[0], list) else []
        # RFC 3501 9: a date-time is a quoted string, the message a literal.
        has_date = items and isinstance(items[0], bytes) and not isinstance(items[0], Literal)
        date = _date_time(items.pop(0)) if has_date else None
        requests.append(_AppendRequest(_message_pieces(items, utf8), frozenset(flags), date))
    return requests


def _message_pieces(items: list, utf8: bool) -> list[catenate.Piece]:
    """Takes one message's data off `items`: a literal, UTF8 (literal) (RFC 6855 4: a message
    whose header may hold UTF-8, only once UTF8=ACCEPT is enabled), or CATENATE and its list."""
    if items and isinstance(items[0], Literal):
        return [items.pop(0)]
    if (len(items) >= 2 and isinstance(items[0], str) and items[0].upper() == "UTF8"
            and isinstance(items[1], list)):
        if not utf8:
            raise Bad("APPEND ... UTF8 (...) needs ENABLE UTF8=ACCEPT first")
        del items[0]
        data = items.pop(0)
        if len(data) != 1 or not isinstance(data[0], Literal):
            raise Bad("Syntax: APPEND mailbox [(flags)] [date-time] UTF8 (literal8)")
        return data
    if (len(items) >= 2 and isinstance(items[0], str) and items[0].upper() == "CATENATE"
            and isinstance(items[1], list)):
        del items[0]
        return catenate.pieces(items.pop(0))
    raise Bad(f"Syntax: {APPEND_SYNTAX}")


def _date_time(arg: object) -> float:
    try:
        return wire.parse_date_time(astring(arg))
    except ValueError:
        raise Bad("Invalid date-time") from None


# --- NAMESPACE, QUOTA --------------------------------------------------------------------------

def namespace(session: CommandSession, tag: str, args: list) -> Tagged:
    """RFC 2342: personal folders at the root, other users' shared ones under #shared/, the
    domain's public folders under #public/."""
    count(args, 0, syntax="NAMESPACE")
    session.untagged(b'* NAMESPACE (("" "/")) ((%s "/")) ((%s "/"))\r\n'
                     % (wire.string(SHARED_PREFIX), wire.string(PUBLIC_PREFIX)))
    return ok("NAMESPACE completed")


def getquotaroot(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 1, syntax="GETQUOTAROOT mailbox")
    name = folder_name(args[0], session.sync.utf8_names)
    _mailbox(session).status(name)  # NO [NONEXISTENT] for a folder that is not there
    session.untagged(b"* QUOTAROOT %s %s\r\n" % (wire.mailbox_name(name, session.sync.utf8_names),
                                                  wire.astring(QUOTA_ROOT)))
    _quota_response(session)
    return ok("GETQUOTAROOT completed")


def getquota(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 1, syntax="GETQUOTA root")
    if astring(args[0]) != QUOTA_ROOT.encode():
        return no("No such quota root", "NONEXISTENT")
    _quota_response(session)
    return ok("GETQUOTA completed")


def setquota(session: CommandSession, tag: str, args: list) -> Tagged:
    return no("Quotas are set by the administrator", "NOPERM")


def _quota_response(session: CommandSession) -> None:
    """One mailbox-wide root; only the resources that have a limit are listed (RFC 9208 5.1)."""
    quota = _mailbox(session).quota()
    resources = []
    if quota.limit_bytes is not None:
        used = (quota.used_bytes + KIB - 1) // KIB
        resources.append(f"STORAGE {used} {quota.limit_bytes // KIB}")
    if quota.limit_messages is not None:
        resources.append(f"MESSAGE {quota.used_messages} {quota.limit_messages}")
    session.untagged(b"* QUOTA %s (%s)\r\n" % (wire.astring(QUOTA_ROOT),
                                               " ".join(resources).encode()))

