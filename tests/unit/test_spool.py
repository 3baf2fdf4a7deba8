import asyncio
import concurrent.futures
import errno
import os
import re
import time

import pytest

from mailforge.queue import spool as spool_module
import uvloop

from mailforge.queue import commit
from mailforge.queue.envelope import Envelope, decode, encode
from mailforge.queue.spool import Spool, SpoolError, queue_length, recover

SENDER, RECIPIENTS = "alice@example.test", ["bob@example.test"]
@pytest.fixture(autouse=True)
def messages_in_files_of_their_own(monkeypatch):
    """These tests are about per-message queue files; test_segment.py covers the rest."""
    monkeypatch.setattr(spool_module, "SPILL_SIZE", 0)


LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
def executor():
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        yield pool


def run(coro, loop_name="asyncio"):
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        return runner.run(coro)


def envelope(rcpt="bob@example.test") -> Envelope:
    return Envelope(id="", sender="alice@example.test", recipients=[rcpt],
                    received_at=time.time(), client_ip="192.0.2.1", helo="client")


def listing(path):
    return sorted(os.listdir(path))


async def receive(spool: Spool, n: int) -> str:
    file = spool.create(SENDER, [f"u{n}@example.test"])
    for part in range(3):
        file.write(f"Subject: {n}\r\n".encode())
        await asyncio.sleep(0)  # interleave the sessions as a real loop would
        file.write(memoryview(b"body line %d\r\n" % part))
    await file.commit(envelope(f"u{n}@example.test"))
    return file.id


@pytest.mark.parametrize("loop_name", LOOPS)
@pytest.mark.parametrize("mode", commit.SYNC_MODES)
def test_concurrent_commits_are_all_durable_and_renamed(tmp_path, executor, loop_name, mode):
    async def main():
        spool = Spool(tmp_path / "queue", executor, sync_mode=mode)
        ids = await asyncio.gather(*(receive(spool, n) for n in range(100)))
        await spool.close()
        return spool, ids

    spool, ids = run(main(), loop_name)
    assert len(set(ids)) == 100
    assert listing(spool.incoming) == []
    assert queue_length(tmp_path / "queue") == 100
    for n, spool_id in enumerate(ids):
        env = decode((spool.active / f"{spool_id}.env").read_bytes())
        message = (spool.active / f"{spool_id}.msg").read_bytes()
        assert env.id == spool_id and env.recipients == [f"u{n}@example.test"]
        prefix = f"Return-Path: <alice@example.test>\nDelivered-To: u{n}@example.test\n".encode()
        assert env.size == len(message) and env.prefix_size == len(prefix)
        assert env.delivered_to == f"u{n}@example.test"
        assert message == prefix + f"Subject: {n}\nbody line 0\n".encode() + b"".join(
            f"Subject: {n}\nbody line {part}\n".encode() for part in (1, 2))
    # Requests that arrive while a batch runs share the next one.
    assert spool.committer.batches < 50


def test_ids_are_filename_safe_and_sortable(tmp_path, executor):
    spool = Spool(tmp_path / "queue", executor)
    files = [spool.create(SENDER, RECIPIENTS) for _ in range(50)]
    ids = [f.id for f in files]
    assert all(re.fullmatch(r"[0-9a-f]{14}-\d+-\d+", i) for i in ids)
    assert len(set(ids)) == 50
    for f in files:
        f.abort()
    run(spool.close())


def test_abort_removes_the_temp_file_and_is_idempotent(tmp_path, executor):
    spool = Spool(tmp_path / "queue", executor)
    file = spool.create(SENDER, RECIPIENTS)
    file.write(b"partial")
    assert f"{file.id}.msg" in listing(spool.incoming)
    file.abort()
    file.abort()
    assert f"{file.id}.msg" not in listing(spool.incoming) and listing(spool.active) == []
    with pytest.raises(SpoolError):
        file.write(b"more")
    run(spool.close())
    assert listing(spool.incoming) == []  # close() removes the files made ahead


def test_abort_after_commit_keeps_the_message(tmp_path, executor):
    async def main():
        spool = Spool(tmp_path / "queue", executor)
        file = spool.create(SENDER, RECIPIENTS)
        file.write(b"x\r\n")
        await file.commit(envelope())
        file.abort()
        await spool.close()

    run(main())
    assert queue_length(tmp_path / "queue") == 1


def test_a_failed_sync_leaves_nothing_behind(tmp_path, executor, monkeypatch):
    def broken_sync(self, fds):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(commit.FileSyncer, "sync", broken_sync)

    async def main():
        spool = Spool(tmp_path / "queue", executor)
        file = spool.create(SENDER, RECIPIENTS)
        file.write(b"x\r\n")
        with pytest.raises(SpoolError, match="I/O error"):
            await file.commit(envelope())
        file.abort()  # what a session does after a failure: must be harmless
        await spool.close()
        return spool

    spool = run(main())
    assert listing(spool.incoming) == [] and listing(spool.active) == []


