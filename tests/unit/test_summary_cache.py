"""The summary cache file (store/cache.py): records read back, torn and duplicate records
harmless, compaction, and readers and a writer in two processes."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from mailforge.store import cache as cache_module
from mailforge.store.api import MessageSummary
from mailforge.store.cache import (
    CACHE_NAME,
    SummaryCache,
    encode_record,
    record_magic,
    scan_records,
)


class FakeSummarizer:
    """Summaries that say which message they came from; counts its calls."""

    version = 1

    def __init__(self) -> None:
        self.calls = 0

    def summarize(self, data: bytes) -> MessageSummary | None:
        self.calls += 1
        if data.startswith(b"huge"):
            return None
        return MessageSummary(b"H:" + data + b"\r\n\r\n", b"E:" + data, b"B:" + data,
                              b"S:" + data)


def summary_of(data: bytes) -> MessageSummary:
    summary = FakeSummarizer().summarize(data)
    assert summary is not None
    return summary


def no_live_bases() -> set[str]:
    return set()


def new_cache(folder, summarizer=None) -> SummaryCache:
    return SummaryCache(folder, summarizer or FakeSummarizer())


def test_a_learnt_summary_is_found_by_this_and_another_reader(tmp_path):
    writer, reader = new_cache(tmp_path), new_cache(tmp_path)
    assert writer.get("1.a.host") is None and reader.get("1.a.host") is None
    assert not (tmp_path / CACHE_NAME).exists()  # a miss creates nothing
    writer.learn("1.a.host", b"one", no_live_bases)
    writer.learn("2.b.host", b"two", no_live_bases)
    assert writer.get("1.a.host") == summary_of(b"one")
    assert reader.get("2.b.host") == summary_of(b"two")
    assert reader.get("1.a.host") == summary_of(b"one")
    assert reader.get("3.c.host") is None


def test_a_known_base_is_not_summarized_again(tmp_path):
    summarizer = FakeSummarizer()
    first, second = new_cache(tmp_path, summarizer), new_cache(tmp_path, summarizer)
    first.learn("1.a.host", b"one", no_live_bases)
    first.learn("1.a.host", b"one", no_live_bases)
    second.learn("1.a.host", b"one", no_live_bases)  # reads what the first wrote before writing
    assert summarizer.calls == 1
    assert len(records_in(tmp_path)) == 1


def test_unsummarizable_messages_and_no_summarizer_leave_nothing(tmp_path):
    cache = new_cache(tmp_path)
    cache.learn("1.a.host", b"huge header", no_live_bases)
    assert cache.get("1.a.host") is None
    plain = SummaryCache(tmp_path, None)
    plain.learn("2.b.host", b"two", no_live_bases)
    assert plain.get("2.b.host") is None and not (tmp_path / CACHE_NAME).exists()


def test_a_torn_tail_is_waited_for_then_skipped(tmp_path):
    magic = record_magic(1)
    whole = encode_record(magic, "1.a.host", summary_of(b"one"))
    torn = encode_record(magic, "2.b.host", summary_of(b"two"))[:-5]
    (tmp_path / CACHE_NAME).write_bytes(whole + torn)
    reader = new_cache(tmp_path)
    assert reader.get("1.a.host") == summary_of(b"one")
    assert reader.get("2.b.host") is None
    # Records appended after the torn one (by a session that came later) are found past it.
    new_cache(tmp_path).learn("3.c.host", b"three", no_live_bases)
    new_cache(tmp_path).learn("4.d.host", b"four", no_live_bases)
    assert reader.get("3.c.host") == summary_of(b"three")
    assert reader.get("4.d.host") == summary_of(b"four")
    assert reader.get("2.b.host") is None


def test_a_record_being_written_is_read_once_complete(tmp_path):
    record = encode_record(record_magic(1), "1.a.host", summary_of(b"one"))
    path = tmp_path / CACHE_NAME
    path.write_bytes(record[:10])
    reader = new_cache(tmp_path)
    assert reader.get("1.a.host") is None
    with open(path, "ab") as file:
        file.write(record[10:])
    assert reader.get("1.a.host") == summary_of(b"one")


def test_garbage_damage_and_other_versions_are_skipped(tmp_path):
    magic = record_magic(1)
    first = encode_record(magic, "1.a.host", summary_of(b"one"))
    damaged = bytearray(encode_record(magic, "2.b.host", summary_of(b"two")))
    damaged[-3] ^= 0xFF
    other_version = encode_record(record_magic(2), "3.c.host", summary_of(b"new"))
    last = encode_record(magic, "4.d.host", summary_of(b"four"))
    (tmp_path / CACHE_NAME).write_bytes(
        b"junk" + cache_module.MAGIC + b"\xff" * 40 + first + bytes(damaged) + other_version
        + last)
    reader = new_cache(tmp_path)
    assert reader.get("1.a.host") == summary_of(b"one")
    assert reader.get("2.b.host") is None
    assert reader.get("3.c.host") is None  # written by another version of the renderer
    assert reader.get("4.d.host") == summary_of(b"four")


def test_the_first_valid_record_of_a_base_wins(tmp_path):
    magic = record_magic(1)
    (tmp_path / CACHE_NAME).write_bytes(
        encode_record(magic, "1.a.host", summary_of(b"first"))
        + encode_record(magic, "1.a.host", summary_of(b"second")))
    assert new_cache(tmp_path).get("1.a.host") == summary_of(b"first")


def test_a_missing_or_unreadable_cache_is_an_empty_one(tmp_path):
    folder = tmp_path / "gone"
    cache = new_cache(folder)
    assert cache.get("1.a.host") is None
    cache.learn("1.a.host", b"one", no_live_bases)  # no directory: nothing written, no error
    assert cache.get("1.a.host") is None
    (tmp_path / CACHE_NAME).mkdir()  # not even a file
    cache = new_cache(tmp_path)
    cache.learn("1.a.host", b"one", no_live_bases)
    assert cache.get("1.a.host") is None


def test_a_removed_file_is_noticed(tmp_path):
    cache = new_cache(tmp_path)
    cache.learn("1.a.host", b"one", no_live_bases)
    os.unlink(tmp_path / CACHE_NAME)
    assert cache.get("2.b.host") is None
    cache.learn("2.b.host", b"two", no_live_bases)
    assert new_cache(tmp_path).get("2.b.host") == summary_of(b"two")


def test_compaction_keeps_only_live_bases_and_readers_follow(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "COMPACT_MIN_DEAD", 4)
    writer, reader = new_cache(tmp_path), new_cache(tmp_path)
    live = [f"1.live{n}.host" for n in range(5)]
    dead = [f"2.dead{n}.host" for n in range(6)]
    for base in live + dead[:5]:
        writer.learn(base, base.encode(), lambda: set(live))
    assert len(records_in(tmp_path)) == 10  # dead records do not outnumber live ones yet
    assert reader.get(dead[0]) == summary_of(dead[0].encode())
    writer.learn(dead[5], dead[5].encode(), lambda: set(live))
    assert records_in(tmp_path) == live
    # A reader keeps what it found in the old file, and notices the new one when it meets a
    # base it does not know.
    assert reader.get(dead[1]) == summary_of(dead[1].encode())
    writer.learn("3.new.host", b"new", lambda: set(live))
    assert reader.get("3.new.host") == summary_of(b"new")
    assert reader.get(live[2]) == summary_of(live[2].encode())
    fresh_process_memory(monkeypatch)
    assert new_cache(tmp_path).get(dead[0]) is None


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    """Each test starts as a new process would: no summary decoded yet."""
    fresh_process_memory(monkeypatch)


def fresh_process_memory(monkeypatch) -> None:
    monkeypatch.setattr(cache_module, "_remembered", cache_module._Remembered(100))


def test_decoded_summaries_are_shared_by_the_process_and_bounded(tmp_path):
    writer = new_cache(tmp_path)
    bases = [f"{n}.m{n}.host" for n in range(150)]
    for base in bases:
        writer.learn(base, base.encode(), lambda: set(bases))
    reader = new_cache(tmp_path)
    assert reader.get(bases[0]) == summary_of(bases[0].encode())
    (tmp_path / CACHE_NAME).unlink()
    assert new_cache(tmp_path).get(bases[0]) == summary_of(bases[0].encode())  # from memory
    for base in bases[1:]:
        reader.get(base)
    assert len(cache_module._remembered._summaries) <= 100


def records_in(folder) -> list[str]:
    return [base for base, _, _ in scan_records((folder / CACHE_NAME).read_bytes(),
                                                record_magic(1))[0]]


def test_no_compaction_while_most_records_are_live(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "COMPACT_MIN_DEAD", 4)
    writer = new_cache(tmp_path)
    bases = [f"{n}.m{n}.host" for n in range(30)]
    for base in bases:
        writer.learn(base, base.encode(), lambda: set(bases[5:]))
    assert len(records_in(tmp_path)) == 30


def _write_many(folder: str, start: int, count: int) -> None:
    """Summaries of messages start … start + count - 1; all those below are live too."""
    cache = SummaryCache(Path(folder), FakeSummarizer())
    live = {f"{n}.m.host" for n in range(start + count)}
    for n in range(start, start + count):
        cache.learn(f"{n}.m.host", b"message %d" % n, lambda: live)


def test_two_readers_and_a_writer_in_two_processes(tmp_path):
    """A child process appends while this one reads with two caches: every summary found is
    the right one, and in the end all are found by both."""
    count = 400
    context = multiprocessing.get_context("fork")
    writer = context.Process(target=_write_many, args=(str(tmp_path), 0, count))
    writer.start()
    readers = [new_cache(tmp_path), new_cache(tmp_path)]
    try:
        while writer.is_alive():
            for n in range(0, count, 7):
                for reader in readers:
                    summary = reader.get(f"{n}.m.host")
                    assert summary in (None, summary_of(b"message %d" % n))
    finally:
        writer.join(30)
    assert writer.exitcode == 0
    # This process writes some of the same bases too: duplicates, which change nothing.
    _write_many(str(tmp_path), count - 50, 50)
    for reader in readers:
        for n in range(count):
            assert reader.get(f"{n}.m.host") == summary_of(b"message %d" % n)


@pytest.mark.parametrize("cut", [1, 7, 12, 20])
def test_scan_stops_at_an_incomplete_record_byte_by_byte(cut):
    record = encode_record(record_magic(1), "1.a.host", summary_of(b"one"))
    found, used = scan_records(record[:-cut], record_magic(1))
    assert found == [] and used == 0
    found, used = scan_records(record, record_magic(1))
    assert found == [("1.a.host", 0, len(record))] and used == len(record)


def test_a_reader_told_not_to_look_answers_from_what_it_has_seen(tmp_path):
    """A FETCH over many messages looks at the file once: without `look`, a base the reader
    has not seen is a miss, even when another process has written its record since."""
    reader = new_cache(tmp_path)
    assert reader.get("1.a.host") is None  # looked: no file yet
    record = encode_record(record_magic(FakeSummarizer.version), "1.a.host", summary_of(b"one"))
    (tmp_path / CACHE_NAME).write_bytes(record)  # another process's record
    assert reader.get("1.a.host", look=False) is None
    assert reader.get("1.a.host") == summary_of(b"one")
    assert reader.get("1.a.host", look=False) == summary_of(b"one")
