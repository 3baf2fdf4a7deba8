"""LIST, LSUB and XLIST (RFC 3501 6.3.8-9), with LIST-EXTENDED's selection and return options
(RFC 5258), LIST-STATUS (RFC 5819) and SPECIAL-USE's options (RFC 6154 5.1).

    LIST [(selection options)] reference (pattern | (pattern ...)) [RETURN (return options)]

Each handler runs in the thread pool, adds the untagged responses and returns the completion.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from ...store.api import INBOX, NONEXISTENT, NOSELECT, SEPARATOR, FolderInfo, Mailbox
from ...store.names import parents
from . import wire
from .command_session import CommandSession
from .folders import parse_status_items, status_response
from .responses import Bad, Tagged, astring, ok

# RFC 6154 attributes, and the names the older XLIST (Gmail's) gave some of them.
XLIST_NAMES = {"\\Junk": "\\Spam", "\\Archive": "\\AllMail"}
SPECIAL_USES = frozenset(("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent",
                          "\\Trash"))
SELECTION_OPTIONS = frozenset(("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"))
RETURN_OPTIONS = frozenset(("SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE"))
SUBSCRIBED = "\\Subscribed"
LIST_SYNTAX = "LIST [(options)] reference mailbox | (mailbox ...) [RETURN (options)]"
# LIST replies remembered by the worker (folder lists and requests; see _list_existing),
# forgotten all at once past this many; a reply longer than RENDERED_MAX_OCTETS is not kept.
RENDERED_MEMORY = 128
RENDERED_MAX_OCTETS = 64 * 1024
_rendered: dict[tuple, bytes] = {}


@dataclass
class ListRequest:
    """A LIST command's arguments, names in their wire form: modified UTF-7, or UTF-8 once the
    session enabled UTF8=ACCEPT or IMAP4rev2 (`utf8`)."""

    reference: str
    patterns: list[str]
    selection: set[str] = field(default_factory=set)
    returns: set[str] = field(default_factory=set)
    status_items: list[str] = field(default_factory=list)
    utf8: bool = False
    # IMAP4rev2 (RFC 9051 7.3.1): a level that is no folder is \NonExistent, not \Noselect.
    rev2: bool = False

    def matches(self, name: str) -> bool:
        return any(_matcher(self.reference + p).fullmatch(name) for p in self.patterns)


def list_command(session: CommandSession, tag: str, args: list) -> Tagged:
    request = parse_list(args, session.sync.utf8_names)
    request.rev2 = session.sync.rev2
    if request.patterns == [""]:
        _separator(session, "LIST", request.reference)
    elif "SUBSCRIBED" in request.selection:
        _list_subscribed(session, request)
    else:
        _list_existing(session, request)
    return ok("LIST completed")


def xlist(session: CommandSession, tag: str, args: list) -> Tagged:
    request = _plain_request(session, args, "XLIST")
    if request.patterns == [""]:
        _separator(session, "XLIST", request.reference)
        return ok("XLIST completed")
    folders = _by_wire_name(_mailbox(session).folders(), request.utf8)
    for name, attributes in _matching(folders, request):
        attributes = [XLIST_NAMES.get(a, a) for a in attributes]
        if name == INBOX:
            attributes.append("\\Inbox")
        _send(session, "XLIST", name, attributes, request.utf8)
    return ok("XLIST completed")


def lsub(session: CommandSession, tag: str, args: list) -> Tagged:
    request = _plain_request(session, args, "LSUB")
    if request.patterns == [""]:
        _separator(session, "LSUB", request.reference)
        return ok("LSUB completed")
    mailbox = _mailbox(session)
    subscribed = set(mailbox.subscriptions())
    listed = _by_wire_name([f for f in mailbox.folders() if f.name in subscribed], request.utf8)
    for name, attributes in _matching(listed, request):
        # LSUB tells only \Noselect (RFC 3501 7.2.3); the rest is LIST's business.
        _send(session, "LSUB", name, [a for a in attributes if a == NOSELECT], request.utf8)
    return ok("LSUB completed")


# --- parsing -----------------------------------------------------------------------------------

def parse_list(args: list, utf8: bool = False) -> ListRequest:
    args = list(args)
    selection = []
    if args and isinstance(args[0], list):
        selection = _options(args.pop(0), SELECTION_OPTIONS)
    if len(args) == 4 and isinstance(args[2], str) and args[2].upper() == "RETURN":
        returns = args.pop()
        args.pop()
        if not isinstance(returns, list):
            raise Bad(f"Syntax: {LIST_SYNTAX}")
    else:
        returns = []
    if len(args) != 2:
        raise Bad(f"Syntax: {LIST_SYNTAX}")
    patterns = args[1] if isinstance(args[1], list) else [args[1]]
    if not patterns:
        raise Bad("At least one mailbox pattern is needed")
    request = ListRequest(_wire_name(args[0], utf8), [_wire_name(p, utf8) for p in patterns],
                          set(selection), utf8=utf8)
    _parse_returns(request, returns)
    # RFC 5258 3.1: RECURSIVEMATCH qualifies another option; REMOTE alone is no such option.
    if "RECURSIVEMATCH" in request.selection and not request.selection - {"RECURSIVEMATCH",
                                                                          "REMOTE"}:
        raise Bad("RECURSIVEMATCH needs another selection option")
    if "SUBSCRIBED" in request.selection:
        request.returns.add("SUBSCRIBED")  # RFC 5258 3.1
    return request


def _parse_returns(request: ListRequest, returns: list) -> None:
    items = list(returns)
    while items:
        option = _option(items.pop(0), RETURN_OPTIONS)
        if option == "STATUS":
            if not items or not isinstance(items[0], list):
                raise Bad("Syntax: RETURN (STATUS (item ...))")
            request.status_items = parse_status_items(items.pop(0))
        request.returns.add(option)


def _options(items: list, known: frozenset[str]) -> list[str]:
    return [_option(item, known) for item in items]


def _option(item: object, known: frozenset[str]) -> str:
    if not isinstance(item, str) or item.upper() not in known:
        raise Bad(f"Unknown LIST option (known: {' '.join(sorted(known))})")
    return item.upper()


def _plain_request(session: CommandSession, args: list, verb: str) -> ListRequest:
    """LSUB and XLIST keep RFC 3501's two arguments."""
    if len(args) != 2 or isinstance(args[1], list):
        raise Bad(f"Syntax: {verb} reference mailbox")
    utf8 = session.sync.utf8_names
    return ListRequest(_wire_name(args[0], utf8), [_wire_name(args[1], utf8)], utf8=utf8)


