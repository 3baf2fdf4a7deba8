"""Opening a big folder is cheap: a process that has the folder loaded (or had it lately)
reuses its index and MessageInfos, a new process lists no directory once a listing has
vouched for cur/, and the snapshot's message table is decoded in bulk."""

import os

import msgpack
import pytest

from mailforge.store import folderdir, folderstate, uidindex
from mailforge.store.api import SEEN
from mailforge.store.folders import MaildirMailbox
from mailforge.store.uidindex import INDEX_NAME, UidIndex, decode, encode, salvage

ADDRESS = "user@example.test"
# Longer than the slack folderdir waits out: its listings of cur/ are final (to be trusted).
SLACK_NS = 50_000_000


@pytest.fixture(autouse=True)
def short_slack(monkeypatch):
    monkeypatch.setattr(folderdir, "MTIME_SLACK_NS", SLACK_NS)
    folderstate.forget_states()


def filled(tmp_path, count=5):
    """A mailbox whose INBOX holds `count` messages, cur/'s mtime older than the slack."""
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    for i in range(count):
        mailbox.append("INBOX", f"Subject: {i}\n\n".encode(), [SEEN] if i % 2 else [])
    cur = mailbox.root / "cur"
    old = os.stat(cur).st_mtime - 10
    os.utime(cur, (old, old))
    return mailbox


def select(tmp_path, read_only=True):
    return MaildirMailbox(tmp_path, ADDRESS).select("INBOX", read_only=read_only)


def listings_of_cur(monkeypatch) -> list[str]:
    listed: list[str] = []
    real = os.listdir

    def counting(path):
        if os.path.basename(os.fspath(path)) == "cur":
            listed.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(folderdir.os, "listdir", counting)
    return listed


def test_a_new_process_lists_no_cur_once_a_final_listing_vouched_for_it(tmp_path, monkeypatch):
    filled(tmp_path)
    select(tmp_path)  # its cur/ mtime is old: this listing is final, and says so in the log
    listed = listings_of_cur(monkeypatch)
    for _ in range(3):
        folderstate.forget_states()  # as another worker process would start
        assert [i.uid for i in select(tmp_path).messages()] == [1, 2, 3, 4, 5]
    assert listed == []


def test_a_hand_rename_moves_the_mtime_and_is_still_found(tmp_path, monkeypatch):
    mailbox = filled(tmp_path)
    select(tmp_path)
    cur = mailbox.root / "cur"
    name = next(n for n in sorted(os.listdir(cur)) if n.endswith(":2,"))
    os.rename(cur / name, cur / (name + "S"))  # as mutt marks it seen
    listed = listings_of_cur(monkeypatch)
    folderstate.forget_states()
    assert sum(SEEN in info.flags for info in select(tmp_path).messages()) == 3
    assert listed


def test_sessions_share_the_process_state_and_it_outlives_them(tmp_path, monkeypatch):
    filled(tmp_path)
    select(tmp_path, read_only=False).close()  # claims \Recent: no session's view has it
    first = select(tmp_path)
    reads = []
    real_read = uidindex.read
    monkeypatch.setattr(folderstate, "read", lambda path: reads.append(path) or real_read(path))
    second = select(tmp_path)
    assert all(a is b for a, b in zip(first.messages(), second.messages(), strict=True))
    first.close()
    second.close()
    del first, second
    assert [i.uid for i in select(tmp_path).messages()] == [1, 2, 3, 4, 5]
    assert reads == []  # neither the second session nor the one after them read the snapshot


def test_the_kept_states_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(folderstate, "KEPT_STATES", 2)
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    for name in ("A", "B", "C"):
        mailbox.create(name)
        mailbox.select(name)
    assert [path.name for path in folderstate._kept] == [".B", ".C"]


def test_the_message_table_decodes_in_bulk_as_row_by_row():
    index = UidIndex(7, uidnext=10, modseq=9)
    for uid, name in ((3, "1.M3.h,S=5:2,S"), (9, "2.M9.h,S=7:2,"), (5, "3.M5.h,S=1")):
        index.add("cur" if uid != 5 else "new", name, 1700000000.5, uid * 10, uid)
    raw = msgpack.unpackb(encode(index))
    raw["messages"].reverse()  # out of UID order, as a hand-edited table might be
    decoded = decode(msgpack.packb(raw))
    assert list(decoded.entries) == [3, 5, 9]
    assert decoded.entries == index.entries and decoded.uids == index.uids
    for bad in (True, ["cur"]):  # one bad row (a bool UID, a list as sub): the others stay
        row = list(raw["messages"][0])
        row[0 if bad is True else 1] = bad
        damaged = dict(raw, messages=[row, *raw["messages"][1:]])
        salvaged, problems = salvage(msgpack.packb(damaged))
        assert list(salvaged.entries) == [3, 9]
        assert len(problems) == 1 and problems[0].startswith("bad entry [")


def test_a_listing_that_vouched_is_kept_in_the_snapshot(tmp_path):
    mailbox = filled(tmp_path)
    select(tmp_path)
    state = folderstate.shared_state(mailbox.root, mailbox.root)
    with state.writing():
        state.rotate()
    raw = msgpack.unpackb((mailbox.root / INDEX_NAME).read_bytes())
    assert raw["cur_final"] is True
    assert decode((mailbox.root / INDEX_NAME).read_bytes()).cur_final
