import asyncio
import concurrent.futures
import errno
import fcntl
import logging
import os
import re
import shutil
import time

import pytest

from mailforge.queue import spool as spool_module

from mailforge.auth.accounts import Accounts
from mailforge.auth.api import AccountsUnavailable
from mailforge.config import Config
from mailforge.queue import commit, delivery, dsn, retry
from mailforge.queue import entry as queue_entry
from mailforge.queue.commit import SYNC_MODES
from mailforge.queue.delivery import DeliveryAgent
from mailforge.queue.envelope import Envelope, decode
from mailforge.queue.notices import notice_id
from mailforge.queue.spool import Spool, queue_length
from mailforge.auth.sql.directory import Directory
from mailforge.store.maildir import ensure_maildir, mailbox_path

@pytest.fixture(autouse=True)
def messages_in_files_of_their_own(monkeypatch):
    """These tests are about per-message queue files; test_segment.py covers the rest."""
    monkeypatch.setattr(spool_module, "SPILL_SIZE", 0)


NOW = 1_700_000_000.0


@pytest.fixture(autouse=True)
def no_jitter(monkeypatch):
    """Exact retry times: these tests are about the schedule, not its spread."""
    monkeypatch.setattr(retry, "JITTER", 0.0)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def config(tmp_path):
    config = Config()
    config.path = tmp_path / "mailforge.toml"
    return config


@pytest.fixture(scope="module")
def accounts_template(tmp_path_factory):
    """Built once: password hashing is deliberately slow."""
    path = tmp_path_factory.mktemp("accounts") / "accounts.sqlite3"
    with Accounts(path, create=True) as accounts:
        accounts.directory.domain_add("example.test")
        for user in ("bob", "carol", "dave"):
            accounts.directory.user_add(f"{user}@example.test", "secret")
        accounts.directory.user_disable("dave@example.test")
        accounts.directory.alias_add("team@example.test", "bob@example.test")
        accounts.directory.alias_add("team@example.test", "carol@example.test")
    return path


@pytest.fixture
def accounts(config, accounts_template):
    shutil.copyfile(accounts_template, config.accounts_db)
    with Accounts(config.accounts_db) as accounts:
        yield accounts


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def agent(config, accounts, clock):
    return DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, clock=clock)


def enqueue(config, message: bytes, recipients: list[str], sender="alice@example.test") -> str:
    async def main():
        with concurrent.futures.ThreadPoolExecutor(2) as executor:
            spool = Spool(config.queue_dir, executor)
            file = spool.create(sender, recipients)
            file.write(message)
            await file.commit(Envelope("", sender, recipients, NOW, "192.0.2.1", "client"))
            await spool.close()
            return file.id

    return asyncio.run(main())


def delivered(config, address) -> list[bytes]:
    new = mailbox_path(config.store_dir, address) / "new"
    if not new.exists():
        return []
    return [(new / name).read_bytes() for name in sorted(os.listdir(new))]


def test_crlf_message_is_delivered_with_lf_and_two_headers(config, agent, caplog):
    entry_id = enqueue(config, b"Subject: hi\r\n\r\nline 1\r\nlone\rCR\r\n", ["bob@example.test"])
    with caplog.at_level("INFO", logger="mailforge.delivery"):
        assert agent.step() == 1
    expected = (b"Return-Path: <alice@example.test>\nDelivered-To: bob@example.test\n"
                b"Subject: hi\n\nline 1\nlone\rCR\n")
    assert delivered(config, "bob@example.test") == [expected]
    (name,) = os.listdir(mailbox_path(config.store_dir, "bob@example.test") / "new")
    assert re.fullmatch(rf"\d+\.Q{entry_id}M[0-9a-f]{{8}}\.[^/:]+,S={len(expected)}", name)
    assert os.listdir(mailbox_path(config.store_dir, "bob@example.test") / "tmp") == []
    assert queue_length(config.queue_dir) == 0
    assert f"id={entry_id} from=<alice@example.test> to=<bob@example.test>" in caplog.text


def test_null_sender_and_a_cr_at_a_chunk_end(config, agent, monkeypatch):
    monkeypatch.setattr(queue_entry, "READ_CHUNK", 4)
    enqueue(config, b"abc\r\ndefgh\r\r\n\r\n", ["bob@example.test"], sender="")
    agent.step()
    assert delivered(config, "bob@example.test") == [
        b"Return-Path: <>\nDelivered-To: bob@example.test\nabc\ndefgh\r\n\n"]


