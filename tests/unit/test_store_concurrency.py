"""Several sessions, processes, POP3 and delivery on one mailbox: unique UIDs, nothing lost."""

import multiprocessing
import os
import random
import threading

from mailforge.store import uidindex
from mailforge.store.api import DELETED, FLAGGED, SEEN, FlagMode
from mailforge.store.folders import MaildirMailbox
from mailforge.store.pop3box import MaildirMaildrop

ADDRESS = "user@example.test"
PER_WORKER = 15


def append_many(store_dir, tag):
    mailbox = MaildirMailbox(store_dir, ADDRESS)
    return [mailbox.append("INBOX", f"Subject: {tag} {i}\n\n".encode()).uids[0]
            for i in range(PER_WORKER)]


def _process_main(store_dir, tag, queue):
    queue.put(append_many(store_dir, tag))


def test_threads_appending_get_unique_uids(tmp_path):
    MaildirMailbox(tmp_path, ADDRESS)
    results = []
    threads = [threading.Thread(target=lambda t=t: results.extend(append_many(tmp_path, t)))
               for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == list(range(1, 4 * PER_WORKER + 1))
    folder = MaildirMailbox(tmp_path, ADDRESS).select("INBOX")
    assert [i.uid for i in folder.messages()] == sorted(results)


def test_processes_appending_get_unique_uids(tmp_path):
    MaildirMailbox(tmp_path, ADDRESS)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    processes = [context.Process(target=_process_main, args=(tmp_path, p, queue))
                 for p in range(3)]
    for process in processes:
        process.start()
    results = [uid for _ in processes for uid in queue.get(timeout=120)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert sorted(results) == list(range(1, 3 * PER_WORKER + 1))


def test_refresh_during_deliveries_and_flag_changes_loses_nothing(tmp_path):
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    watcher = mailbox.select("INBOX")
    other = MaildirMailbox(tmp_path, ADDRESS).select("INBOX")
    seen = {}
    stop = threading.Event()

    def deliver():
        for i in range(40):
            body, name = f"Subject: {i}\n\n".encode(), f"17000{i:05d}.Q{i}.host"
            (mailbox.root / "tmp" / name).write_bytes(body)  # as delivery: tmp/, then new/
            os.rename(mailbox.root / "tmp" / name, mailbox.root / "new" / f"{name},S={len(body)}")
        stop.set()

    def flagger():
        while not stop.is_set():
            changes = other.refresh()
            other.set_flags([i.uid for i in changes.added], [SEEN], FlagMode.ADD)

    threads = [threading.Thread(target=deliver), threading.Thread(target=flagger)]
    for thread in threads:
        thread.start()
    while not stop.is_set():
        for info in watcher.refresh().added:
            seen[info.uid] = info
    for thread in threads:
        thread.join(timeout=120)
    other.refresh()
    other.set_flags([i.uid for i in other.messages()], [SEEN], FlagMode.ADD)
    for info in watcher.refresh().added:
        seen[info.uid] = info
    assert sorted(seen) == list(range(1, 41))
    assert all(i.flags == {SEEN} for i in MaildirMailbox(tmp_path, ADDRESS)
               .select("INBOX").messages())
    # Exactly one of the two read-write sessions got each message as \Recent.
    assert sum(i.recent for i in watcher.messages()) + sum(i.recent for i in other.messages()) == 40


def test_pop3_snapshot_then_select_and_flags_kept_by_pop3(tmp_path):
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    for i in range(3):
        mailbox.append("INBOX", f"Subject: {i}\n\nbody\n".encode(), [FLAGGED] if i == 1 else [])
    (mailbox.root / "new" / "1700000009.Qz.host,S=3").write_bytes(b"z\n\n")
    drop = MaildirMaildrop.for_user(tmp_path, ADDRESS)
    folder = mailbox.select("INBOX")
    assert len(drop.messages) == len(folder.messages()) == 4
    assert [i.flags for i in folder.messages()][:3] == [frozenset(), {FLAGGED}, frozenset()]
    assert sorted(i.size for i in folder.messages()) == sorted(m.size for m in drop.messages)
    drop.delete([0, 3])
    drop.close()
    assert len(folder.refresh().expunged) == 2 and len(folder.messages()) == 2
    assert len(os.listdir(mailbox.root / "cur")) == 2


def test_a_view_takes_in_another_sessions_changes_as_a_fresh_one_sees_them(tmp_path,
                                                                          monkeypatch):
    """A selected folder refreshing after another session's appends, flag changes and
    expunges (taken in one by one from the index's touched UIDs) shows the messages and flags
    a view opened afresh shows, and reports exactly the difference as Changes; also when more
    changes came between two refreshes than the index remembers."""
    monkeypatch.setattr(uidindex, "TOUCHED_MEMORY", 16)
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    for n in range(60):
        mailbox.append("INBOX", f"Subject: {n}\n\n".encode())
    watcher = mailbox.select("INBOX")
    other = MaildirMailbox(tmp_path, ADDRESS).select("INBOX")
    rng = random.Random(7)
    for _ in range(80):
        before = {info.uid for info in watcher.messages()}
        for _ in range(rng.choice((1, 2, 3, 20))):
            other.refresh()
            uids = [info.uid for info in other.messages()]
            action = rng.choice(("append", "flag", "flag", "expunge"))
            if action == "append" or not uids:
                mailbox.append("INBOX", b"Subject: more\n\nbody\n")
            elif action == "flag":
                other.set_flags(rng.sample(uids, min(3, len(uids))),
                                [rng.choice((SEEN, FLAGGED, "$Label"))], rng.choice(list(FlagMode)))
            else:
                doomed = rng.sample(uids, min(2, len(uids)))
                other.set_flags(doomed, [DELETED], FlagMode.ADD)
                other.expunge(doomed)
        changes = watcher.refresh()
        fresh = MaildirMailbox(tmp_path, ADDRESS).select("INBOX", read_only=True)
        assert [(i.uid, i.flags) for i in watcher.messages()] == \
            [(i.uid, i.flags) for i in fresh.messages()]
        after = {info.uid for info in watcher.messages()}
        assert set(changes.expunged) == before - after
        assert {info.uid for info in changes.added} == after - before
