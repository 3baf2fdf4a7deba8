import os

import pytest

from mailforge.store import maildir
from mailforge.store.maildir import (claim_new, delivered_bases, ensure_maildir,
                                     ensure_maildir_durable, mailbox_path, publish, write_tmp)


def test_delivered_bases_sees_new_and_cur(tmp_path):
    box = ensure_maildir(tmp_path / "Maildir")
    (box / "new" / "1.Qa.h,S=3").write_bytes(b"abc")
    (box / "cur" / "2.Qb.h,S=3:2,S").write_bytes(b"abc")
    assert delivered_bases(box) == {"1.Qa.h", "2.Qb.h"}


def test_write_tmp_then_publish(tmp_path):
    box = ensure_maildir(mailbox_path(tmp_path, "bob@example.test"))
    message = write_tmp(box, "1.Qx.h", [b"Return-Path: <>\n", b"body\n"])
    os.close(message.fd)
    assert os.listdir(box / "tmp") == [message.base]
    path = publish(message)
    assert path.parent == box / "new" and path.name == f"{message.base},S=21"
    assert path.read_bytes() == b"Return-Path: <>\nbody\n"
    assert os.listdir(box / "tmp") == []


def test_write_tmp_removes_a_half_written_file(tmp_path):
    box = ensure_maildir(tmp_path / "Maildir")

    def chunks():
        yield b"start"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_tmp(box, "1.Qx.h", chunks())
    assert os.listdir(box / "tmp") == []


def test_ensure_maildir_durable_creates_and_fsyncs_parents(tmp_path, monkeypatch):
    synced = []
    real = maildir.fsync_dir
    monkeypatch.setattr(maildir, "fsync_dir", lambda p: (synced.append(p), real(p)))
    store = tmp_path / "store"
    box = mailbox_path(store, "bob@example.test")
    ensure_maildir_durable(store, box)
    assert all((box / sub).is_dir() for sub in ("tmp", "new", "cur"))
    assert store in synced and box.parent in synced
    synced.clear()
    ensure_maildir_durable(store, box)
    assert synced == []


def test_claim_new_moves_to_cur_with_the_crlf_size_and_keeps_any_info(tmp_path):
    box = ensure_maildir(tmp_path / "Maildir")
    (box / "new" / "1.Qa.h,S=5").write_bytes(b"a\nbc\n")
    (box / "new" / "2.Qb.h,S=2:2,F").write_bytes(b"d\n")
    assert claim_new(box, "1.Qa.h,S=5") == "1.Qa.h,S=5,W=7:2,"
    assert claim_new(box, "2.Qb.h,S=2:2,F") == "2.Qb.h,S=2,W=3:2,F"
    assert sorted(os.listdir(box / "cur")) == ["1.Qa.h,S=5,W=7:2,", "2.Qb.h,S=2,W=3:2,F"]
    with pytest.raises(FileNotFoundError):  # another reader claimed it first
        claim_new(box, "1.Qa.h,S=5")