def test_alias_and_direct_recipient_get_one_copy_per_mailbox(config, agent):
    enqueue(config, b"x\r\n", ["team@example.test", "bob@example.test"])
    agent.step()
    assert delivered(config, "bob@example.test") == [
        b"Return-Path: <alice@example.test>\nDelivered-To: team@example.test\nx\n"]
    assert len(delivered(config, "carol@example.test")) == 1


@pytest.mark.parametrize("rcpt, status", [("nobody@example.test", "5.1.1"),
                                          ("dave@example.test", "5.2.1")])
def test_undeliverable_recipients_bounce_and_an_undeliverable_bounce_goes_to_badmail(
        config, agent, rcpt, status):
    entry_id = enqueue(config, b"Subject: x\r\n\r\nx\r\n", ["bob@example.test", rcpt])
    agent.step()
    assert len(delivered(config, "bob@example.test")) == 1
    active = config.queue_dir / "active"
    bounce_id = notice_id(entry_id, 0, dsn.FAILED, [rcpt])
    assert sorted(os.listdir(active)) == [f"{bounce_id}.env", f"{bounce_id}.msg"]
    bounce = decode((active / f"{bounce_id}.env").read_bytes())
    assert bounce.sender == "" and bounce.recipients == ["alice@example.test"]
    report = (active / f"{bounce_id}.msg").read_text()
    assert f"Final-Recipient: rfc822; {rcpt}\nAction: failed\nStatus: {status}\n" in report
    assert "bob@example.test" not in report.split("Content-Type: message/rfc822")[0]
    # The bounce's recipient is unknown too, and a bounce is never bounced: badmail/ keeps it.
    agent.step()
    assert queue_length(config.queue_dir) == 0
    note = (config.badmail_dir / f"{bounce_id}.0.0.reason").read_text()
    assert "recipient: alice@example.test\n" in note and "reason: 5.1.1 mailbox unknown" in note
    assert (config.badmail_dir / f"{bounce_id}.0.0.msg").read_bytes().startswith(b"Return-Path: <>\n")


def test_undeliverable_recipient_of_the_null_sender_goes_to_badmail(config, agent):
    entry_id = enqueue(config, b"x\r\n", ["bob@example.test", "nobody@example.test"], sender="")
    agent.step()
    assert (config.badmail_dir / f"{entry_id}.0.1.msg").read_bytes() == b"Return-Path: <>\nx\n"
    note = (config.badmail_dir / f"{entry_id}.0.1.reason").read_text()
    assert "recipient: nobody@example.test\n" in note and "reason: 5.1.1 mailbox unknown\n" in note
    assert queue_length(config.queue_dir) == 0


def test_a_disk_error_defers_only_the_failed_recipient(config, agent, clock, monkeypatch):
    real_write_tmp = delivery.write_tmp

    def failing_for_carol(maildir, base, chunks):
        if "carol" in str(maildir):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_tmp(maildir, base, chunks)

    monkeypatch.setattr(delivery, "write_tmp", failing_for_carol)
    entry_id = enqueue(config, b"x\r\n", ["bob@example.test", "carol@example.test"])
    assert agent.step() == 1
    env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
    assert env.recipients == ["carol@example.test"]
    assert env.attempts == 1 and env.next_attempt == NOW + 60
    assert "No space left" in env.last_error
    assert len(delivered(config, "bob@example.test")) == 1

    assert agent.step() == 0  # not due yet
    clock.now += 61
    assert agent.step() == 1  # due, fails again: the schedule moves on
    env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
    assert env.attempts == 2 and env.next_attempt == clock.now + 300

    monkeypatch.setattr(delivery, "write_tmp", real_write_tmp)
    clock.now += 301
    assert agent.step() == 1
    assert len(delivered(config, "bob@example.test")) == 1
    assert len(delivered(config, "carol@example.test")) == 1
    assert queue_length(config.queue_dir) == 0


