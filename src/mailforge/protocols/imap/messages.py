"""IMAP commands on the messages of the selected folder (RFC 3501 6.4, RFC 4315 UIDPLUS,
RFC 6851 MOVE, RFC 3691 UNSELECT, RFC 4731 ESEARCH, RFC 5182 SEARCHRES, RFC 7162 CONDSTORE's
FETCH, STORE and SEARCH), sequence-number and UID forms alike.

FETCH and SEARCH build on protocols/imap/fetch.py and search.py; the folder is reached only
through the store's Folder interface. Handlers run in the thread pool.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable
from typing import NamedTuple

from ...speedups import FetchAttribute, Literal, ParseError, parse_fetch_attributes, render_fetch
from ...store.api import SEEN, FlagMode, MessageGone, MessageInfo, MessageSummary
from . import condstore
from .context import SearchContext, keep_updated
from . import fetch as fetch_items
from ...store.acl import permitted_flags
from .command_session import CommandSession
from .mime import UnknownEncoding
from .responses import Bad, Tagged, atom, count, flag_list, folder_name, no, ok
from .results import numbers_line, sequence_set, split_return
from .search import BadCharset, parse_search
from .selected import Selected
from .summary import header_block

STORE_MODES = {"FLAGS": FlagMode.REPLACE, "+FLAGS": FlagMode.ADD, "-FLAGS": FlagMode.REMOVE}
# A command of a selected folder that syncs nothing runs on the event loop (runs_on_loop): the
# thread-pool hop and the pool's threads taking the GIL from each other cost more than most
# commands do. Up to this many messages, so that FETCH 1:* FLAGS on a huge folder still does
# not stall the worker's other sessions,
INLINE_VIEW_LIMIT = 2000
# and at most this many octets of message files read by one command there (past it, the store
# refuses the read and the command runs again in the pool: store/waiting.py).
LOOP_READ_LIMIT = 256 * 1024
# Commands tried on the loop whatever their arguments: they write the folder without a sync.
# (APPEND too, when small: its syncs are steps the driver runs in the pool.)
LOOP_COMMANDS = frozenset({"NOOP", "CHECK", "STORE", "UID STORE", "EXPUNGE", "UID EXPUNGE",
                           "STATUS", "LIST", "LSUB"})


def _selected(session: CommandSession) -> Selected:
    assert session.selected is not None
    return session.selected


def check(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 0, syntax="CHECK")
    return ok("CHECK completed")


def close(session: CommandSession, tag: str, args: list) -> Tagged:
    """Expunge silently (RFC 3501 6.4.2), unless the folder was opened read-only."""
    count(args, 0, syntax="CLOSE")
    selected = _selected(session)
    if not selected.read_only and "e" in selected.rights:
        selected.folder.expunge()
    session.select_folder(None)
    return ok("CLOSE completed")


def unselect(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 0, syntax="UNSELECT")
    session.select_folder(None)
    return ok("UNSELECT completed")


def expunge(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 0, syntax="EXPUNGE")
    return _expunge(session, None)


def uid_expunge(session: CommandSession, tag: str, args: list) -> Tagged:
    count(args, 1, syntax="UID EXPUNGE uid-set")
    targets = _selected(session).resolve(atom(args[0]), by_uid=True)
    return _expunge(session, [info.uid for _, info in targets])


def _expunge(session: CommandSession, uids: list[int] | None) -> Tagged:
    selected = _selected(session)
    if selected.read_only:
        return no("The mailbox is read-only", "READ-ONLY")
    if "e" not in selected.rights:
        return no("You may not expunge this mailbox", "NOPERM")
    if uids == []:
        return ok("EXPUNGE completed")
    removed = selected.folder.expunge(uids)
    for line in selected.expunged(removed):
        session.untagged(line)
    return ok("EXPUNGE completed")


def runs_on_loop(session: CommandSession, name: str, args: list) -> bool:
    """Whether this command of a selected folder is tried on the event loop: it syncs nothing
    and sets no \\Seen, and there is no search context to bring up to date. There the store
    takes no lock that is not free at once and reads at most LOOP_READ_LIMIT octets of
    messages (store/waiting.py): a command that would wait or read more goes to the thread
    pool before it changed anything. Arguments it cannot make sense of: False (the handler
    says so, in the pool)."""
    selected = session.selected
    if selected is None or selected.contexts:
        return False
    if name in LOOP_COMMANDS:
        return True
    if name == "APPEND":
        return _append_fits_the_loop(args)
    if name in ("FETCH", "UID FETCH"):
        return _fetch_fits_the_loop(selected, args)
    return name == "SEARCH" and _search_fits_the_loop(selected, args)


def _append_fits_the_loop(args: list) -> bool:
    """Messages of plain literals (no CATENATE of other messages) of at most LOOP_READ_LIMIT
    octets in all: written on the loop, their syncs in the pool (store/steps.py)."""
    if any(isinstance(arg, str) and arg.upper() in ("CATENATE", "UTF8") for arg in args[1:]):
        return False
    return sum(len(arg) for arg in args if isinstance(arg, Literal)) <= LOOP_READ_LIMIT


def _fetch_fits_the_loop(selected: Selected, args: list) -> bool:
    if len(args) != 2 or not isinstance(args[0], str):
        return False
    if len(selected.messages()) > INLINE_VIEW_LIMIT and not args[0].isdigit():
        return False  # resolving the set would itself be long work for the loop
    key = _items_key(args[1])
    try:
        return key is not None and not _sets_seen(key)
    except ParseError:
        return False


def _search_fits_the_loop(selected: Selected, args: list) -> bool:
    """A SEARCH that needs nothing but the view (MessageInfo) of a small folder. Criteria it
    cannot make sense of: False, and the handler gives the error."""
    if len(selected.messages()) > INLINE_VIEW_LIMIT:
        return False
    try:
        return not parse_search(split_return(args)[1]).needs_message
    except (ParseError, ValueError, Bad):  # BadCharset is a ValueError
        return False


# --- SEARCH ------------------------------------------------------------------------------------

def search(session: CommandSession, tag: str, args: list) -> Tagged:
    return _search(session, tag, args, by_uid=False)


def uid_search(session: CommandSession, tag: str, args: list) -> Tagged:
    return _search(session, tag, args, by_uid=True)


def _search(session: CommandSession, tag: str, args: list, by_uid: bool) -> Tagged:
    """SEARCH, with RETURN (...) answered by ESEARCH (RFC 4731) and SAVE kept for `$`;
    with UPDATE, the result is kept up to date (RFC 5267)."""
    selected = _selected(session)
    try:
        returns, criteria = split_return(args)
    except ValueError as exc:
        raise Bad(f"Invalid search: {exc}") from None
    saved = selected.saved_result
    if returns.saves:
        selected.saved_result = []  # and so it stays if this search fails (RFC 5182 2.1)
    view = selected.messages()
    found = find(selected, criteria, saved)
    if isinstance(found, Tagged):
        return found
    uids = [view[seq - 1].uid for seq in found.sequences]
    if returns.saves:
        selected.saved_result = returns.saved(uids)
    numbers = uids if by_uid else found.sequences
    # RFC 7162 3.1.5: a search by MODSEQ reports the highest MODSEQ of what it found.
    modseqs = [view[seq - 1].modseq for seq in found.sequences] if found.by_modseq else None
    if modseqs is not None:
        condstore.start_condstore(session)
    # IMAP4rev2 answers every SEARCH with ESEARCH (RFC 9051 6.4.4), as if RETURN (ALL).
    if returns.reports or session.sync.rev2 and not returns.extended:
        session.untagged(returns.esearch(tag, numbers, by_uid, modseqs))
    elif not returns.extended:
        session.untagged(numbers_line(b"SEARCH", numbers, modseqs))
    if returns.updates:
        keep_updated(session, SearchContext(
            tag, by_uid, ordered=False, uids=uids,
            evaluate=functools.partial(_found_uids, selected, criteria, saved)))
    return ok("SEARCH completed")


def _found_uids(selected: Selected, criteria: list, saved: Collection[int]) -> list[int]:
    """A search context's result again (criteria that were good once stay good)."""
    found = find(selected, criteria, saved)
    view = selected.messages()
    return [] if isinstance(found, Tagged) else [view[seq - 1].uid for seq in found.sequences]


