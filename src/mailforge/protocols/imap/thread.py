"""THREAD (RFC 5256 3): ORDEREDSUBJECT and REFERENCES over SORT's candidates, and the
parenthesised thread list the response carries.

Pure, as sort.py is. A thread is a tree of `Node`s; a node without a message is a dummy, the
parent REFERENCES puts above messages whose own parent is missing or that share a subject.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .sort import Candidate, sent_date
from .subject import BaseSubject, base_subject

# A msg-id (RFC 5322 3.6.4) as mail readers accept it: anything up to ">" with an "@" in it.
_MESSAGE_ID = re.compile(rb"<([^<>@\s]+@[^<>\s]+)>")


@dataclass(eq=False)
class Node:
    message: Candidate | None = None  # None: a dummy
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None

    def adopt(self, child: Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def is_ancestor_of(self, node: Node) -> bool:
        while node is not None:
            if node is self:
                return True
            node = node.parent  # type: ignore[assignment]
        return False


def _subject_of(candidate: Candidate) -> BaseSubject:
    raw = candidate.header.values("subject")
    return base_subject(raw[0] if raw else None)


def _date_order(candidate: Candidate) -> tuple[float, int]:
    """Siblings and threads go by sent date, then by sequence number (RFC 5256 3)."""
    return sent_date(candidate), candidate.sequence


# --- ORDEREDSUBJECT ------------------------------------------------------------------------------

def ordered_subject(candidates: Sequence[Candidate]) -> list[Node]:
    """RFC 5256 3.1: messages grouped by base subject; in each group the earliest is the parent
    and the others its children, by sent date; the groups by their first message's date."""
    groups: dict[str, list[Candidate]] = {}
    for candidate in sorted(candidates, key=_date_order):
        groups.setdefault(_subject_of(candidate).text, []).append(candidate)
    threads = []
    for first, *rest in groups.values():
        root = Node(first)
        for candidate in rest:
            root.adopt(Node(candidate))
        threads.append(root)
    threads.sort(key=lambda node: _date_order(node.message))  # type: ignore[arg-type]
    return threads


# --- REFERENCES ----------------------------------------------------------------------------------

def references(candidates: Sequence[Candidate]) -> list[Node]:
    """RFC 5256 3.2, its steps numbered as there."""
    roots = _link(sorted(candidates, key=lambda c: c.sequence))  # (1) to (3)
    roots = _prune(roots, at_root=True)                          # (4)
    _sort_siblings(roots)  # so that a dummy's "first child" in (5) is its earliest
    roots = _group_by_subject(roots)                             # (5)
    _sort_siblings(roots)                                        # (6)
    return roots


def _ids(values: Iterable[bytes]) -> list[str]:
    return [match.decode("latin-1") for value in values for match in _MESSAGE_ID.findall(value)]


def _link(candidates: Sequence[Candidate]) -> list[Node]:
    table: dict[str, Node] = {}
    for candidate in candidates:
        # (1A) Its own Message-ID, or a unique one when it has none or an earlier message has
        # it already.
        own = _ids(candidate.header.values("message-id")[:1])
        key = own[0] if own else ""
        if not key or (key in table and table[key].message is not None):
            key = f"\0{candidate.sequence}"
        node = table.setdefault(key, Node())
        node.message = candidate
        # The References field, else the first Message-ID of In-Reply-To.
        chain = _ids(candidate.header.values("references"))
        if not chain:
            chain = _ids(candidate.header.values("in-reply-to"))[:1]
        # (1B) Each reference the parent of the next, unless it has a parent or a loop
        # would follow.
        containers = [table.setdefault(ref, Node()) for ref in chain]
        for parent, child in zip(containers, containers[1:]):
            if child.parent is None and parent is not child and not child.is_ancestor_of(parent):
                parent.adopt(child)
        # (1C) The last reference is the message's parent, whatever parent it had.
        if node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        if containers and containers[-1] is not node and not node.is_ancestor_of(containers[-1]):
            containers[-1].adopt(node)
    # (2) The root set.
    return [node for node in table.values() if node.parent is None]


def _prune(nodes: list[Node], at_root: bool) -> list[Node]:
    """(4) Dummies without children go; a dummy's children take its place, except that at the
    root they do so only when there is one of them."""
    kept: list[Node] = []
    for node in nodes:
        node.children = _prune(node.children, at_root=False)
        for child in node.children:
            child.parent = node
        if node.message is not None:
            kept.append(node)
        elif len(node.children) == 1 or (node.children and not at_root):
            kept += node.children
        elif node.children:
            kept.append(node)
    for node in kept:
        node.parent = None
    return kept


def _thread_subject(node: Node) -> BaseSubject:
    """(5B) The message's base subject, or for a dummy its first child's."""
    message = node.message if node.message is not None else node.children[0].message
    assert message is not None  # a dummy's children are messages after (4)
    return _subject_of(message)


def _group_by_subject(roots: list[Node]) -> list[Node]:
    """(5) Threads whose subjects match are gathered under one root."""
    table: dict[str, Node] = {}
    for root in roots:  # (5C)
        subject = _thread_subject(root).text
        if not subject:
            continue
        other = table.get(subject)
        if other is None or (other.message is not None and (
                root.message is None or (_is_reply(other) and not _is_reply(root)))):
            table[subject] = root
    result: list[Node] = []
    for root in roots:  # (5D)
        if root.parent is not None:  # gathered under another root already
            continue
        subject = _thread_subject(root).text
        other = table.get(subject) if subject else None
        if other is None or other is root:
            result.append(root)
        elif other.message is None:
            if root.message is None:
                for child in list(root.children):
                    other.adopt(child)
            else:
                other.adopt(root)
        elif _is_reply(root) and not _is_reply(other):
            other.adopt(root)
        else:
            dummy = Node()
            if other in result:
                result[result.index(other)] = dummy
            else:
                result.append(dummy)
            dummy.adopt(other)
            dummy.adopt(root)
            table[subject] = dummy
    return result


def _is_reply(node: Node) -> bool:
    return node.message is not None and _subject_of(node.message).reply_or_forward


def _sort_siblings(nodes: list[Node]) -> None:
    """(6) Every set of siblings by sent date, the deepest first; a dummy goes by its first
    child."""
    for node in nodes:
        _sort_siblings(node.children)
    nodes.sort(key=_node_order)


def _node_order(node: Node) -> tuple[float, int]:
    while node.message is None:
        node = node.children[0]
    return _date_order(node.message)


# --- the response --------------------------------------------------------------------------------

def render(threads: Sequence[Node], number: Callable[[Candidate], int]) -> bytes:
    """`(1 2 (3)(4 5))(6)`: each thread in parentheses, a single child after its parent, two
    or more each in parentheses (RFC 5256 4)."""
    return b"".join(b"(%s)" % _render(node, number) for node in threads)


def _render(node: Node, number: Callable[[Candidate], int]) -> bytes:
    children = node.children
    if node.message is None:
        return b"".join(b"(%s)" % _render(child, number) for child in children)
    head = b"%d" % number(node.message)
    if len(children) == 1:
        return head + b" " + _render(children[0], number)
    if children:
        return head + b" " + b"".join(b"(%s)" % _render(child, number) for child in children)
    return head
