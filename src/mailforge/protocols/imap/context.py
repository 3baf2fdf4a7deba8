"""Search contexts (RFC 5267 CONTEXT=SEARCH, CONTEXT=SORT): results the server keeps up to date.

A SEARCH or SORT with RETURN (UPDATE) leaves its result here, as UIDs in result order, with a
way to compute it again. Whenever the folder may have changed (after every command in the
SELECTED state, and during IDLE) each result is computed again, and what went in or out is
told with `* ESEARCH (TAG "x") [UID] REMOVEFROM (0 set) ADDTO (position set)`:
- REMOVEFROM's position is always 0 ("look the numbers up"), which RFC 5267 4.3 allows;
- for SEARCH, whose order is the numbers' own, ADDTO's position is 0 as well; for SORT each
  message added gets its position in the new order, lowest first, so that each insertion is
  right against the list as the ones before it left it.
Messages expunged leave a result before their EXPUNGEs go out, while their sequence numbers
still mean what the client thinks (Selected.expunged calls `expunged`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...store.api import MessageInfo
from .responses import Bad, Tagged, count, ok, text
from .results import esearch_head, sequence_set

if TYPE_CHECKING:
    from .command_session import CommandSession

# Contexts one session may keep open at once; past this the search is answered without
# updates and `* NO [NOUPDATE "tag"]` says so (RFC 5267 4.2). Each one is searched again
# after every change, so a handful is what a client needs.
MAX_CONTEXTS = 16

Fingerprint = tuple[tuple[int, frozenset[str]], ...]
# The result's UIDs in its order, computed again against the folder as it is now.
Evaluate = Callable[[], list[int]]


@dataclass
class SearchContext:
    tag: str
    by_uid: bool
    ordered: bool          # a SORT: positions in ADDTO matter
    evaluate: Evaluate
    uids: list[int] = field(default_factory=list)


class SearchContexts:
    """The contexts of one selected folder (a new SELECT starts with none)."""

    def __init__(self) -> None:
        self._contexts: dict[str, SearchContext] = {}
        self._fingerprint: Fingerprint | None = None

    def __bool__(self) -> bool:
        return bool(self._contexts)

    def add(self, context: SearchContext) -> bool:
        """Keep `context` (a new one with the tag of an old one replaces it); False when the
        session has as many as it may. The next `updates` looks at every result again."""
        if context.tag not in self._contexts and len(self._contexts) >= MAX_CONTEXTS:
            return False
        self._contexts[context.tag] = context
        self._fingerprint = None
        return True

    def cancel(self, tag: str) -> bool:
        return self._contexts.pop(tag, None) is not None

    def expunged(self, gone: dict[int, int]) -> list[bytes]:
        """REMOVEFROM for messages about to be reported expunged: `gone` maps each UID to
        its sequence number in the view the client still holds."""
        lines = []
        for context in self._contexts.values():
            removed = [uid for uid in context.uids if uid in gone]
            if not removed:
                continue
            context.uids = [uid for uid in context.uids if uid not in gone]
            numbers = removed if context.by_uid else [gone[uid] for uid in removed]
            lines.append(b"%s REMOVEFROM (0 %s)\r\n" % (
                esearch_head(context.tag, context.by_uid), sequence_set(sorted(numbers))))
        return lines

    def updates(self, view: Sequence[MessageInfo], seq_of: Callable[[int], int]) -> list[bytes]:
        """What changed in each result since it was last told, if the view changed at all."""
        fingerprint = _fingerprint(view)
        if not self._contexts or fingerprint == self._fingerprint:
            return []
        self._fingerprint = fingerprint
        lines = []
        for context in self._contexts.values():
            line = _update(context, context.evaluate(), seq_of)
            if line:
                lines.append(line)
        return lines


def keep_updated(session: CommandSession, context: SearchContext) -> None:
    """SEARCH/SORT ... RETURN (UPDATE): keep the result, or say why it is not kept."""
    assert session.selected is not None
    if not session.selected.contexts.add(context):
        session.untagged(b'* NO [NOUPDATE "%s"] Too many search contexts\r\n'
                         % context.tag.encode("ascii"))


def cancel_update(session: CommandSession, tag: str, args: list) -> Tagged:
    """CANCELUPDATE "tag" ...: those results are no longer kept up to date (RFC 5267 4.3)."""
    count(args, 1, MAX_CONTEXTS, syntax='CANCELUPDATE "tag" ...')
    assert session.selected is not None
    tags = [text(arg) for arg in args]
    unknown = [name for name in tags if not session.selected.contexts.cancel(name)]
    if unknown:
        raise Bad(f"No search context has the tag {unknown[0][:40]}")
    return ok("CANCELUPDATE completed")


def _update(context: SearchContext, now: list[int], seq_of: Callable[[int], int]) -> bytes:
    before = set(context.uids)
    kept = set(now)
    removed = [uid for uid in context.uids if uid not in kept]
    added = [(position, uid) for position, uid in enumerate(now, 1) if uid not in before]
    context.uids = now
    if not (removed or added):
        return b""

    def numbers(uids: list[int]) -> list[int]:
        return uids if context.by_uid else [seq_of(uid) for uid in uids]

    parts = [esearch_head(context.tag, context.by_uid)]
    if removed:
        parts.append(b"REMOVEFROM (0 %s)" % sequence_set(sorted(numbers(removed))))
    if added and not context.ordered:
        parts.append(b"ADDTO (0 %s)" % sequence_set(numbers([uid for _, uid in added])))
    elif added:
        parts += [b"ADDTO (%d %d)" % (position, numbers([uid])[0]) for position, uid in added]
    return b" ".join(parts) + b"\r\n"


def _fingerprint(view: Sequence[MessageInfo]) -> Fingerprint:
    """What a search result can depend on that changes while a folder is selected: which
    messages there are, and their flags."""
    return tuple((info.uid, info.flags) for info in view)
