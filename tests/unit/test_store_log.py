"""The per-folder change log: torn tails, rotation under a reader, version 1 snapshots, and
the fallback scan for changes the log does not know of."""

import os
import time

import msgpack
import pytest

from mailforge.store import folderdir, folderlog, folderstate
from mailforge.store.api import DELETED, SEEN, FlagMode, NewMessage
from mailforge.store.filenames import base_of
from mailforge.store.folderlog import LOG_NAME, Kind, LogFile, decode, encode
from mailforge.store.folders import MaildirMailbox
from mailforge.store.pop3box import MaildirMaildrop
from mailforge.store.uidindex import INDEX_NAME, UidIndex, decode as decode_index

ADDRESS = "user@example.test"


@pytest.fixture(autouse=True)
def no_slack(monkeypatch):
    """Directory mtimes tick finely enough that any change moves them: what the fallback finds
    does not depend on when it last ran."""
    monkeypatch.setattr(folderdir, "MTIME_SLACK_NS", 0)


def fresh_process():
    """Forget what this process loaded, as another worker process would start."""
    folderstate.forget_states()


def session(tmp_path, read_only=False):
    return MaildirMailbox(tmp_path, ADDRESS).select("INBOX", read_only=read_only)


def test_records_round_trip_and_a_torn_or_damaged_frame_ends_them():
    records = [[Kind.ADD, 1, 1, "cur", "a,S=1:2,", 1.5, 2], [Kind.EXPUNGE, 2, 1]]
    data = encode(records)
    assert decode(data) == (records, len(data))
    for cut in range(1, len(data) - len(encode(records[:1]))):
        assert decode(data[:-cut]) == (records[:1], len(encode(records[:1])))
    damaged = bytearray(data)
    damaged[-1] ^= 0xFF  # CRC mismatch in the last frame
    assert decode(bytes(damaged))[0] == records[:1]


def test_a_torn_tail_is_ignored_by_readers_and_cut_away_by_the_next_writer(tmp_path, caplog):
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    mailbox.append("INBOX", b"Subject: 1\n\n")
    reader = session(tmp_path)
    with open(tmp_path / ADDRESS.split("@")[1] / "user" / "Maildir" / LOG_NAME, "ab") as log:
        log.write(encode([[Kind.EXPUNGE, 99, 1]])[:-3])  # a crash in the middle of a write()
    assert not reader.refresh() and [i.uid for i in reader.messages()] == [1]
    with caplog.at_level("WARNING", logger="mailforge.store"):
        assert mailbox.append("INBOX", b"Subject: 2\n\n").uids == (2,)
    assert "torn" in caplog.text
    assert [i.uid for i in reader.refresh().added] == [2]
    fresh_process()
    assert [i.uid for i in session(tmp_path).messages()] == [1, 2]


def test_rotation_while_a_reader_is_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(folderlog, "LOG_MAX_RECORDS", 12)
    writer = session(tmp_path)
    for i in range(3):
        MaildirMailbox(tmp_path, ADDRESS).append("INBOX", f"Subject: {i}\n\n".encode())
    writer.refresh()
    fresh_process()
    reader = session(tmp_path, read_only=True)  # its own state, as in another process
    root = MaildirMailbox(tmp_path, ADDRESS).root
    generation = LogFile.open(root).generation
    fresh_process()
    other = session(tmp_path)
    for _ in range(4):  # more records than one log may hold: a new generation starts
        other.set_flags([1, 2], [SEEN], FlagMode.ADD)
        other.set_flags([1, 2], [SEEN], FlagMode.REMOVE)
    other.set_flags([3], [SEEN], FlagMode.ADD)
    assert LogFile.open(root).generation > generation
    changes = reader.refresh()
    assert [(i.uid, SEEN in i.flags) for i in changes.flags] == [(3, True)]
    assert [(i.uid, SEEN in i.flags) for i in reader.messages()] == [
        (1, False), (2, False), (3, True)]