class Found(NamedTuple):
    sequences: list[int]
    # The criteria held the MODSEQ key, not merely the word (SUBJECT modseq): the answer
    # then names the highest MODSEQ found (RFC 7162 3.1.5).
    by_modseq: bool


def find(selected: Selected, criteria: list, saved: Collection[int]) -> Found | Tagged:
    """The sequence numbers of the messages that match SEARCH criteria (as SORT and THREAD
    take them too), or the NO that refuses them; BAD for criteria that make no sense."""
    try:
        query = parse_search(criteria, saved)
    except BadCharset as exc:
        return no(str(exc), "BADCHARSET (US-ASCII UTF-8)")
    except (ParseError, ValueError) as exc:
        raise Bad(f"Invalid search: {exc}") from None
    load = None
    if query.needs_body:
        load = selected.folder.read
    elif query.needs_message:
        load = functools.partial(header_block, selected.folder)
    try:
        return Found(query.run(selected.messages(), load), query.by_modseq)
    except UnknownEncoding:
        return no("A part is in an encoding the server cannot decode", "UNKNOWN-CTE")


# --- FETCH -------------------------------------------------------------------------------------

def fetch_attributes(arg: object) -> list[FetchAttribute]:
    """parse_fetch_attributes, remembered: a client asks for the same few item lists over
    and over, and each FETCH is parsed twice (runs_on_loop, then the handler)."""
    key = _items_key(arg)
    if key is None:
        return parse_fetch_attributes(arg)  # not a plain item list: the parser says what is wrong
    return list(_parsed_attributes(key))