def test_an_accounts_database_outage_is_no_attempt(config, accounts, clock):
    """The database is ours, not the recipient's: the message is tried again BUSY_RETRY
    later, whatever the schedule says, and delivered as soon as the database answers."""
    class DownResolver:
        down = True

        def lookup_recipient(self, address):
            if self.down:
                raise AccountsUnavailable("accounts database: connection refused")
            return accounts.directory.lookup_recipient(address)

    resolver = DownResolver()
    agent = DeliveryAgent(config, resolver, accounts.mailbox_settings, clock=clock)
    entry_id = enqueue(config, b"x\r\n", ["bob@example.test"])
    for _ in range(3):  # a long outage does not climb the retry schedule
        assert agent.step() == 1
        env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
        assert env.attempts == 0 and env.next_attempt == clock.now + delivery.BUSY_RETRY
        assert "connection refused" in env.last_error
        clock.now += delivery.BUSY_RETRY
    resolver.down = False
    assert agent.step() == 1
    assert len(delivered(config, "bob@example.test")) == 1
    assert queue_length(config.queue_dir) == 0


def test_a_subaddress_goes_into_the_folder_of_its_name_when_there_is_one(config, accounts, clock):
    agent = DeliveryAgent(config, Directory(accounts.database, recipient_delimiter="+"),
                          accounts.mailbox_settings, clock=clock)
    bob = mailbox_path(config.store_dir, "bob@example.test")
    ensure_maildir(bob / ".Lists")
    enqueue(config, b"x\r\n", ["bob+lists@example.test"])
    enqueue(config, b"y\r\n", ["bob+nofolder@example.test", "carol+lists@example.test"])
    agent.step()
    assert [p.read_bytes() for p in (bob / ".Lists" / "new").iterdir()] == [
        b"Return-Path: <alice@example.test>\nDelivered-To: bob+lists@example.test\nx\n"]
    assert len(delivered(config, "bob@example.test")) == 1
    assert len(delivered(config, "carol@example.test")) == 1
    assert queue_length(config.queue_dir) == 0


def test_a_full_mailbox_is_retried_then_bounced_after_quota_full_bounce_after(
        config, accounts, agent, clock):
    config.delivery.quota_full_bounce_after = 100.0
    accounts.mailbox_settings.set_quota("carol@example.test", None, 0)
    entry_id = enqueue(config, b"x\r\n", ["bob@example.test", "carol@example.test"])
    agent.step()
    env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
    assert env.recipients == ["carol@example.test"] and "mailbox full" in env.last_error
    assert env.next_attempt == NOW + 60
    clock.now += 61
    agent.step()
    # The schedule's next step (300 s) would pass the limit: the retry comes at the limit.
    env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
    assert env.next_attempt == NOW + 100
    clock.now = NOW + 100
    agent.step()
    active = config.queue_dir / "active"
    bounce_id = notice_id(entry_id, 2, dsn.FAILED, ["carol@example.test"])
    assert sorted(os.listdir(active)) == [f"{bounce_id}.env", f"{bounce_id}.msg"]
    report = (active / f"{bounce_id}.msg").read_text()
    assert "Final-Recipient: rfc822; carol@example.test\nAction: failed\nStatus: 5.2.2\n" in report
    assert "mailbox full: still over its quota after 100 s" in report


def test_a_failed_sync_defers_the_whole_batch(config, agent, monkeypatch):
    def broken(self, fds):
        raise OSError(errno.EIO, "I/O error")

    entry_id = enqueue(config, b"x\r\n", ["bob@example.test"])
    monkeypatch.setattr(delivery.FileSyncer, "sync", broken)
    agent.step()
    env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
    assert env.attempts == 1 and "I/O error" in env.last_error
    box = mailbox_path(config.store_dir, "bob@example.test")
    assert os.listdir(box / "tmp") == [] and os.listdir(box / "new") == []


def test_copies_are_synced_file_by_file_never_by_syncfs(config, agent, monkeypatch):
    """A syncfs would also wait for every other worker's dirty data (issue 21)."""
    entry_id = enqueue(config, b"x\r\n", ["bob@example.test", "carol@example.test"])
    monkeypatch.setattr(commit, "syncfs", lambda fd: pytest.fail("delivery called syncfs"))
    synced, real_fdatasync = [], os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real_fdatasync(fd))[1])
    assert agent.step() == 1
    assert len(synced) == 2
    assert len(delivered(config, "bob@example.test")) == 1
    assert len(delivered(config, "carol@example.test")) == 1
    assert not (config.queue_dir / "active" / f"{entry_id}.env").exists()


