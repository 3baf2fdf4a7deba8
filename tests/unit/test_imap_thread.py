"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 3) as pure functions: the thread
shapes of the RFC's examples, dummies, subject gathering, loops, and the response form."""

from mailforge.protocols.imap.mime import read_header
from mailforge.protocols.imap.sort import Candidate
from mailforge.protocols.imap.thread import ordered_subject, references, render
from mailforge.store.api import MessageInfo


def msg(sequence: int, subject: str = "x", minute: int | None = None, **fields: str) -> Candidate:
    """A message sent at `minute` (its sequence number when not given); `message_id`,
    `references` and `in_reply_to` are header fields."""
    minute = sequence if minute is None else minute
    lines = [f"Subject: {subject}", f"Date: Mon, 2 Mar 2026 {minute // 60:02d}:{minute % 60:02d}:00 +0000"]
    lines += [f"{name.replace('_', '-').title()}: {value}" for name, value in fields.items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return Candidate(sequence, MessageInfo(sequence + 100, frozenset(), 0.0, 1),
                     read_header(data, 0, len(data)))


def by_references(*candidates: Candidate) -> bytes:
    return render(references(list(candidates)), lambda c: c.sequence)


def by_subject(*candidates: Candidate) -> bytes:
    return render(ordered_subject(list(candidates)), lambda c: c.sequence)


def test_rfc_example_shape():
    # RFC 5256 4: (2)(3 6 (4 23)(44 7 96)).
    found = by_references(
        msg(2, "other", message_id="<2@x>"),
        msg(3, message_id="<3@x>"),
        msg(4, message_id="<4@x>", references="<3@x> <6@x>"),
        msg(6, message_id="<6@x>", references="<3@x>"),
        msg(7, message_id="<7@x>", references="<3@x> <6@x> <44@x>"),
        msg(23, message_id="<23@x>", references="<3@x>\r\n <6@x> <4@x>"),
        msg(44, message_id="<44@x>", in_reply_to="<6@x> (sent by someone) <3@x>"),
        msg(96, message_id="<96@x>", references="<44@x> <7@x>"),
    )
    assert found == b"(2)(3 6 (4 23)(44 7 96))"


def test_missing_parent_becomes_a_dummy_at_the_root_only_for_two_or_more_children():
    # Both reply to a message not in the folder: a dummy holds them, ((1)(2)).
    assert by_references(msg(1, "a", message_id="<1@x>", references="<0@x>"),
                         msg(2, "b", message_id="<2@x>", references="<0@x>")) == b"((1)(2))"
    # One child only: it is promoted.
    assert by_references(msg(1, "a", message_id="<1@x>", references="<0@x>")) == b"(1)"
    # A dummy in the middle of a thread is dropped and its children promoted.
    assert by_references(msg(1, message_id="<1@x>"),
                         msg(2, message_id="<2@x>", references="<1@x> <gone@x>"),
                         msg(3, message_id="<3@x>", references="<1@x> <gone@x>")) == b"(1 (2)(3))"


def test_references_outweigh_in_reply_to_and_duplicates_get_their_own_id():
    found = by_references(
        msg(1, "a", message_id="<1@x>"), msg(2, "b", message_id="<2@x>"),
        msg(3, "c", message_id="<3@x>", references="<2@x>", in_reply_to="<1@x>"),
        msg(4, "d", message_id="<3@x>", in_reply_to="<1@x> <2@x>"),  # a duplicate Message-ID
        msg(5, "e", message_id="no brackets", references="nor here"),
    )
    assert found == b"(1 4)(2 3)(5)"


def test_a_reference_loop_is_not_followed():
    found = by_references(msg(1, "a", message_id="<a@x>", references="<b@x>"),
                          msg(2, "b", message_id="<b@x>", references="<a@x>"),
                          msg(3, "c", message_id="<c@x>", references="<c@x>"))
    assert found == b"(2 1)(3)"


def test_threads_of_one_subject_are_gathered():
    # A reply by subject alone goes under the original; two originals under a dummy.
    assert by_references(msg(1, "Hello", message_id="<1@x>"),
                         msg(2, "Re: hello", message_id="<2@x>")) == b"(1 2)"
    assert by_references(msg(1, "Re: hello", message_id="<1@x>"),
                         msg(2, "Hello", message_id="<2@x>")) == b"(2 1)"
    assert by_references(msg(1, "Hello", message_id="<1@x>"),
                         msg(2, "hello", message_id="<2@x>")) == b"((1)(2))"
    # An empty subject gathers nothing.
    assert by_references(msg(1, "", message_id="<1@x>"),
                         msg(2, "Re:", message_id="<2@x>")) == b"(1)(2)"
    # Two dummies with one subject become one: their children are siblings.
    assert by_references(msg(1, "s", message_id="<1@x>", references="<p@x>"),
                         msg(2, "s", message_id="<2@x>", references="<p@x>"),
                         msg(3, "Re: s", message_id="<3@x>", references="<q@x>"),
                         msg(4, "Re: s", message_id="<4@x>", references="<q@x>")
                         ) == b"((1)(2)(3)(4))"


def test_siblings_and_threads_go_by_sent_date_then_sequence():
    found = by_references(msg(1, "a", minute=50, message_id="<1@x>"),
                          msg(2, "b", minute=10, message_id="<2@x>", references="<1@x>"),
                          msg(3, "c", minute=5, message_id="<3@x>", references="<1@x>"),
                          msg(4, "d", minute=10, message_id="<4@x>", references="<1@x>"),
                          msg(5, "e", minute=20, message_id="<5@x>"))
    assert found == b"(5)(1 (3)(2)(4))"


def test_ordered_subject():
    # RFC 5256 3.1's shape: each subject's earliest message the parent of the rest.
    found = by_subject(msg(1, "a"), msg(2, "b"), msg(3, "Re: a", minute=30),
                       msg(4, "[fwd: B]"), msg(5, "c"), msg(6, "re: b", minute=0),
                       msg(7, "B"))
    assert found == b"(6 (2)(4)(7))(1 3)(5)"
    assert by_subject() == b""


def test_render_with_uids():
    threads = ordered_subject([msg(1, "a"), msg(2, "a")])
    assert render(threads, lambda c: c.info.uid) == b"(101 102)"
