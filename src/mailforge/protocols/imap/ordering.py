"""SORT and THREAD (RFC 5256, with RFC 5957's display keys and RFC 5267's RETURN options on
SORT), sequence-number and UID forms: the messages SEARCH criteria find, ordered by sort.py or
threaded by thread.py.

Their header fields come from the folder's summary cache when it holds the message
(summary.header_block), so sorting a large folder again opens no message file. Handlers run
in the thread pool.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from ...store.api import MessageGone
from . import condstore
from .command_session import CommandSession
from .context import SearchContext, keep_updated
from .messages import find
from .mime import Header, read_header
from .responses import Bad, Tagged, ok
from .results import numbers_line, split_return
from .selected import Selected
from .sort import Candidate, needs_header, parse_criteria, sort_messages
from .summary import header_block
from .thread import Node, ordered_subject, references, render

THREAD_ALGORITHMS: dict[str, Callable[[list[Candidate]], list[Node]]] = {
    "ORDEREDSUBJECT": ordered_subject,
    "REFERENCES": references,
}
_NO_HEADER = read_header(b"", 0, 0)


def sort(session: CommandSession, tag: str, args: list) -> Tagged:
    return _sort(session, tag, args, by_uid=False)


def uid_sort(session: CommandSession, tag: str, args: list) -> Tagged:
    return _sort(session, tag, args, by_uid=True)


def thread(session: CommandSession, tag: str, args: list) -> Tagged:
    return _thread(session, args, by_uid=False)


def uid_thread(session: CommandSession, tag: str, args: list) -> Tagged:
    return _thread(session, args, by_uid=True)


def _sort(session: CommandSession, tag: str, args: list, by_uid: bool) -> Tagged:
    """SORT [RETURN (...)] (criteria) charset search-criteria; with RETURN, the ESEARCH
    response keeps the sort order (RFC 5267 3.2), and UPDATE keeps it up to date."""
    try:
        returns, args = split_return(args)
        if len(args) < 3:
            raise Bad("Syntax: SORT (criteria) charset search-criteria")
        criteria = parse_criteria(args[0])
    except ValueError as exc:
        raise Bad(f"Invalid sort: {exc}") from None
    selected = _selected(session)
    saved = selected.saved_result
    found = _candidates(selected, args[1:], needs_header(criteria), saved)
    if isinstance(found, Tagged):
        return found
    candidates, by_modseq = found
    ordered = sort_messages(criteria, candidates)
    numbers = [c.info.uid if by_uid else c.sequence for c in ordered]
    uids = [c.info.uid for c in ordered]
    if returns.saves:
        selected.saved_result = returns.saved(uids)
    # RFC 7162 3.1.9, 3.1.10: as SEARCH's, a sort by MODSEQ reports the highest one it found.
    modseqs = [c.info.modseq for c in ordered] if by_modseq else None
    if modseqs is not None:
        condstore.start_condstore(session)
    if returns.reports:
        session.untagged(returns.esearch(tag, numbers, by_uid, modseqs))
    elif not returns.extended:
        session.untagged(numbers_line(b"SORT", numbers, modseqs))
    if returns.updates:
        keep_updated(session, SearchContext(
            tag, by_uid, ordered=True, uids=uids,
            evaluate=functools.partial(_sorted_uids, selected, criteria, args[1:], saved)))
    return ok("SORT completed")


def _sorted_uids(selected: Selected, criteria: list, charset_and_criteria: list,
                 saved: list[int]) -> list[int]:
    """A sort context's result again, in its order."""
    found = _candidates(selected, charset_and_criteria, needs_header(criteria), saved)
    if isinstance(found, Tagged):
        return []
    return [c.info.uid for c in sort_messages(criteria, found[0])]


def _thread(session: CommandSession, args: list, by_uid: bool) -> Tagged:
    """THREAD algorithm charset search-criteria."""
    if len(args) < 3 or not isinstance(args[0], str):
        raise Bad("Syntax: THREAD algorithm charset search-criteria")
    algorithm = THREAD_ALGORITHMS.get(args[0].upper())
    if algorithm is None:
        raise Bad(f"Unknown threading algorithm {args[0][:40]}")
    selected = _selected(session)
    found = _candidates(selected, args[1:], True, selected.saved_result)
    if isinstance(found, Tagged):
        return found
    threads = render(algorithm(found[0]), lambda c: c.info.uid if by_uid else c.sequence)
    session.untagged(b"* THREAD %s\r\n" % threads if threads else b"* THREAD\r\n")
    return ok("THREAD completed")


def _selected(session: CommandSession) -> Selected:
    assert session.selected is not None
    return session.selected


def _candidates(selected: Selected, charset_and_criteria: list, with_header: bool,
                saved: list[int]) -> tuple[list[Candidate], bool] | Tagged:
    """The messages the search criteria find (SORT's and THREAD's charset is no option:
    it comes first), each with its header block when the ordering reads one, and whether
    the criteria searched by MODSEQ. A message another session expunged meanwhile is left
    out."""
    found = find(selected, ["CHARSET", *charset_and_criteria], saved)
    if isinstance(found, Tagged):
        return found
    view = selected.messages()
    candidates = []
    for sequence in found.sequences:
        info = view[sequence - 1]
        header = _NO_HEADER
        if with_header:
            try:
                header = _header(header_block(selected.folder, info.uid))
            except MessageGone:
                continue
        candidates.append(Candidate(sequence, info, header))
    return candidates, found.by_modseq


def _header(data: bytes) -> Header:
    return read_header(data, 0, len(data))
