"""The POP3 maildrop: snapshot, sizes of the CRLF form, stable UIDLs, the lock, deletes."""

import os
import subprocess
import sys

import pytest

from mailforge.store.api import MaildropBusy
from mailforge.store.maildir import ensure_maildir
from mailforge.store.pop3box import LOCK_NAME, MaildirMaildrop, crlf_form


def deliver(maildir, base, body):
    path = maildir / "new" / f"{base},S={len(body)}"
    path.write_bytes(body)
    return path


@pytest.fixture
def maildir(tmp_path):
    return ensure_maildir(tmp_path / "Maildir")


def test_snapshot_moves_new_to_cur_with_crlf_sizes(maildir):
    deliver(maildir, "1700000002.Qb.host", b"Subject: b\n\nline\n")
    deliver(maildir, "1700000001.Qa.host", b"Subject: a\n\n")
    box = MaildirMaildrop.open(maildir)
    try:
        assert [(m.uid, m.size) for m in box.messages] == [
            ("1700000001.Qa.host", 14), ("1700000002.Qb.host", 20)]
        assert not os.listdir(maildir / "new")
        assert sorted(os.listdir(maildir / "cur")) == [
            "1700000001.Qa.host,S=12,W=14:2,", "1700000002.Qb.host,S=17,W=20:2,"]
        assert read(box, 1) == b"Subject: b\r\n\r\nline\r\n"
        assert len(read(box, 1)) == box.messages[1].size
    finally:
        box.close()


def read(box: MaildirMaildrop, index: int) -> bytes:
    with box.open_message(index) as message:
        return crlf_form(message.read())


def test_uidls_are_stable_and_new_mail_waits_for_the_next_session(maildir):
    deliver(maildir, "1700000001.Qa.host", b"a\n")
    box = MaildirMaildrop.open(maildir)
    deliver(maildir, "1700000003.Qc.host", b"c\n")
    assert [m.uid for m in box.messages] == ["1700000001.Qa.host"]
    assert box.delete([0]) == 0
    box.close()
    assert os.listdir(maildir / "new") == ["1700000003.Qc.host,S=2"]
    box = MaildirMaildrop.open(maildir)
    assert [m.uid for m in box.messages] == ["1700000003.Qc.host"]
    box.close()


def test_message_renamed_by_another_reader_is_still_read_and_deleted(maildir):
    deliver(maildir, "1700000001.Qa.host", b"a\n")
    box = MaildirMaildrop.open(maildir)
    (name,) = os.listdir(maildir / "cur")
    os.rename(maildir / "cur" / name, maildir / "cur" / (name + "S"))  # mutt marked it seen
    assert read(box, 0) == b"a\r\n"
    assert box.delete([0]) == 0 and not os.listdir(maildir / "cur")
    box.close()


def test_cur_message_without_size_and_odd_names(maildir):
    (maildir / "cur" / "1.x:2,S").write_bytes(b"x\r\ny\n")
    long = "9" * 80
    (maildir / "cur" / f"{long}:2,").write_bytes(b"z\n")
    box = MaildirMaildrop.open(maildir)
    sizes = {m.uid: m.size for m in box.messages}
    box.close()
    assert sizes["1.x"] == 6
    assert next(uid for uid in sizes if uid != "1.x") != long  # too long for a UIDL: a digest


def test_lock_refuses_a_second_session_and_dies_with_the_process(maildir):
    box = MaildirMaildrop.open(maildir)
    with pytest.raises(MaildropBusy):
        MaildirMaildrop.open(maildir)
    box.close()
    MaildirMaildrop.open(maildir).close()
    # A process killed while holding the lock leaves nothing behind that keeps users out.
    holder = (f"import fcntl, os, time; fd = os.open({str(maildir / LOCK_NAME)!r}, os.O_RDWR); "
              "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    with pytest.raises(MaildropBusy):
        MaildirMaildrop.open(maildir)
    child.kill()
    child.wait()
    child.stdout.close()
    MaildirMaildrop.open(maildir).close()


def test_a_user_without_a_maildir_yet_has_an_empty_maildrop(tmp_path):
    box = MaildirMaildrop.for_user(tmp_path, "new@example.test")
    assert box.messages == [] and box.maildir == tmp_path / "example.test" / "new" / "Maildir"
    box.close()


def test_crlf_form_keeps_existing_crlf():
    assert crlf_form(b"a\r\nb\nc") == b"a\r\nb\r\nc"


def test_read_start_hands_back_the_file_only_when_more_is_left(maildir):
    deliver(maildir, "1700000001.Qa.host", b"Subject: a\n\n" + b"x" * 20 + b"\n")
    box = MaildirMaildrop.open(maildir)
    try:
        data, rest = box.read_start(0, 64)
        assert data == b"Subject: a\n\n" + b"x" * 20 + b"\n" and rest is None
        data, rest = box.read_start(0, 10)
        assert data == b"Subject: a"
        with rest:
            assert data + rest.read() == b"Subject: a\n\n" + b"x" * 20 + b"\n"
    finally:
        box.close()