def test_a_failed_directory_sync_defers_only_the_copies_in_that_directory(config, agent,
                                                                         monkeypatch):
    entry_id = enqueue(config, b"x\r\n", ["bob@example.test", "carol@example.test"])
    carol_new = mailbox_path(config.store_dir, "carol@example.test") / "new"
    real_fsync_dir = commit.fsync_dir

    def failing_for_carol(directory):
        if directory == carol_new:
            raise OSError(errno.EIO, "I/O error")
        real_fsync_dir(directory)

    monkeypatch.setattr(commit, "fsync_dir", failing_for_carol)
    agent.step()
    env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
    assert env.recipients == ["carol@example.test"] and "I/O error" in env.last_error
    assert len(delivered(config, "bob@example.test")) == 1


def test_recipients_are_looked_up_once_per_batch(config, accounts, clock):
    for n in range(5):
        enqueue(config, b"%d\r\n" % n, ["bob@example.test"])
    lookups = []

    class CountingResolver:
        def lookup_recipient(self, address):
            lookups.append(address)
            return accounts.directory.lookup_recipient(address)

    agent = DeliveryAgent(config, CountingResolver(), accounts.mailbox_settings, clock=clock)
    assert agent.step() == 5
    assert lookups == ["bob@example.test"]
    assert len(delivered(config, "bob@example.test")) == 5


def test_an_entry_locked_by_another_worker_waits_for_the_lock(config, agent):
    entry_id = enqueue(config, b"x\r\n", ["bob@example.test"])
    # Another process (the previous generation, mid-delivery) holds the entry.
    fd = os.open(config.queue_dir / "active" / f"{entry_id}.env", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    assert agent.step() == 0
    assert queue_length(config.queue_dir) == 1 and delivered(config, "bob@example.test") == []
    os.close(fd)  # that worker was killed: its lock went with it
    assert agent.step() == 1
    assert len(delivered(config, "bob@example.test")) == 1


def test_slots_split_the_queue(config, accounts, clock):
    for n in range(20):
        enqueue(config, b"%d\r\n" % n, ["bob@example.test"])
    agents = [DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, slot, 3,
                            clock=clock) for slot in range(3)]
    counts = [a.step() for a in agents]
    assert sum(counts) == 20 and all(counts)
    assert len(delivered(config, "bob@example.test")) == 20


def test_a_corrupt_envelope_is_moved_aside(config, agent):
    entry_id = enqueue(config, b"x\r\n", ["bob@example.test"])
    env_path = config.queue_dir / "active" / f"{entry_id}.env"
    env_path.write_bytes(env_path.read_bytes()[:-3])
    assert agent.step() == 0
    assert sorted(os.listdir(config.queue_dir / "corrupt")) == [f"{entry_id}.env",
                                                               f"{entry_id}.msg"]


@pytest.mark.parametrize("mode", SYNC_MODES)
def test_a_batch_larger_than_the_copy_limit(config, accounts, clock, monkeypatch, mode):
    monkeypatch.setattr(delivery, "MAX_OPEN_COPIES", 3)
    monkeypatch.setattr(delivery, "BATCH_ENTRIES", 4)
    for n in range(10):
        enqueue(config, b"%d\r\n" % n, ["team@example.test"])
    DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, sync_mode=mode,
                  clock=clock).step()
    assert len(delivered(config, "bob@example.test")) == 10
    assert len(delivered(config, "carol@example.test")) == 10
    assert queue_length(config.queue_dir) == 0


def test_run_heartbeats_and_stops(config, accounts):
    enqueue(config, b"x\r\n", ["bob@example.test"])
    beats = []
    started = time.monotonic()
    delivery.run(config, 0, 1, lambda: beats.append(time.monotonic()), lambda: len(beats) >= 3)
    assert time.monotonic() - started < 1
    assert len(delivered(config, "bob@example.test")) == 1


