"""CONDSTORE and QRESYNC (RFC 7162): which of them a session has on, the modifiers FETCH,
STORE and SELECT take, and QRESYNC's resynchronisation at SELECT.

The MODSEQs come from the store (MessageInfo.modseq, Folder.highestmodseq and
Folder.expunged_since); the untagged responses that change shape once these are on (FETCH
with MODSEQ, VANISHED instead of EXPUNGE) are built in selected.py from `SyncExtensions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...speedups import STAR, ParseError, parse_sequence_set
from .responses import Bad
from .results import sequence_set

if TYPE_CHECKING:
    from .command_session import CommandSession
    from .selected import Selected

CAPABILITIES = ("CONDSTORE", "QRESYNC")
# RFC 7162 7: mod-sequence-value is a 63-bit number.
MAX_MODSEQ = 2**63 - 1
MAX_UID = 0xFFFFFFFF
_QRESYNC_SYNTAX = ("Syntax: QRESYNC (uidvalidity modseq [known-uids] "
                   "[(known-sequence-set known-uid-set)])")


@dataclass
class SyncExtensions:
    """What a session has switched on, by ENABLE or (CONDSTORE) by a command that uses it;
    beside CONDSTORE and QRESYNC, the ones that change the protocol's forms (protocol.py)."""

    condstore: bool = False
    qresync: bool = False
    utf8: bool = False   # UTF8=ACCEPT (RFC 6855): UTF-8 mailbox names, APPEND's UTF8 item
    rev2: bool = False   # IMAP4rev2 (RFC 9051): no \Recent, ESEARCH for SEARCH, ...

    @property
    def utf8_names(self) -> bool:
        """Mailbox names go as UTF-8, not modified UTF-7 (RFC 6855 3, RFC 9051 5.1)."""
        return self.utf8 or self.rev2


@dataclass(frozen=True, slots=True)
class Resync:
    """SELECT's (QRESYNC (uidvalidity modseq [known-uids ...])) parameter."""

    uidvalidity: int
    modseq: int
    known_uids: str


def start_condstore(session: CommandSession) -> None:
    """A CONDSTORE enabling command (RFC 7162 3.1): the first one in a selected folder also
    tells the client the folder's HIGHESTMODSEQ, which it has not heard yet."""
    if session.sync.condstore:
        return
    session.sync.condstore = True
    if session.selected is not None:
        session.untagged(highestmodseq_line(session.selected.folder.highestmodseq))


def highestmodseq_line(modseq: int) -> bytes:
    return b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % modseq


def modseq_valzer(token: object) -> int:
    """A mod-sequence-valzer (RFC 7162 7), 0 too: what STORE's UNCHANGEDSINCE takes."""
    if not (isinstance(token, str) and token.isascii() and token.isdigit() and len(token) <= 19):
        raise Bad("Invalid mod-sequence value")
    value = int(token)
    if value > MAX_MODSEQ:
        raise Bad("Invalid mod-sequence value")
    return value


def modseq_value(token: object, what: str) -> int:
    """A mod-sequence-value (RFC 7162 7), 1 or more: what `what` (CHANGEDSINCE, QRESYNC)
    takes; no message has MODSEQ 0 to compare with."""
    value = modseq_valzer(token)
    if value == 0:
        raise Bad(f"Invalid mod-sequence value: {what}'s is 1 or more")
    return value


def take_modseq_item(items: object) -> tuple[object | None, bool]:
    """FETCH's items without MODSEQ, which the item parser does not know (None when MODSEQ
    was all there was), and whether it was asked for."""
    if isinstance(items, str):
        return (None, True) if items.upper() == "MODSEQ" else (items, False)
    if not isinstance(items, list):
        return items, False
    rest = [item for item in items if not (isinstance(item, str) and item.upper() == "MODSEQ")]
    return (rest or None), len(rest) != len(items)


def fetch_modifiers(arg: object, by_uid: bool, qresync: bool) -> tuple[int, bool]:
    """FETCH's (CHANGEDSINCE n [VANISHED]), in either order (RFC 4466 2.4): n, and whether
    VANISHED was asked for (RFC 7162 3.2.6: with CHANGEDSINCE, UID FETCH only, QRESYNC
    enabled)."""
    syntax = "Syntax: FETCH sequence-set items (CHANGEDSINCE modseq [VANISHED])"
    if not isinstance(arg, list) or not arg:
        raise Bad(syntax)
    changedsince: int | None = None
    vanished = False
    words = iter(arg)
    for word in words:
        name = word.upper() if isinstance(word, str) else ""
        if name == "CHANGEDSINCE" and changedsince is None:
            changedsince = modseq_value(next(words, None), "CHANGEDSINCE")
        elif name == "VANISHED" and not vanished:
            vanished = True
        elif name in ("CHANGEDSINCE", "VANISHED"):
            raise Bad(f"FETCH modifier {name} given twice")
        else:
            raise Bad("Unknown FETCH modifier")
    if changedsince is None:
        raise Bad(syntax)
    if vanished and not (by_uid and qresync):
        raise Bad("VANISHED needs UID FETCH and QRESYNC enabled")
    return changedsince, vanished


def store_modifier(arg: list) -> int:
    """STORE's (UNCHANGEDSINCE n): n."""
    if not (len(arg) == 2 and isinstance(arg[0], str) and arg[0].upper() == "UNCHANGEDSINCE"):
        raise Bad("Syntax: STORE sequence-set (UNCHANGEDSINCE modseq) item flags")
    return modseq_valzer(arg[1])