def _wire_name(arg: object, utf8: bool) -> str:
    try:
        return astring(arg).decode("utf-8" if utf8 else "ascii")
    except UnicodeDecodeError:
        if utf8:
            raise Bad("Mailbox names are UTF-8") from None
        raise Bad("Mailbox names are 7-bit (modified UTF-7)") from None


# --- answering ---------------------------------------------------------------------------------

def _separator(session: CommandSession, verb: str, reference: str) -> None:
    """RFC 3501 6.3.8: the hierarchy separator and the root of the reference."""
    root = reference.split(SEPARATOR)[0] + SEPARATOR if SEPARATOR in reference else ""
    session.untagged(b'* %s (\\Noselect) "/" %s\r\n' % (verb.encode(), wire.astring(root)))


def _list_existing(session: CommandSession, request: ListRequest) -> None:
    mailbox = _mailbox(session)
    subscribed = (frozenset(_wire_subscriptions(mailbox, request.utf8))
                  if "SUBSCRIBED" in request.returns else frozenset())
    folders = tuple(mailbox.folders())
    if "STATUS" in request.returns:
        for name, attributes in _listed(folders, subscribed, request):
            _send(session, "LIST", name, attributes, request.utf8)
            _status(session, request, name, attributes)
        return
    # Clients send the same LIST over and over while their folders stay as they are: the
    # lines are rendered once per folder list and request (rendering was most of a LIST).
    key = (folders, subscribed, request.reference, tuple(request.patterns),
           frozenset(request.selection), frozenset(request.returns), request.utf8, request.rev2)
    lines = _rendered.get(key)
    if lines is None:
        lines = b"".join(list_line("LIST", name, attributes, request.utf8)
                         for name, attributes in _listed(folders, subscribed, request))
        if len(_rendered) >= RENDERED_MEMORY:
            _rendered.clear()
        if len(lines) <= RENDERED_MAX_OCTETS:
            _rendered[key] = lines
    if lines:
        session.untagged(lines)


def _listed(folders: tuple[FolderInfo, ...], subscribed: frozenset[str],
            request: ListRequest) -> list[tuple[str, list[str]]]:
    """The folders a LIST (not LSUB, not RETURN SUBSCRIBED's selection) answers with, in
    order, each with its attributes."""
    listed = []
    for name, attributes in _matching(_by_wire_name(folders, request.utf8), request):
        if "SPECIAL-USE" in request.selection and not SPECIAL_USES.intersection(attributes):
            continue
        if name in subscribed:
            attributes.append(SUBSCRIBED)
        listed.append((name, attributes))
    return listed