def _items_key(arg: object) -> str | tuple[str, ...] | None:
    """A FETCH item list as a key to remember its parse by; None when it is not plain."""
    if isinstance(arg, str):
        return arg
    if isinstance(arg, list) and all(isinstance(item, str) for item in arg):
        return tuple(arg)
    return None


@functools.lru_cache(maxsize=256)
def _parsed_attributes(arg: str | tuple[str, ...]) -> tuple[FetchAttribute, ...]:
    return tuple(parse_fetch_attributes(list(arg) if isinstance(arg, tuple) else arg))


@functools.lru_cache(maxsize=256)
def _sets_seen(key: str | tuple[str, ...]) -> bool:
    return fetch_items.sets_seen(_parsed_attributes(key))


def fetch(session: CommandSession, tag: str, args: list) -> Tagged:
    return _fetch(session, args, by_uid=False)


def uid_fetch(session: CommandSession, tag: str, args: list) -> Tagged:
    return _fetch(session, args, by_uid=True)


def _fetch(session: CommandSession, args: list, by_uid: bool) -> Tagged:
    count(args, 2, 3, syntax="FETCH sequence-set items [(CHANGEDSINCE modseq [VANISHED])]")
    selected = _selected(session)
    targets = selected.resolve(atom(args[0]), by_uid)
    rest, with_modseq = condstore.take_modseq_item(args[1])
    try:
        items = fetch_attributes(rest) if rest is not None else []
    except ParseError as exc:
        raise Bad(f"Invalid FETCH items: {exc}") from None
    if len(args) == 3:
        changedsince, vanished = condstore.fetch_modifiers(args[2], by_uid, session.sync.qresync)
        with_modseq = True
        targets = [(seq, info) for seq, info in targets if info.modseq > changedsince]
        if vanished:
            ranges = condstore.uid_ranges(atom(args[0]))
            for line in condstore.vanished_earlier(selected, changedsince, ranges):
                session.untagged(line)
    if with_modseq:
        condstore.start_condstore(session)
    seen = _mark_seen(selected, targets, items)
    if seen:
        # Setting \Seen renames the file as it is now: it may show keywords another session set.
        for line in selected.keyword_news(info for _, info in targets if info.uid in seen):
            session.untagged(line)
    plan = fetch_items.fetch_plan(items, uid=by_uid, modseq=with_modseq)
    if plan is not None:
        vanished = _fetch_planned(session, selected, targets, items, plan, by_uid, with_modseq)
    else:
        vanished = _fetch_each(session, selected, targets, items, seen, by_uid, with_modseq)
    if vanished < 0:
        return no("A part is in an encoding the server cannot decode", "UNKNOWN-CTE")
    if vanished:
        return no("Some of the requested messages no longer exist", "EXPUNGEISSUED")
    return ok("FETCH completed")