def test_a_version_1_snapshot_is_converted_keeping_uids(tmp_path):
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    for i in range(3):
        mailbox.append("INBOX", f"Subject: {i}\n\n".encode(), [SEEN] if i == 1 else [])
    root = mailbox.root
    names = {base_of(n): n for n in os.listdir(root / "cur")}
    uids = {base: uid for uid, base in enumerate(sorted(names), start=40)}
    uids["1600000000.Mgone.host"] = 30  # a message expunged before the conversion
    (root / INDEX_NAME).write_bytes(msgpack.packb({
        "version": 1, "uidvalidity": 1234, "uidnext": 50, "first_recent": 50, "uids": uids}))
    os.unlink(root / LOG_NAME)
    fresh_process()
    folder = session(tmp_path)
    assert folder.uidvalidity == 1234 and folder.uidnext == 50
    assert [(i.uid, SEEN in i.flags) for i in folder.messages()] == sorted(
        (uids[base], name.endswith("S")) for base, name in names.items())
    assert set(folderstate.inspect(root)[0].uids.values()) == {40, 41, 42}
    snapshot = decode_index((root / INDEX_NAME).read_bytes())
    assert snapshot.generation >= 1 and LogFile.open(root).generation == snapshot.generation


def test_a_rename_not_in_the_log_is_found_by_the_fallback(tmp_path):
    """A crash between a message's rename and its log record, or mutt renaming a file."""
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    mailbox.append("INBOX", b"Subject: 1\n\n")
    folder = session(tmp_path)
    cur = mailbox.root / "cur"
    (name,) = os.listdir(cur)
    os.rename(cur / name, cur / (name + "S"))  # as mutt marks it seen
    (cur.parent / "tmp" / "crashed").write_bytes(b"Subject: 2\n\n")
    os.rename(cur.parent / "tmp" / "crashed", cur / "1700000000.Mcrashed.host,S=12:2,")
    changes = folder.refresh()
    assert [(i.uid, i.flags) for i in changes.flags] == [(1, frozenset({SEEN}))]
    assert [i.uid for i in changes.added] == [2]
    fresh_process()
    assert [i.uid for i in session(tmp_path).messages()] == [1, 2]


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_a_lost_log_keeps_uidvalidity_and_never_hands_a_uid_out_twice(tmp_path, caplog, damage):
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    first = mailbox.append("INBOX", b"Subject: 1\n\n")
    second = mailbox.append("INBOX", b"Subject: 2\n\n")
    os.unlink(mailbox.root / LOG_NAME)
    if damage == "garbage":
        (mailbox.root / LOG_NAME).write_bytes(b"\x00garbage" * 10)
    fresh_process()
    with caplog.at_level("WARNING", logger="mailforge.store"):
        folder = session(tmp_path)
    assert "change log" in caplog.text
    assert folder.uidvalidity == first.uidvalidity
    # The snapshot knew neither message: both get UIDs above any the lost log can have given.
    assert all(i.uid > second.uids[0] for i in folder.messages())
    assert len(folder.messages()) == 2


def test_pop3_deletions_reach_imap_sessions_through_the_log(tmp_path, monkeypatch):
    # Coarse mtimes: the periodic look at cur/ is not due again within this test.
    monkeypatch.setattr(folderdir, "MTIME_SLACK_NS", 60 * 10**9)

    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    for i in range(2):
        mailbox.append("INBOX", f"Subject: {i}\n\n".encode())
    folder = session(tmp_path)
    drop = MaildirMaildrop.open(mailbox.root)
    doomed = folderstate.inspect(mailbox.root)[0].uids[base_of(drop.messages[0].name)]
    assert drop.delete([0]) == 0
    drop.close()
    scans = []
    real = folderdir.FolderDir._scan
    monkeypatch.setattr(folderdir.FolderDir, "_scan",
                        lambda self, *a: scans.append(1) or real(self, *a))
    assert folder.refresh().expunged == (doomed,) and scans == []


def test_expunge_and_flags_from_the_index_without_touching_files(tmp_path, monkeypatch):
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    mailbox.append("INBOX", b"Subject: 1\n\nbody\n", [DELETED], internal_date=1700000000.0)
    folder = session(tmp_path)
    monkeypatch.setattr(folderdir.os, "stat", None)  # FETCH FLAGS/INTERNALDATE/SIZE: no stat
    (info,) = folder.messages()
    assert (info.internal_date, info.size) == (1700000000.0, len(b"Subject: 1\r\n\r\nbody\r\n"))
    monkeypatch.undo()
    assert folder.expunge() == [1]


def test_index_counters_never_go_backwards():
    index = UidIndex(7)
    index.add("cur", "a:2,", 1.0, 1)
    added = index.modseq
    index.apply([Kind.RECENT, added - 1, 1])  # an old claim replayed after a newer one
    assert index.modseq == added and index.first_recent == 1
    assert index.claim_recent()[1] == added  # \Recent is no message's metadata
    index.apply([Kind.RECENT, added, 1])
    assert index.first_recent == 2 and index.modseq == added
    index.apply([Kind.RECENT, added + 1, 2])  # an older log's claim raised the MODSEQ
    assert index.first_recent == 2 and index.modseq == added + 1