def _list_subscribed(session: CommandSession, request: ListRequest) -> None:
    """RFC 5258 3.1: subscribed names whether they exist or not (\\NonExistent); with
    RECURSIVEMATCH, also the matching parents of subscribed names that do not match
    themselves, marked with CHILDINFO."""
    mailbox = _mailbox(session)
    existing = _by_wire_name(mailbox.folders(), request.utf8)
    subscribed = _wire_subscriptions(mailbox, request.utf8)
    childinfo: set[str] = set()
    if "RECURSIVEMATCH" in request.selection:
        for name in subscribed:
            if not request.matches(name):
                childinfo.update(p for p in parents(name) if request.matches(p))
    for name in sorted(subscribed | childinfo, key=lambda n: (n != INBOX, n)):
        if name not in childinfo and not request.matches(name):
            continue
        info = existing.get(name)
        attributes = _attributes(info, request) if info is not None else [NONEXISTENT]
        if "SPECIAL-USE" in request.selection and not SPECIAL_USES.intersection(attributes):
            continue
        if name in subscribed:
            attributes.append(SUBSCRIBED)
        extended = b' ("CHILDINFO" ("SUBSCRIBED"))' if name in childinfo else b""
        _send(session, "LIST", name, attributes, request.utf8, extended)
        _status(session, request, name, attributes)


def _status(session: CommandSession, request: ListRequest, name: str,
            attributes: list[str]) -> None:
    """LIST-STATUS (RFC 5819): a STATUS after each selectable folder's LIST."""
    if "STATUS" not in request.returns or NOSELECT in attributes or NONEXISTENT in attributes:
        return
    status_response(session, wire.decode_name(name.encode(), request.utf8), request.status_items)


def _send(session: CommandSession, verb: str, name: str, attributes: list[str], utf8: bool,
          extended: bytes = b"") -> None:
    session.untagged(list_line(verb, name, attributes, utf8, extended))


def list_line(verb: str, wire_name: str, attributes: list[str], utf8: bool,
              extended: bytes = b"") -> bytes:
    """`* LIST (attributes) "/" name` (or LSUB, XLIST), the name already in the session's
    encoding (modified UTF-7, or UTF-8 once enabled)."""
    return b'* %s %s "/" %s%s\r\n' % (verb.encode(), wire.flag_list(attributes),
                                       wire.astring(wire_name, utf8), extended)


def _mailbox(session: CommandSession) -> Mailbox:
    assert session.mailbox is not None
    return session.mailbox


def _by_wire_name(folders: Sequence[FolderInfo], utf8: bool) -> dict[str, FolderInfo]:
    return {wire.encode_name(f.name, utf8): f for f in folders}


def _wire_subscriptions(mailbox: Mailbox, utf8: bool) -> set[str]:
    return {wire.encode_name(name, utf8) for name in mailbox.subscriptions()}


def _matching(listed: dict[str, FolderInfo], request: ListRequest) -> list[tuple[str, list[str]]]:
    """The folders whose wire name matches, in order; and where "%" stops at a level that is
    no folder of its own (a parent only implied by a child), that level as \\Noselect
    (\\NonExistent, which implies it, for an IMAP4rev2 session)."""
    found: dict[str, list[str]] = {}
    implied = ["\\HasChildren", NONEXISTENT if request.rev2 else NOSELECT]
    for name, info in listed.items():
        if request.matches(name):
            found[name] = _attributes(info, request)
        for parent in parents(name):
            if parent not in listed and parent not in found and request.matches(parent):
                found[parent] = list(implied)
    return list(found.items())


def _attributes(info: FolderInfo, request: ListRequest) -> list[str]:
    """A folder's attributes as the session's protocol has them: a level that only holds
    other folders is \\Noselect to IMAP4rev1 (RFC 3501 7.2.2), \\NonExistent (which implies
    \\Noselect) to IMAP4rev2 (RFC 9051 7.3.1)."""
    if NONEXISTENT not in info.attributes:
        return sorted(info.attributes)
    hidden = NOSELECT if request.rev2 else NONEXISTENT
    return sorted(info.attributes - {hidden})


@lru_cache(maxsize=256)
def _matcher(pattern: str) -> re.Pattern[str]:
    """RFC 3501 6.3.8: "*" matches anything, "%" anything but the separator; an INBOX
    prefix is matched in any case."""
    if pattern.upper().startswith(INBOX):
        pattern = INBOX + pattern[len(INBOX):]
    parts = (re.escape(c) if c not in "*%" else (".*" if c == "*" else "[^/]*") for c in pattern)
    return re.compile("".join(parts), re.DOTALL)