def select_parameters(arg: object, sync: SyncExtensions) -> Resync | None:
    """SELECT's (CONDSTORE) or (QRESYNC (...)) list; the latter's values when given. Each
    parameter once: a second would silently replace the first. A BAD list enables nothing."""
    if not isinstance(arg, list) or not arg:
        raise Bad("Syntax: SELECT mailbox [(CONDSTORE | QRESYNC (...))]")
    given: dict[str, Resync | None] = {}
    pairs = iter(arg)
    for name in pairs:
        word = name.upper() if isinstance(name, str) else ""
        if word in given:
            raise Bad(f"SELECT parameter {word} given twice")
        if word == "CONDSTORE":
            given[word] = None
        elif word == "QRESYNC":
            if not sync.qresync:
                raise Bad("QRESYNC is not enabled")
            given[word] = _resync(next(pairs, None))
        else:
            raise Bad("Unknown SELECT parameter")
    sync.condstore |= "CONDSTORE" in given
    return given.get("QRESYNC")


def _resync(arg: object) -> Resync:
    """(uidvalidity mod-sequence-value [known-uids] [seq-match-data]) (RFC 7162 7)."""
    if not (isinstance(arg, list) and 2 <= len(arg) <= 4):
        raise Bad(_QRESYNC_SYNTAX)
    uidvalidity, modseq = _uidvalidity(arg[0]), modseq_value(arg[1], "QRESYNC")
    rest = arg[2:]
    known_uids = "1:*"  # none named: every UID
    if rest and isinstance(rest[0], str):
        known_uids = rest.pop(0)
        _known_set(known_uids, "known-uids")
    if rest and isinstance(rest[0], list):
        _sequence_match(rest.pop(0))
    if rest:
        raise Bad(_QRESYNC_SYNTAX)
    return Resync(uidvalidity, modseq, known_uids)


def _uidvalidity(token: object) -> int:
    """An nz-number (RFC 3501 9), and UIDVALIDITY is 32-bit."""
    if not (isinstance(token, str) and token.isascii() and token.isdigit()
            and token[0] != "0" and len(token) <= 10 and int(token) <= MAX_UID):
        raise Bad(f"Invalid QRESYNC UIDVALIDITY: 1 to {MAX_UID}")
    return int(token)


def _known_set(text: object, what: str) -> int:
    """A QRESYNC sequence-set, in which `*` is not allowed (RFC 7162 7); how many numbers
    it names."""
    try:
        ranges = parse_sequence_set(text) if isinstance(text, str) else None
    except ParseError:
        ranges = None
    if ranges is None:
        raise Bad(f"Invalid QRESYNC {what}")
    if any(STAR in pair for pair in ranges):
        raise Bad(f"Invalid QRESYNC {what}: * is not allowed")
    return sum(abs(last - first) + 1 for first, last in ranges)


def _sequence_match(arg: list) -> None:
    """(known-sequence-set known-uid-set), checked and left unused: it only narrows what the
    server must report (RFC 7162 3.2.5.2), and the expunge memory answers exactly without it.
    Its sets pair message numbers with UIDs one to one, so they name as many numbers (Dovecot
    checks the same)."""
    if len(arg) != 2:
        raise Bad("Invalid QRESYNC sequence match data: (known-sequence-set known-uid-set)")
    if _known_set(arg[0], "known-sequence-set") != _known_set(arg[1], "known-uid-set"):
        raise Bad("Invalid QRESYNC sequence match data: the sets differ in size")


def resync(session: CommandSession, selected: Selected, wanted: Resync) -> None:
    """QRESYNC at SELECT (RFC 7162 3.2.5): the known UIDs expunged since the client's MODSEQ
    as VANISHED (EARLIER), then FETCH FLAGS MODSEQ for those changed since."""
    folder = selected.folder
    if wanted.uidvalidity != folder.uidvalidity:
        return  # the client's cache is void: it starts over
    ranges = uid_ranges(wanted.known_uids)
    for line in vanished_earlier(selected, wanted.modseq, ranges):
        session.untagged(line)
    for seq, info in enumerate(folder.messages(), 1):
        if info.modseq > wanted.modseq and in_ranges(ranges, info.uid):
            session.untagged(selected.flags_response(seq, info, with_uid=True))


def vanished_earlier(selected: Selected, modseq: int, ranges: list[tuple[int, int]]
                     ) -> list[bytes]:
    """`* VANISHED (EARLIER) uids` for the UIDs in `ranges` expunged after `modseq`. When the
    folder forgot expunges that old, every UID in the ranges it does not hold now is named,
    which RFC 7162 3.2.5.2 allows (the client drops what it does not have)."""
    folder = selected.folder
    expunged = folder.expunged_since(modseq)
    if expunged is None:
        present = {info.uid for info in folder.messages()}
        highest = folder.uidnext - 1
        expunged = [uid for first, last in ranges
                    for uid in range(first, min(last, highest) + 1) if uid not in present]
        expunged = sorted(set(expunged))
    gone = [uid for uid in expunged if in_ranges(ranges, uid)]
    return [b"* VANISHED (EARLIER) %s\r\n" % sequence_set(gone)] if gone else []


def uid_ranges(text: str) -> list[tuple[int, int]]:
    """A UID set as (low, high) ranges; `*` stands for every UID there can be."""
    try:
        ranges = parse_sequence_set(text)
    except ParseError:
        raise Bad("Invalid UID set") from None
    out = []
    for first, last in ranges:
        first, last = (MAX_UID if first == STAR else first), (MAX_UID if last == STAR else last)
        out.append((min(first, last), max(first, last)))
    return out


def in_ranges(ranges: list[tuple[int, int]], uid: int) -> bool:
    return any(first <= uid <= last for first, last in ranges)
