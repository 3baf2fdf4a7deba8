"""Queue segments: small messages appended to one file per worker, sealed, then delivered."""

import asyncio
import concurrent.futures
import errno
import fcntl
import os

import pytest

from mailforge.queue import delivery, segment
from mailforge.queue.delivery import DeliveryAgent
from mailforge.queue.envelope import Envelope, decode
from mailforge.queue.segment import SegmentError, encode_record, read_records, record_count, seal_orphans
from mailforge.queue.spool import SPILL_SIZE, Spool, queue_length, recover

from .test_delivery import NOW, Clock, accounts, accounts_template, config, delivered  # noqa: F401


def envelope(recipients, sender="alice@example.test") -> Envelope:
    return Envelope("", sender, list(recipients), NOW, "192.0.2.1", "client")


def receive(config, messages: list[tuple[bytes, list[str]]]) -> list[str]:
    """Queue the messages concurrently through one Spool, as one worker's sessions would."""
    async def one(spool, body, recipients):
        file = spool.create("alice@example.test", recipients)
        file.write(body)
        await file.commit(envelope(recipients))
        return file.id

    async def main():
        with concurrent.futures.ThreadPoolExecutor(2) as executor:
            spool = Spool(config.queue_dir, executor)
            ids = await asyncio.gather(*(one(spool, b, r) for b, r in messages))
            await spool.close()
            return ids

    return asyncio.run(main())


def sealed(config) -> list[str]:
    return sorted(n for n in os.listdir(config.queue_dir / "active") if n.endswith(".seg"))


def test_small_messages_share_one_segment_and_no_files_of_their_own(config):
    ids = receive(config, [(f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(), ["bob@example.test"])
                           for n in range(50)])
    (name,) = sealed(config)
    assert record_count(name) == 50 and queue_length(config.queue_dir) == 50
    assert os.listdir(config.queue_dir / "incoming") == []
    assert os.listdir(config.queue_dir / "segments") == []
    records = {env.id: (env, body) for env, body in read_records(config.queue_dir / "active" / name)}
    assert set(records) == set(ids)
    env, body = records[ids[7]]
    assert body == b"Return-Path: <alice@example.test>\nDelivered-To: bob@example.test\nSubject: 7\n\nbody 7\n"
    assert env.size == len(body) and env.delivered_to == "bob@example.test"