def test_append_syncs_the_message_cur_and_the_log_once_each_and_rewrites_no_index(
        tmp_path, monkeypatch):
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    mailbox.append("INBOX", b"Subject: 0\n\n")  # the first change also writes the keywords
    snapshot = os.stat(mailbox.root / INDEX_NAME)
    synced = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda fd, real=real, name=name: synced.append(
            (name, os.readlink(f"/proc/self/fd/{fd}"))) or real(fd))
    mailbox.append("INBOX", b"Subject: 1\n\n")
    where = [(call, os.path.relpath(path, mailbox.root).partition("/")[0])
             for call, path in synced]
    assert where == [("fdatasync", "tmp"), ("fsync", "cur"), ("fdatasync", LOG_NAME)]
    assert os.stat(mailbox.root / INDEX_NAME).st_ino == snapshot.st_ino


def test_under_load_the_fallback_scan_runs_at_most_once_per_slack(tmp_path, monkeypatch):
    monkeypatch.setattr(folderdir, "MTIME_SLACK_NS", 1_100_000_000)
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    for i in range(20):
        mailbox.append("INBOX", f"Subject: {i}\n\n".encode())
    watcher, writer = session(tmp_path), session(tmp_path)
    scans = []
    real = folderdir.FolderDir._scan
    monkeypatch.setattr(folderdir.FolderDir, "_scan",
                        lambda self, *a: scans.append(1) or real(self, *a))
    started = time.monotonic()
    for round_ in range(60):
        uid, mode = round_ % 20 + 1, FlagMode.REMOVE if round_ // 20 % 2 else FlagMode.ADD
        writer.set_flags([uid], [SEEN], mode)
        assert [i.uid for i in watcher.refresh().flags] == [uid]
    elapsed = time.monotonic() - started
    assert len(scans) <= 2 + elapsed / 1.1


def test_a_damaged_snapshot_is_salvaged_with_the_records_of_its_log(tmp_path, caplog):
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    first = mailbox.append("INBOX", b"Subject: 1\n\n")
    mailbox.append("INBOX", b"Subject: 2\n\n")  # both only in the log so far
    raw = msgpack.unpackb((mailbox.root / INDEX_NAME).read_bytes())
    raw["first_recent"] = -1
    (mailbox.root / INDEX_NAME).write_bytes(msgpack.packb(raw))
    fresh_process()
    with caplog.at_level("WARNING", logger="mailforge.store"):
        folder = session(tmp_path)
    assert "repaired keeping UIDVALIDITY" in caplog.text
    assert folder.uidvalidity == first.uidvalidity
    assert [i.uid for i in folder.messages()] == [1, 2] and folder.uidnext == 3


def test_a_read_write_view_claims_what_its_session_stores_in_the_same_change_set(
        tmp_path, monkeypatch):
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    mailbox.append("INBOX", b"Subject: delivered\n\n")  # unclaimed: no session saw it yet
    view = mailbox.select("INBOX")
    writes = []
    real_append = LogFile.append

    def append(log, records, durable):
        # cur/'s new mtime rides along in CUR records (and no_slack makes a refresh list
        # cur/ and record one): left out here.
        kinds = [record[0] for record in records if record[0] != Kind.CUR]
        if kinds:
            writes.append(kinds)
        real_append(log, records, durable)

    monkeypatch.setattr(LogFile, "append", append)

    def stored(selected):
        writes.clear()
        mailbox.append_many("INBOX", [NewMessage(b"Subject: mine\n\n", frozenset(), None)],
                            selected)
        return view.refresh(), writes[:]

    changes, written = stored(view)
    assert written == [[Kind.ADD, Kind.RECENT]]  # one change set; the refresh wrote nothing
    assert [info.recent for info in changes.added] == [True]
    fresh_process()
    assert MaildirMailbox(tmp_path, ADDRESS).status("INBOX").recent == 0
    # Without the view (another session's APPEND, or EXAMINE's), the claim comes at the refresh.
    changes, written = stored(None)
    assert written == [[Kind.ADD], [Kind.RECENT]]
    assert [info.recent for info in changes.added] == [True]
    examined = MaildirMailbox(tmp_path, ADDRESS).select("INBOX", read_only=True)
    writes.clear()
    mailbox.append_many("INBOX", [NewMessage(b"Subject: 3\n\n", frozenset(), None)], examined)
    assert writes == [[Kind.ADD]]