def test_an_abandoned_batch_leaves_no_temp_files_and_keeps_the_entry(config, agent, monkeypatch):
    enqueue(config, b"x\r\n", ["bob@example.test"])
    enqueue(config, b"y\r\n", ["bob@example.test"])
    real_claim = agent._claim
    calls = []

    def claim_then_break(entry_id):
        calls.append(entry_id)
        if len(calls) == 2:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_claim(entry_id)

    monkeypatch.setattr(agent, "_claim", claim_then_break)
    with pytest.raises(PermissionError):
        agent.step()
    box = mailbox_path(config.store_dir, "bob@example.test")
    assert not box.exists() or (os.listdir(box / "tmp") == [] and os.listdir(box / "new") == [])
    assert queue_length(config.queue_dir) == 2


def test_a_copy_placed_by_a_killed_predecessor_is_not_delivered_again(config, accounts, clock):
    enqueue(config, b"Subject: once\r\n\r\nx\r\n", ["bob@example.test", "carol@example.test"])
    first = DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, clock=clock)
    # The predecessor placed the copies, then died before removing the queue entry.
    first._finish = lambda entry: None
    assert first.step() == 1
    successor = DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, clock=clock)
    assert successor.step() == 1
    assert len(delivered(config, "bob@example.test")) == 1
    assert len(delivered(config, "carol@example.test")) == 1
    assert queue_length(config.queue_dir) == 0


def test_one_mailbox_message_is_moved_from_the_queue_not_copied(config, accounts, clock):
    entry_id = enqueue(config, b"Subject: moved\r\n\r\nx\r\n", ["bob@example.test"])
    queued = config.queue_dir / "active" / f"{entry_id}.msg"
    inode = queued.stat().st_ino
    first = DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, clock=clock)
    first._finish = lambda entry: None  # stopped between the move and the entry's removal
    assert first.step() == 1
    (path,) = (mailbox_path(config.store_dir, "bob@example.test") / "new").iterdir()
    assert path.stat().st_ino == inode and not queued.exists()
    assert path.read_bytes() == (b"Return-Path: <alice@example.test>\nDelivered-To: bob@example.test\n"
                                 b"Subject: moved\n\nx\n")
    DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, clock=clock).step()
    assert queue_length(config.queue_dir) == 0
    assert len(delivered(config, "bob@example.test")) == 1


def test_a_remote_recipient_that_cannot_be_reached_stays_queued(config, accounts, clock):
    from tests.smtp_sinks import free_port

    config.delivery.mx_override = {"elsewhere.test": f"127.0.0.1:{free_port()}"}
    agent = DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, clock=clock)
    entry_id = enqueue(config, b"x\r\n", ["bob@example.test", "someone@elsewhere.test"])
    assert agent.step() == 1
    assert len(delivered(config, "bob@example.test")) == 1
    env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
    assert env.recipients == ["someone@elsewhere.test"] and "cannot connect" in env.last_error
    assert "cannot connect" in env.errors["someone@elsewhere.test"]
    assert not os.listdir(config.badmail_dir)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_storage_error_pauses_the_worker_longer_each_time_with_one_line_per_pause(
        config, agent, clock, monkeypatch, caplog, code):
    """Not retried at every scan (ten a second, each with a traceback): the whole worker waits
    1, 2, 4 … 30 s while the disk stays full, then none once an entry gets through. Two
    mailboxes: the message stays in the queue (one would be moved out of it)."""
    caplog.set_level(logging.INFO, logger="mailforge.delivery")
    entry_id = enqueue(config, b"x\r\n", ["bob@example.test", "carol@example.test"])
    finishes = []
    real_finish = agent._finish

    def full(entry):
        finishes.append(entry.id)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(agent, "_finish", full)
    pauses = []
    for _ in range(7):
        agent.step()
        agent.step()  # during the pause: nothing tried, nothing logged
        pauses.append(agent._storage.pause)
        clock.now += agent._storage.pause
    assert pauses == [1, 2, 4, 8, 16, 30, 30] and finishes == [entry_id] * 7
    troubles = [r for r in caplog.records if "pauses" in r.getMessage()]
    assert len(troubles) == 7 and not any(r.exc_info for r in troubles)
    assert os.strerror(code) in troubles[0].getMessage()
    monkeypatch.setattr(agent, "_finish", real_finish)
    assert agent.step() == 1 and agent._storage.pause == 0
    assert len(delivered(config, "bob@example.test")) == 1
    assert any("storage usable again" in r.getMessage() for r in caplog.records)