def test_a_big_message_gets_files_of_its_own(config):
    big = b"x" * 998 + b"\r\n"
    (spool_id,) = receive(config, [(big * (SPILL_SIZE // len(big) + 2), ["bob@example.test"])])
    assert sealed(config) == []
    env = decode((config.queue_dir / "active" / f"{spool_id}.env").read_bytes())
    assert env.size == (config.queue_dir / "active" / f"{spool_id}.msg").stat().st_size > SPILL_SIZE


def write_open_segment(config, records: list[bytes], torn: bytes = b"") -> os.PathLike:
    os.makedirs(config.queue_dir / "segments", exist_ok=True)
    os.makedirs(config.queue_dir / "active", exist_ok=True)
    path = config.queue_dir / "segments" / "0000000000abcd-1-1.open"
    path.write_bytes(b"".join(records) + torn)
    return path


def test_an_orphaned_segment_is_sealed_without_its_torn_tail(config):
    records = [encode_record(envelope(["bob@example.test"]), b"m%d\n" % n) for n in range(3)]
    path = write_open_segment(config, records, torn=records[0][:20])
    assert seal_orphans(config.queue_dir) == 1
    (name,) = sealed(config)
    assert record_count(name) == 3 and not path.exists()
    assert [body for _, body in read_records(config.queue_dir / "active" / name)] == [b"m0\n", b"m1\n", b"m2\n"]


def test_a_segment_whose_writer_lives_is_left_alone(config):
    path = write_open_segment(config, [encode_record(envelope(["bob@example.test"]), b"m\n")])
    with open(path, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert seal_orphans(config.queue_dir) == 0
    assert recover(config.queue_dir).segments_sealed == 1


def test_a_sweep_while_a_writer_opens_its_segment_loses_nothing(config, monkeypatch):
    """The sweep of orphans runs in delivery workers at any moment, also between a writer's
    creating its segment and locking it; the records acknowledged after must still be sealed."""
    real_flock = fcntl.flock
    swept = []

    class SweepFirst:
        def __getattr__(self, name):
            return getattr(fcntl, name)

        @staticmethod
        def flock(fd, operation):
            if not swept:  # the writer's lock of its new segment: a sweep gets in first
                swept.append(None)
                swept[0] = seal_orphans(config.queue_dir)
            return real_flock(fd, operation)

    monkeypatch.setattr(segment, "fcntl", SweepFirst())
    ids = receive(config, [(b"Subject: raced\r\n\r\nbody\r\n", ["bob@example.test"])])
    assert swept == [0]
    (name,) = sealed(config)
    assert [env.id for env, _ in read_records(config.queue_dir / "active" / name)] == ids


def test_an_abandoned_new_segment_is_removed_once_old(config):
    os.makedirs(config.queue_dir / "segments", exist_ok=True)
    path = config.queue_dir / "segments" / "0000000000abcd-1-1.new"
    path.write_bytes(b"")
    assert seal_orphans(config.queue_dir) == 0 and path.exists()
    old = path.stat().st_mtime - segment.ABANDONED_AGE - 1
    os.utime(path, (old, old))
    assert seal_orphans(config.queue_dir) == 0 and not path.exists()


def test_a_damaged_record_is_refused():
    record = bytearray(encode_record(envelope(["bob@example.test"]), b"body\n"))
    record[-6] ^= 0xFF
    with pytest.raises(SegmentError):
        list(segment._records(bytes(record)))


@pytest.fixture
def agent(config, accounts):
    return DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, clock=Clock())


def test_a_segment_is_delivered_and_removed(config, agent):
    receive(config, [(b"Subject: a\r\n\r\nx\r\n", ["bob@example.test"]),
                     (b"Subject: b\r\n\r\ny\r\n", ["team@example.test"]),
                     (b"Subject: c\r\n\r\nz\r\n", ["nobody@example.test"])])
    assert agent.step() == 3
    assert sealed(config) == []
    agent.step()  # nobody's bounce, to alice: unknown here too, so it goes to badmail/
    assert queue_length(config.queue_dir) == 0
    bob = delivered(config, "bob@example.test")
    assert b"Return-Path: <alice@example.test>\nDelivered-To: bob@example.test\nSubject: a\n\nx\n" in bob
    assert b"Return-Path: <alice@example.test>\nDelivered-To: team@example.test\nSubject: b\n\ny\n" in bob
    assert len(delivered(config, "carol@example.test")) == 1
    assert [n for n in os.listdir(config.badmail_dir) if n.endswith(".reason")]


def test_a_record_that_must_wait_becomes_an_entry_of_its_own(config, agent, monkeypatch):
    (spool_id,) = receive(config, [(b"Subject: a\r\n\r\nx\r\n", ["bob@example.test"])])
    monkeypatch.setattr(delivery, "write_tmp", lambda *a: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")))
    assert agent.step() == 1
    assert sealed(config) == []
    env = decode((config.queue_dir / "active" / f"{spool_id}.env").read_bytes())
    assert env.attempts == 1 and "No space left" in env.last_error
    monkeypatch.undo()
    agent.clock.now += 67  # the first retry is 60 s ± 10% jitter
    assert agent.step() == 1
    assert len(delivered(config, "bob@example.test")) == 1 and queue_length(config.queue_dir) == 0


def test_a_segment_cut_short_by_a_killed_worker_is_not_delivered_twice(config, accounts):
    receive(config, [(b"Subject: %d\r\n\r\nx\r\n" % n, ["bob@example.test"]) for n in range(5)])
    first = DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, clock=Clock())
    real_unlink = os.unlink

    def killed_before_removing_the_segment(path, *args, **kwargs):
        if str(path).endswith(".seg"):
            raise SystemExit("killed")
        return real_unlink(path, *args, **kwargs)

    os.unlink = killed_before_removing_the_segment
    try:
        with pytest.raises(SystemExit):
            first.step()
    finally:
        os.unlink = real_unlink
    assert len(delivered(config, "bob@example.test")) == 5
    DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, clock=Clock()).step()
    assert len(delivered(config, "bob@example.test")) == 5
    assert queue_length(config.queue_dir) == 0


def test_a_batch_of_more_records_than_iov_max_is_written_whole(config):
    writer = segment.SegmentWriter(config.queue_dir, iter(range(10**6)).__next__)
    os.makedirs(config.queue_dir / "segments")
    os.makedirs(config.queue_dir / "active")
    records = [encode_record(envelope(["bob@example.test"]), b"m%d\n" % n) for n in range(3000)]
    writer.append(records)
    writer.synced()
    writer.seal()
    (name,) = sealed(config)
    assert record_count(name) == 3000
    assert len(list(read_records(config.queue_dir / "active" / name))) == 3000
