"""MODSEQs in the Maildir store (RFC 7162): per message and per folder, and the expunged UIDs
remembered for QRESYNC across log rotations, pruned to a bound, and across a fresh process."""

import msgpack
import pytest

from mailforge.store import folderdir, folderlog, folderstate, uidindex
from mailforge.store.api import DELETED, SEEN, FlagMode
from mailforge.store.folderlog import Kind
from mailforge.store.folders import MaildirMailbox
from mailforge.store.uidindex import UidIndex, decode, encode

ADDRESS = "user@example.test"


@pytest.fixture(autouse=True)
def no_slack(monkeypatch):
    monkeypatch.setattr(folderdir, "MTIME_SLACK_NS", 0)


def fresh_process():
    folderstate.forget_states()


def filled(tmp_path, count):
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    for n in range(count):
        mailbox.append("INBOX", b"Subject: %d\n\nbody\n" % n)
    return mailbox


def expunge(folder, uids):
    folder.set_flags(uids, [DELETED], FlagMode.ADD)
    return folder.expunge(uids)


def test_a_flag_change_raises_the_message_and_folder_modseq(tmp_path):
    mailbox = filled(tmp_path, 3)
    folder = mailbox.select("INBOX")
    before = folder.highestmodseq
    assert [info.modseq for info in folder.messages()] == sorted(
        info.modseq for info in folder.messages())
    [changed] = folder.set_flags([2], [SEEN], FlagMode.ADD)
    assert changed.modseq > before
    assert folder.set_flags([2], [SEEN], FlagMode.ADD)[0].modseq == changed.modseq  # no change
    other = mailbox.select("INBOX")
    assert other.highestmodseq >= changed.modseq
    assert mailbox.status("INBOX").highestmodseq == other.highestmodseq


def test_unchanged_since_leaves_out_messages_changed_later(tmp_path):
    mailbox = filled(tmp_path, 2)
    mine, theirs = mailbox.select("INBOX"), mailbox.select("INBOX")
    known = mine.highestmodseq
    theirs.set_flags([1], ["$Work"], FlagMode.ADD)
    stored = mine.set_flags([1, 2], [SEEN], FlagMode.ADD, unchanged_since=known)
    assert [info.uid for info in stored] == [2]


def test_expunged_uids_are_remembered_across_rotation_and_a_new_process(tmp_path, monkeypatch):
    monkeypatch.setattr(folderlog, "LOG_MAX_RECORDS", 10)
    mailbox = filled(tmp_path, 12)
    folder = mailbox.select("INBOX")
    start = folder.highestmodseq
    assert expunge(folder, [3, 5]) == [3, 5]
    middle = mailbox.select("INBOX").highestmodseq
    expunge(folder, [8])
    for n in range(12):  # rotates the log more than once
        mailbox.append("INBOX", b"Subject: more %d\n\n" % n)
    fresh_process()
    later = MaildirMailbox(tmp_path, ADDRESS).select("INBOX")
    assert later.expunged_since(start) == [3, 5, 8]
    assert later.expunged_since(middle) == [8]
    assert later.expunged_since(later.highestmodseq) == []


def test_the_memory_is_pruned_oldest_first_and_says_how_far_it_reaches(monkeypatch):
    monkeypatch.setattr(uidindex, "EXPUNGED_MEMORY", 3)
    index = UidIndex(1)
    for uid in range(1, 6):
        index.add("cur", f"m{uid}:2,", 0.0, 1)
    before_expunges = index.modseq
    for uid in range(1, 6):
        index.expunge(uid)
    index.prune_expunged()
    assert index.expunged_since(index.modseq - 3) == [3, 4, 5]
    assert index.expunged_since(before_expunges) is None  # forgotten: the caller resyncs in full
    again = decode(encode(index))
    assert (again.expunged, again.expunged_floor) == (index.expunged, index.expunged_floor)


def test_a_snapshot_without_the_memory_knows_nothing_below_its_modseq():
    index = UidIndex(1)
    index.apply([Kind.ADD, 7, 1, "cur", "a:2,", 0.0, 1])
    data = msgpack.unpackb(encode(index))
    del data["expunged"], data["expunged_floor"]
    old = decode(msgpack.packb(data))
    assert old.expunged_since(6) is None and old.expunged_since(7) == []


def test_modseq_survives_store_repair(tmp_path):
    mailbox = filled(tmp_path, 3)
    folder = mailbox.select("INBOX")
    before = folder.highestmodseq
    expunge(folder, [2])
    highest = mailbox.select("INBOX").highestmodseq
    fresh_process()
    path = next(tmp_path.rglob("Maildir"))
    folderdir.FolderDir(path, path).rebuild()
    fresh_process()
    repaired = MaildirMailbox(tmp_path, ADDRESS).select("INBOX")
    assert repaired.highestmodseq >= highest
    assert repaired.expunged_since(before) == [2]
