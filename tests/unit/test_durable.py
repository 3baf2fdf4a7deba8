"""Durable file IO (mailforge.durable): new files, replacement by rename, cleanup on failure."""

import errno
import os

import pytest

from mailforge import durable


def test_write_new_file_writes_bytes_or_chunks_and_never_overwrites(tmp_path):
    fd = durable.write_new_file(tmp_path / "a", b"whole")
    os.close(fd)
    fd = durable.write_new_file(tmp_path / "b", iter([b"in ", b"chunks"]))
    os.close(fd)
    assert (tmp_path / "a").read_bytes() == b"whole"
    assert (tmp_path / "b").read_bytes() == b"in chunks"
    assert (tmp_path / "a").stat().st_mode & 0o777 == durable.FILE_MODE
    with pytest.raises(FileExistsError):
        durable.write_new_file(tmp_path / "a", b"again")
    assert (tmp_path / "a").read_bytes() == b"whole"


def test_a_failed_write_leaves_no_file(tmp_path):
    def chunks():
        yield b"start"
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        durable.write_new_file(tmp_path / "m", chunks())
    assert os.listdir(tmp_path) == []


def test_replace_durably_swaps_the_file_and_returns_its_inode(tmp_path):
    target = tmp_path / "index"
    target.write_bytes(b"old")
    (tmp_path / "tmp").mkdir()
    inode = durable.replace_durably(tmp_path / "tmp", target, b"new")
    assert target.read_bytes() == b"new" and target.stat().st_ino == inode
    assert os.listdir(tmp_path / "tmp") == []


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "index"
    target.write_bytes(b"old")

    def rename(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(durable.os, "rename", rename)
    with pytest.raises(OSError):
        durable.write_atomically(target, b"new")
    assert os.listdir(tmp_path) == ["index"] and target.read_bytes() == b"old"


def test_write_atomically_gives_the_mode_asked_for_whatever_the_umask(tmp_path):
    old_umask = os.umask(0o077)
    try:
        durable.write_atomically(tmp_path / "cert.pem", b"cert", mode=0o644)
    finally:
        os.umask(old_umask)
    assert (tmp_path / "cert.pem").stat().st_mode & 0o777 == 0o644


def test_unlink_quietly_ignores_a_missing_file(tmp_path):
    (tmp_path / "x").write_bytes(b"")
    durable.unlink_quietly(tmp_path / "x")
    durable.unlink_quietly(tmp_path / "x")
    assert os.listdir(tmp_path) == []
