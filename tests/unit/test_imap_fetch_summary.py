"""FETCH and SEARCH answered from a message's cached summary give the bytes and hits that the
whole message gives, for every item the summary may answer; and through the Maildir store,
the summary is kept when a message is read and found by another session without its file."""

from __future__ import annotations

import os

import pytest

from mailforge.protocols.imap import fetch
from mailforge.protocols.imap.search import parse_search
from mailforge.protocols.imap.summary import MAX_CACHED_HEADER, SUMMARIZER
from mailforge.speedups import CommandParser, FetchAttribute, parse_fetch_attributes
from mailforge.store.api import FlagMode, MessageInfo
from mailforge.store.folders import MaildirMailbox

from .imap_messages import ALTERNATIVE, MALFORMED, MIXED, NESTED, PLAIN, UNCLOSED
from .test_imap_search import BY_UID, INFOS, args

EIGHT_BIT = (b"From: =?UTF-8?Q?J=C3=BCrgen?= <j\xc3\xbcrgen@example.de>\r\n"
             b"To: \xe9l\xe8ve <eleve@example.fr>, (no name) bob@example.com\r\n"
             b"Subject: r\xc3\xa9sum\xc3\xa9 \x80\xff\r\n"
             b"Content-Type: text/plain; charset=\"iso-8859-1\"; name*=utf-8''r%C3%A9\r\n\r\n"
             b"caf\xe9\r\n")
MESSAGES = {
    "plain": PLAIN, "alternative": ALTERNATIVE, "mixed": MIXED, "nested": NESTED,
    "malformed": MALFORMED, "unclosed": UNCLOSED, "8bit": EIGHT_BIT,
    "header only": b"Subject: no body\r\nFrom: a@example.org\r\n\r\n",
    "no blank line": b"Subject: no body\r\nFrom: a@example.org\r\n",
    "no line end": b"Subject: nothing else",
    "empty header": b"\r\njust a body\r\n",
    "empty": b"",
}
ANSWERABLE = [
    "ENVELOPE", "BODYSTRUCTURE", "BODY", "RFC822.HEADER", "ALL", "FAST", "FULL",
    "(UID BODY.PEEK[HEADER])", "BODY[HEADER]", "BODY.PEEK[HEADER]<0.20>",
    "(ENVELOPE BODYSTRUCTURE INTERNALDATE BODY.PEEK[HEADER.FIELDS (From Subject Message-ID)] "
    "RFC822.SIZE)",
    "BODY.PEEK[HEADER.FIELDS.NOT (Subject To)]", "BODY[header.fields (content-type)]",
    "BODY.PEEK[HEADER.FIELDS (X-Missing)]<2.5>",
]
NEEDS_BODY = ["BODY[]", "BODY.PEEK[TEXT]", "BODY.PEEK[1]", "BODY[1.HEADER]", "BODY[1.MIME]",
              "RFC822", "RFC822.TEXT", "BINARY.PEEK[1]", "BINARY.SIZE[1]",
              "(ENVELOPE BODY.PEEK[])"]


def attributes_of(items: str) -> list[FetchAttribute]:
    """The items as the real command parser gives them to FETCH."""
    command, _ = CommandParser().feed(b"t FETCH 1 " + items.encode() + b"\r\n")
    assert command is not None
    return parse_fetch_attributes(command.args[1])


def info_of(data: bytes) -> MessageInfo:
    return MessageInfo(uid=7, flags=frozenset({"\\Seen"}), internal_date=1_700_000_000.0,
                       size=len(data))


@pytest.mark.parametrize("name", MESSAGES)
@pytest.mark.parametrize("items", ANSWERABLE)
def test_summary_answers_as_the_message_does(name, items):
    data = MESSAGES[name]
    attributes = attributes_of(items)
    assert fetch.answerable_from_summary(attributes)
    summary = SUMMARIZER.summarize(data)
    assert summary is not None
    whole = fetch.fetch_response(3, info_of(data), attributes, data, uid=True, flags=True)
    cached = fetch.fetch_response(3, info_of(data), attributes, summary=summary, uid=True,
                                  flags=True)
    assert cached == whole


@pytest.mark.parametrize("items", NEEDS_BODY)
def test_items_that_need_the_body_are_not_answered_from_a_summary(items):
    attributes = attributes_of(items)
    assert not fetch.answerable_from_summary(attributes)
    with pytest.raises(ValueError):
        fetch.fetch_response(1, info_of(PLAIN), attributes, summary=SUMMARIZER.summarize(PLAIN))