def _fetch_planned(session: CommandSession, selected: Selected,
                   targets: list[tuple[int, MessageInfo]], items: list[FetchAttribute],
                   plan: fetch_items.Plan, by_uid: bool, with_modseq: bool) -> int:
    """A FETCH that MessageInfo and the cached summaries answer, rendered in one call; how
    many messages were found gone (-1 as for _fetch_each). A message that the summary cache
    does not hold yet is read, which summarises it into the cache (Folder.read), and is
    answered from that summary: parsed once, not again for its answer."""
    with_summary = fetch_items.plan_needs_summary(plan)
    looked = False
    # Messages read that could not be summarised (a header past the cap): answered from these.
    unsummarised: dict[int, bytes] = {}

    def summary_of(uid: int) -> MessageSummary | None:
        # The first message the cache lacks makes it look at what was added to it since;
        # after that the messages it lacks are read (and summarised) without looking again.
        nonlocal looked
        found = selected.folder.summary(uid, not looked)
        if found is None:
            looked = True
            try:
                data = selected.folder.read(uid)
            except MessageGone:
                return None  # read_one finds it gone
            found = selected.folder.summary(uid, False)
            if found is None:
                unsummarised[uid] = data
        return found

    def read_one(seq: int, info: MessageInfo) -> bytes | None:
        try:
            data = unsummarised.pop(info.uid, None)
            if data is None:
                data = selected.folder.read(info.uid)
        except MessageGone:
            return None  # expunged by another session; reported at the next chance
        return fetch_items.fetch_response(seq, info, items, data, uid=by_uid,
                                          modseq=with_modseq, recent=not session.sync.rev2)

    try:
        lines, vanished = render_fetch(
            targets, plan, summary_of if with_summary else None, read_one,
            fetch_items.flags_item, not session.sync.rev2)
    except UnknownEncoding:
        return -1
    if lines:
        session.untagged(lines)
    return vanished


def _fetch_each(session: CommandSession, selected: Selected,
                targets: list[tuple[int, MessageInfo]], items: list[FetchAttribute],
                seen: set[int], by_uid: bool, with_modseq: bool) -> int:
    """FETCH message by message (bodies, \\Seen set); how many were found gone, or -1 for a
    part in an encoding that cannot be undone."""
    needs_message = fetch_items.needs_message(items)
    from_summary = needs_message and fetch_items.answerable_from_summary(items)
    vanished = 0
    # What every message's response shares, looked up once (a FETCH may name thousands).
    untagged, recent, condstore_on = session.untagged, not session.sync.rev2, session.sync.condstore
    for seq, info in targets:
        try:
            # This FETCH set \Seen: FLAGS too (RFC 3501 6.4.5), and UID and MODSEQ under
            # QRESYNC (RFC 7162 3.2.4).
            just_seen = info.uid in seen
            untagged(fetch_line(
                selected, seq, info, items, needs_message, from_summary,
                uid=selected.with_uid(by_uid) if just_seen else by_uid, flags=just_seen,
                modseq=with_modseq or just_seen and condstore_on, recent=recent))
        except UnknownEncoding:
            return -1
        except MessageGone:
            vanished += 1  # expunged by another session; reported at the next chance
    return vanished


