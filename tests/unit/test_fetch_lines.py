"""speedups.render_fetch (both implementations, through fetch.fetch_plan) gives the bytes that
fetch_response gives message by message, for every item list a plan takes; a message the
summary cache lacks goes to the fallback, whose None counts it as gone."""

from __future__ import annotations

import time

import pytest

from mailforge.protocols.imap import fetch
from mailforge.protocols.imap.summary import SUMMARIZER
from mailforge.store.api import MessageInfo

from .imap_messages import MIXED, NESTED, PLAIN
from .test_imap_fetch_summary import ANSWERABLE, NEEDS_BODY, attributes_of

INFOS = [
    MessageInfo(uid=7, flags=frozenset({"\\Seen", "$Label"}), internal_date=1_700_000_000.0,
                size=len(PLAIN), recent=True, modseq=12),
    MessageInfo(uid=9, flags=frozenset(), internal_date=0.5, size=len(MIXED)),
    MessageInfo(uid=40, flags=frozenset({"\\Deleted"}), internal_date=253_402_300_799.0,
                size=len(NESTED), recent=True, modseq=3),
]
SUMMARIES = {7: SUMMARIZER.summarize(PLAIN), 9: SUMMARIZER.summarize(MIXED),
             40: SUMMARIZER.summarize(NESTED)}
TARGETS = list(zip((1, 2, 5), INFOS))
INFO_ONLY = ["FLAGS", "UID", "(UID FLAGS)", "(FLAGS INTERNALDATE RFC822.SIZE)", "FAST"]
# BODY[HEADER] without PEEK sets \Seen: that FETCH goes message by message.
SETS_SEEN = [items for items in ANSWERABLE if fetch.sets_seen(attributes_of(items))]
PLANNED = [items for items in ANSWERABLE if items not in SETS_SEEN] + INFO_ONLY


def expected(items: str, uid: bool, modseq: bool, recent: bool) -> bytes:
    attributes = attributes_of(items)
    return b"".join(fetch.fetch_response(seq, info, attributes, summary=SUMMARIES[info.uid],
                                         uid=uid, modseq=modseq, recent=recent)
                    for seq, info in TARGETS)


def rendered(impl, items: str, uid: bool, modseq: bool, recent: bool,
             summaries: dict | None = None, fallback=None) -> tuple[bytes, int]:
    plan = fetch.fetch_plan(attributes_of(items), uid=uid, modseq=modseq)
    assert plan is not None
    store = SUMMARIES if summaries is None else summaries
    summary_of = store.get if fetch.plan_needs_summary(plan) else None
    return impl.fetchlines.render_fetch(TARGETS, plan, summary_of, fallback,
                                        fetch.flags_item, recent)


@pytest.mark.parametrize("items", PLANNED)
@pytest.mark.parametrize("uid, modseq, recent", [(False, False, True), (True, True, False),
                                                 (True, False, True)])
def test_a_plan_renders_what_fetch_response_renders(impl, items, uid, modseq, recent):
    assert rendered(impl, items, uid, modseq, recent) == (expected(items, uid, modseq, recent), 0)


@pytest.mark.parametrize("items", NEEDS_BODY + SETS_SEEN)
def test_items_that_need_the_message_or_set_seen_have_no_plan(items):
    assert fetch.fetch_plan(attributes_of(items), uid=False, modseq=False) is None


def test_a_message_without_summary_goes_to_the_fallback(impl):
    asked = []

    def fallback(seq: int, info: MessageInfo) -> bytes | None:
        asked.append(seq)
        return None if info.uid == 40 else b"* %d FETCH (READ)\r\n" % seq

    lines, gone = rendered(impl, "ENVELOPE", False, False, True, summaries={7: SUMMARIES[7]},
                           fallback=fallback)
    assert asked == [2, 5] and gone == 1
    assert lines == (b"* 1 FETCH (ENVELOPE " + SUMMARIES[7].envelope + b")\r\n"
                     b"* 2 FETCH (READ)\r\n")


@pytest.mark.parametrize("stamp", [0, 0.999, 837_596_665.0, 1_700_000_000.25, 253_402_300_799.0])
def test_internaldate_is_formatted_as_time_gmtime_says(impl, stamp):
    moment = time.gmtime(stamp)
    text = time.strftime("%d-%b-%Y %H:%M:%S +0000", moment).lstrip("0")
    assert impl.fetchlines.format_date_time(stamp) == b'"%s"' % text.rjust(26).encode()


def test_a_date_beyond_year_9999_is_refused(impl):
    with pytest.raises((OverflowError, OSError, ValueError)):
        impl.fetchlines.format_date_time(1e20)