def test_a_header_past_the_cap_is_not_summarized():
    filler = b"X-Filler: " + b"x" * 990 + b"\r\n"
    big = filler * (MAX_CACHED_HEADER // len(filler) + 1) + b"\r\nbody\r\n"
    assert SUMMARIZER.summarize(big) is None
    assert SUMMARIZER.summarize(filler * 10 + b"\r\nbody\r\n") is not None


@pytest.mark.parametrize("criteria", [
    b"FROM gray", b"FROM \"M\xc3\xbcller\"", b"TO dave", b"CC klensin", b"BCC audit",
    b"SUBJECT \"\xc3\xbcber stra\xc3\x9fe\"", b"HEADER Message-ID mixed",
    b"HEADER MESSAGE-ID \"\"", b"SENTBEFORE 1-Mar-2026", b"SENTON 2-Mar-2026",
    b"OR FROM anna SUBJECT minutes", b"NOT SUBJECT quarterly", b"UNSEEN FROM example",
])
def test_header_searches_find_the_same_in_the_header_block_alone(criteria):
    query = parse_search(args(criteria))
    assert query.needs_message and not query.needs_body

    def header_block(uid):
        summary = SUMMARIZER.summarize(BY_UID[uid])
        assert summary is not None
        return summary.header
    assert query.run(INFOS, header_block) == query.run(INFOS, BY_UID.__getitem__)


@pytest.mark.parametrize("criteria", [b"BODY minutes", b"TEXT Quarterly",
                                      b"OR FROM anna BODY minutes", b"NOT TEXT x"])
def test_text_searches_need_the_body(criteria):
    assert parse_search(args(criteria)).needs_body


# --- through the Maildir store ------------------------------------------------------------------


def deliver(mailbox: MaildirMailbox, name: str, data: bytes) -> None:
    path = mailbox.root / "new" / name
    path.write_bytes(data)


def test_the_store_keeps_a_summary_when_a_message_is_read(tmp_path):
    first = MaildirMailbox(tmp_path, "alice@example.test", summarizer=SUMMARIZER)
    lf_nested = NESTED.replace(b"\r\n", b"\n")
    deliver(first, "1700000000.M1P1.host", lf_nested)  # LF line ends, as delivery stores them
    deliver(first, "1700000001.M2P1.host", MIXED)
    folder = first.select("INBOX")
    uids = [info.uid for info in folder.messages()]
    assert [folder.summary(uid) for uid in uids] == [None, None]
    assert folder.read(uids[0]) == NESTED
    assert folder.summary(uids[0]) == SUMMARIZER.summarize(NESTED)
    assert folder.summary(uids[1]) is None
    folder.read(uids[1])
    folder.set_flags(uids, ["\\Seen"], FlagMode.ADD)  # renames the files: same bases
    # Another session finds the summaries with the message files gone from where it looks.
    second = MaildirMailbox(tmp_path, "alice@example.test", summarizer=SUMMARIZER)
    other = second.select("INBOX")
    for name in os.listdir(first.root / "cur"):
        os.chmod(first.root / "cur" / name, 0)
        (first.root / "cur" / name).write_bytes(b"Subject: not what was read\r\n\r\n")
    assert other.summary(uids[0]) == SUMMARIZER.summarize(NESTED)
    assert other.summary(uids[1]) == SUMMARIZER.summarize(MIXED)
    first.close()
    second.close()


def test_a_store_without_a_summarizer_keeps_nothing(tmp_path):
    mailbox = MaildirMailbox(tmp_path, "alice@example.test")
    deliver(mailbox, "1700000000.M1P1.host", PLAIN)
    folder = mailbox.select("INBOX")
    uid = folder.messages()[0].uid
    assert folder.read(uid) == PLAIN and folder.summary(uid) is None
    assert not any(name.startswith("mailforge-cache") for name in os.listdir(mailbox.root))


def test_a_fetch_of_new_messages_parses_each_once_and_answers_as_their_bytes_do(
        tmp_path, monkeypatch):
    # A message the cache lacks is read, which summarises it; the FETCH answers from that
    # summary rather than parsing the bytes a second time. A header past the cap cannot be
    # summarised and is answered from its bytes.
    from mailforge.protocols.imap import mime, summary
    from .test_imap_machine import Session
    huge = b"X-Big: " + b"y" * (MAX_CACHED_HEADER + 10) + b"\r\n" + PLAIN
    items = ("(UID ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (From Subject)] "
             "RFC822.SIZE)")
    answers = {}
    parsed: list[int] = []
    counting = _counting(mime.parse_message, parsed)
    for module in (mime, summary, fetch):
        monkeypatch.setattr(module, "parse_message", counting)
    for cached in (False, True):
        root = tmp_path / str(cached)
        mailbox = MaildirMailbox(root, "alice@example.test",
                                 summarizer=SUMMARIZER if cached else None)
        for number, data in enumerate((NESTED, MIXED, huge, EIGHT_BIT)):
            deliver(mailbox, f"170000000{number}.M{number}P1.host", data)
        session = Session(mailbox)
        session.send(b'a LOGIN alice@example.test "secret"\r\nb SELECT INBOX\r\n')
        parsed.clear()
        answers[cached] = session.send(b"c FETCH 1:* " + items.encode() + b"\r\n")
        mailbox.close()
    assert answers[True] == answers[False] and answers[True].endswith(b"c OK FETCH completed\r\n")
    # Each parsed once, to be summarised; the huge one in vain, and once more for its answer
    # (from the bytes read for the summary: read once).
    assert parsed == [len(NESTED), len(MIXED), len(huge), len(huge), len(EIGHT_BIT)]


def _counting(parse, calls):
    """`parse` (mime.parse_message), keeping the size of each message it parses whole."""
    def counted(data, shallow=False):
        if not shallow:
            calls.append(len(data))
        return parse(data, shallow)
    return counted