def fetch_line(selected: Selected, seq: int, info: MessageInfo, items: list[FetchAttribute],
               needs_message: bool, from_summary: bool, **options: bool) -> bytes:
    """One message's FETCH response, from its cached summary when the items allow; the
    `needs_message`/`from_summary` of fetch.py, worked out once for all the messages."""
    summary = selected.folder.summary(info.uid) if from_summary else None
    data = selected.folder.read(info.uid) if needs_message and summary is None else None
    return fetch_items.fetch_response(seq, info, items, data, summary=summary, **options)


def _mark_seen(selected: Selected, targets: list[tuple[int, MessageInfo]],
               items: list[FetchAttribute]) -> set[int]:
    """BODY[...] without PEEK, RFC822 and RFC822.TEXT set \\Seen (RFC 3501 6.4.5); the
    messages it was set on, whose FETCH response then carries the new FLAGS."""
    if selected.read_only or "s" not in selected.rights or not fetch_items.sets_seen(items):
        return set()
    unseen = [info.uid for _, info in targets if SEEN not in info.flags]
    if not unseen:
        return set()
    updated = {info.uid: info for info in selected.folder.set_flags(unseen, [SEEN], FlagMode.ADD)}
    targets[:] = [(seq, updated.get(info.uid, info)) for seq, info in targets]
    return set(updated)


# --- STORE -------------------------------------------------------------------------------------

def store(session: CommandSession, tag: str, args: list) -> Tagged:
    return _store(session, args, by_uid=False)


def uid_store(session: CommandSession, tag: str, args: list) -> Tagged:
    return _store(session, args, by_uid=True)


def _store(session: CommandSession, args: list, by_uid: bool) -> Tagged:
    count(args, 3, 100, syntax="STORE sequence-set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] (flags)")
    selected = _selected(session)
    unchanged_since = None
    if isinstance(args[1], list):
        unchanged_since = condstore.store_modifier(args[1])
        args = [args[0], *args[2:]]
        count(args, 3, 100, syntax="STORE sequence-set (UNCHANGEDSINCE n) item (flags)")
        condstore.start_condstore(session)
    item = atom(args[1]).upper()
    silent = item.endswith(".SILENT")
    mode = STORE_MODES.get(item.removesuffix(".SILENT"))
    if mode is None:
        raise Bad("STORE takes FLAGS, +FLAGS or -FLAGS, with .SILENT or not")
    flags = flag_list(args[2] if len(args) == 3 else args[2:])
    targets = selected.resolve(atom(args[0]), by_uid)
    if selected.read_only:
        return no("The mailbox is read-only", "READ-ONLY")
    before = {info.uid: info.flags for _, info in targets}
    updated = _set_permitted(selected, [info for _, info in targets], flags, mode,
                             unchanged_since)
    for line in selected.keyword_news(updated):  # .SILENT or not (RFC 3501 7.2.6)
        session.untagged(line)
    for info in updated:
        seq = selected.seq_of(info.uid)
        # .SILENT or not, flags another session changed are told (RFC 3501 6.4.6): the view
        # took the message in as it is now, so no refresh would tell of them later.
        if seq and not (silent and _as_stored(before[info.uid], flags, mode, info.flags)):
            session.untagged(selected.flags_response(seq, info, with_uid=by_uid))
        elif seq and session.sync.condstore:
            session.untagged(selected.modseq_response(seq, info, with_uid=by_uid))
    if unchanged_since is None:
        return ok("STORE completed")
    stored = {info.uid for info in updated}
    modified = [uid if by_uid else seq for seq, uid in
                ((seq, info.uid) for seq, info in targets) if uid not in stored]
    if modified:
        return ok("Conditional STORE failed", f"MODIFIED {sequence_set(modified).decode()}")
    return ok("Conditional STORE completed")