def test_a_failed_envelope_rename_removes_the_renamed_message(tmp_path, executor, monkeypatch):
    real_rename = os.rename

    def rename(src, dst):
        if str(dst).endswith(".env"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(commit.os, "rename", rename)

    async def main():
        spool = Spool(tmp_path / "queue", executor)
        file = spool.create(SENDER, RECIPIENTS)
        file.write(b"x\r\n")
        with pytest.raises(SpoolError, match="No space"):
            await file.commit(envelope())
        await spool.close()
        return spool

    spool = run(main())
    assert listing(spool.incoming) == [] and listing(spool.active) == []


def test_a_failed_envelope_write_fails_only_that_commit(tmp_path, executor, monkeypatch):
    real_write_all = commit.write_all

    def write_all(fd, data):
        if b"doomed@example.test" in bytes(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, data)

    monkeypatch.setattr(commit, "write_all", write_all)

    async def one(spool, rcpt):
        file = spool.create(SENDER, RECIPIENTS)
        file.write(b"x\r\n")
        await file.commit(envelope(rcpt))

    async def main():
        spool = Spool(tmp_path / "queue", executor)
        results = await asyncio.gather(one(spool, "doomed@example.test"),
                                       one(spool, "fine@example.test"), return_exceptions=True)
        await spool.close()
        return spool, results

    spool, results = run(main())
    assert isinstance(results[0], SpoolError) and results[1] is None
    assert queue_length(tmp_path / "queue") == 1 and listing(spool.incoming) == []


def test_a_cancelled_commit_still_completes(tmp_path, executor):
    async def main():
        spool = Spool(tmp_path / "queue", executor)
        file = spool.create(SENDER, RECIPIENTS)
        file.write(b"x\r\n")
        task = asyncio.create_task(file.commit(envelope()))
        await asyncio.sleep(0)
        task.cancel()  # the client went away after the final dot
        file.abort()  # too late to take it back: harmless
        await receive(spool, 1)
        await spool.close()

    run(main())
    assert queue_length(tmp_path / "queue") == 2


def test_create_works_when_the_pool_is_empty(tmp_path, executor):
    spool = Spool(tmp_path / "queue", executor)
    files = [spool.create(SENDER, RECIPIENTS) for _ in range(100)]  # more than the pool holds at first
    assert len({f.id for f in files}) == 100
    for f in files:
        f.abort()
    run(spool.close())
    assert listing(spool.incoming) == []


def test_without_syncfs_it_falls_back_to_fdatasync(tmp_path, executor, monkeypatch):
    def no_syncfs(fd):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(commit, "syncfs", no_syncfs)

    async def main():
        spool = Spool(tmp_path / "queue", executor)
        await asyncio.gather(*(receive(spool, n) for n in range(5)))
        await spool.close()
        return spool

    spool = run(main())
    assert spool.committer.mode == commit.SYNC_FSYNC
    assert queue_length(tmp_path / "queue") == 5


def test_commit_after_close_is_refused(tmp_path, executor):
    async def main():
        spool = Spool(tmp_path / "queue", executor)
        await spool.close()
        await spool.close()
        file = spool.create(SENDER, RECIPIENTS)
        file.write(b"x")
        with pytest.raises(SpoolError, match="closing"):
            await file.commit(envelope())
        return spool

    spool = run(main())
    assert listing(spool.incoming) == []


# -- recover()

def put(directory, name, data=b""):
    (directory / name).write_bytes(data)


def entry(active, entry_id, message=b"hello\r\n", size=None):
    env = envelope()
    env.id, env.size = entry_id, len(message) if size is None else size
    put(active, f"{entry_id}.msg", message)
    put(active, f"{entry_id}.env", encode(env))


def test_recover_handles_each_broken_case(tmp_path, executor, caplog):
    queue = tmp_path / "queue"
    run(Spool(queue, executor).close())
    incoming, active, corrupt = queue / "incoming", queue / "active", queue / "corrupt"
    put(incoming, "a.msg", b"never acknowledged")
    put(incoming, "a.env")
    entry(active, "good")
    entry(active, "no-msg")
    os.unlink(active / "no-msg.msg")
    put(active, "no-env.msg", b"x")
    entry(active, "bad-size", size=3)
    entry(active, "bad-env")
    put(active, "bad-env.env", encode(envelope())[:-2])
    entry(active, "wrong-id")
    os.rename(active / "wrong-id.env", active / "other.env")
    os.rename(active / "wrong-id.msg", active / "other.msg")
    put(active, "stray.tmp", b"?")

    with caplog.at_level("INFO", logger="mailforge.queue"):
        report = recover(queue)

    assert (report.kept, report.dropped_incoming, report.orphans, report.corrupt) == (1, 2, 2, 4)
    assert listing(incoming) == []
    assert listing(active) == ["good.env", "good.msg"]
    assert listing(corrupt) == ["bad-env.env", "bad-env.msg", "bad-size.env", "bad-size.msg",
                                "other.env", "other.msg", "stray.tmp"]
    assert queue_length(queue) == 1
    assert len(caplog.records) == 1 and "1 queued" in caplog.text


def test_recover_creates_a_missing_queue(tmp_path):
    report = recover(tmp_path / "queue")
    assert report.kept == 0 and queue_length(tmp_path / "queue") == 0


def test_several_recipients_get_no_delivered_to_and_a_cr_at_a_write_end_pairs(tmp_path, executor):
    async def main():
        spool = Spool(tmp_path / "queue", executor)
        file = spool.create("", ["a@example.test", "b@example.test"])
        for chunk in (b"Subject: x\r", b"\n\r\nline\r", b"lone\r"):
            file.write(chunk)
        await file.commit(envelope())
        await spool.close()
        return spool, file.id

    spool, spool_id = run(main())
    env = decode((spool.active / f"{spool_id}.env").read_bytes())
    assert (spool.active / f"{spool_id}.msg").read_bytes() == (
        b"Return-Path: <>\nSubject: x\n\nline\rlone\r")
    assert env.delivered_to == "" and env.prefix_size == len(b"Return-Path: <>\n")