def _as_stored(before: frozenset[str], flags: list[str], mode: FlagMode,
               after: frozenset[str]) -> bool:
    """Are `after` the flags the STORE alone makes of `before`, as the client can work them
    out (flags compared without case)? Not when another session changed them meanwhile."""
    def folded(names: Iterable[str]) -> frozenset[str]:
        return frozenset(name.lower() for name in names) - {"\\recent"}

    return mode.applied(folded(before), folded(flags)) == folded(after)


def _set_permitted(selected: Selected, targets: list[MessageInfo], flags: list[str],
                   mode: FlagMode, unchanged_since: int | None) -> list[MessageInfo]:
    """STORE under the folder's rights: a flag they do not let it change stays as it is on
    each message (RFC 4314 4), so FLAGS (...) becomes a removal and an addition of the rest.
    With UNCHANGEDSINCE, messages changed since are left out (the first step decides)."""
    uids = [info.uid for info in targets]
    folder = selected.folder
    if {"s", "t", "w"} <= selected.rights:
        return folder.set_flags(uids, flags, mode, unchanged_since)
    allowed = permitted_flags(flags, selected.rights)
    if mode is not FlagMode.REPLACE:
        return folder.set_flags(uids, allowed, mode, unchanged_since)
    present = {flag for info in targets for flag in info.flags}
    removed = permitted_flags(present - set(flags), selected.rights)
    passed = folder.set_flags(uids, removed, FlagMode.REMOVE, unchanged_since)
    return folder.set_flags([info.uid for info in passed], allowed, FlagMode.ADD)


# --- COPY, MOVE --------------------------------------------------------------------------------

def copy(session: CommandSession, tag: str, args: list) -> Tagged:
    return _copy(session, args, by_uid=False, move=False)


def uid_copy(session: CommandSession, tag: str, args: list) -> Tagged:
    return _copy(session, args, by_uid=True, move=False)


def move(session: CommandSession, tag: str, args: list) -> Tagged:
    return _copy(session, args, by_uid=False, move=True)


def uid_move(session: CommandSession, tag: str, args: list) -> Tagged:
    return _copy(session, args, by_uid=True, move=True)


def _copy(session: CommandSession, args: list, by_uid: bool, move: bool) -> Tagged:
    verb = "MOVE" if move else "COPY"
    count(args, 2, syntax=f"{verb} sequence-set mailbox")
    selected = _selected(session)
    targets = selected.resolve(atom(args[0]), by_uid)
    target = folder_name(args[1], session.sync.utf8_names)
    if move and selected.read_only:
        return no("The mailbox is read-only", "READ-ONLY")
    if move and not {"t", "e"} <= selected.rights:
        return no("You may not move messages out of this mailbox", "NOPERM")
    uids = [info.uid for _, info in targets]
    if not uids:
        return ok(f"{verb} completed")
    if move:
        uidvalidity, pairs = selected.folder.move(uids, target)
    else:
        uidvalidity, pairs = selected.folder.copy(uids, target)
    code = _copyuid(uidvalidity, pairs)
    if not move:
        return ok("COPY completed", code)
    # RFC 6851 4.3: COPYUID comes untagged, before the EXPUNGEs.
    if code:
        session.untagged(f"* OK [{code}] Moved\r\n".encode())
    for line in selected.expunged(uid for uid in uids if not selected.seq_of(uid)):
        session.untagged(line)
    return ok("MOVE completed")


def _copyuid(uidvalidity: int, pairs: list[tuple[int, int]]) -> str:
    if not pairs:
        return ""
    sources = ",".join(str(source) for source, _ in pairs)
    copies = ",".join(str(copy) for _, copy in pairs)
    return f"COPYUID {uidvalidity} {sources} {copies}"

