"""A full disk under the data dir: a message that cannot be queued is answered 452 4.3.1
(insufficient system storage), leaves no file behind, and the session goes on; once there is
space again the same session queues and delivers. Issue 22, item 2.

The data dir is on a small tmpfs of the test's own. Its log/ is moved off that disk (a link to
the test's temp dir), so that the server's log lines written while the disk is full are kept
and can be read for tracebacks.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import shutil
import smtplib

import pytest

from mailforge.queue.segment import record_count

from .conftest import PASSWORD, USER

DISK_MB = 24
BIG = 400 * 1024  # over SPILL_SIZE (256 KiB): streamed into .msg/.env files of its own
SMALL = 2 * 1024  # a segment record


def message(size: int, n: int = 1) -> bytes:
    head = (b"From: Bob <bob@remote.test>\r\nTo: alice@example.test\r\nSubject: full disk %d\r\n"
            b"Message-ID: <full%d@remote.test>\r\n\r\n" % (n, n))
    line = b"x" * 78 + b"\r\n"
    return head + line * ((size - len(head)) // len(line) + 1)


@pytest.fixture
def disk_server(small_disk_factory, make_server, tmp_path):
    """(disk, server): a started server whose data dir is on a small disk; log/ is not."""
    def start(**options):
        disk = small_disk_factory(DISK_MB)
        server = make_server(root=disk.path, **options)
        logs = tmp_path / "logs"
        shutil.move(server.dir / "log", logs)
        (server.dir / "log").symlink_to(logs)
        server.start()
        return disk, server
    return start


def queue_files(server) -> list[str]:
    """The queue's files that hold some message: .msg/.env, and segments with records in them.
    (A segment whose append failed is left empty, sealed as `<id>.0.seg` and dropped later.)"""
    queue, found = server.config.queue_dir, []
    for sub in ("incoming", "active", "segments"):
        for entry in os.scandir(queue / sub):
            if entry.name.endswith(".seg") and record_count(entry.name) == 0:
                continue
            with contextlib.suppress(FileNotFoundError):  # sealed while we looked
                if sub != "segments" or entry.stat().st_size:
                    found.append(entry.name)
    return found


def assert_clean_log(server) -> None:
    log = server.log()
    assert "Traceback" not in log, log[-4000:]
    assert "session from" not in log, log[-4000:]  # "smtp: session from … failed"


def bdat(client: smtplib.SMTP, data: bytes, last: bool = True) -> tuple[int, bytes]:
    client.putcmd(f"BDAT {len(data)}{' LAST' if last else ''}")
    client.send(data)
    return client.getreply()


def send_after_freeing(disk, server, client: smtplib.SMTP, size: int) -> None:
    """Space is back: the same session queues a message, and it is delivered."""
    disk.free()
    assert client.sendmail("bob@remote.test", [USER], message(size, 2)) == {}
    (path,) = server.wait_delivered(1)
    assert b"Subject: full disk 2" in path.read_bytes()


@pytest.mark.parametrize("size", [BIG, SMALL], ids=["spilled", "segment"])
def test_data_on_full_disk_is_452_and_session_goes_on(disk_server, size):
    disk, server = disk_server()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        disk.fill()
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("bob@remote.test", [USER], message(size))
        assert refused.value.smtp_code == 452
        assert refused.value.smtp_error.startswith(b"4.3.1 ")
        assert queue_files(server) == []
        assert client.noop()[0] == 250  # in step: the rest of the body was read, not a command
        send_after_freeing(disk, server, client, size)
    assert_clean_log(server)
    assert "queue write failed" in server.log()


def test_bdat_on_full_disk_is_452_and_session_goes_on(disk_server):
    disk, server = disk_server()
    body = message(BIG)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        disk.fill()
        # One chunk with LAST; then a first chunk, not the last, over the spill size.
        for chunks in ([(body, True)], [(body[:300 * 1024], False)]):
            assert client.mail("bob@remote.test")[0] == 250
            assert client.rcpt(USER)[0] == 250
            for chunk, last in chunks:
                code, text = bdat(client, chunk, last)
                assert (code, text[:6]) == (452, b"4.3.1 "), text
            assert queue_files(server) == []
        # The transaction is over: a chunk sent anyway is read and refused, not queued.
        code, _ = bdat(client, body[300 * 1024:], True)
        assert code == 503
        assert client.noop()[0] == 250
        disk.free()
        assert client.mail("bob@remote.test")[0] == 250
        assert client.rcpt(USER)[0] == 250
        code, text = bdat(client, message(BIG, 2), True)
        assert code == 250 and b"queued as" in text, text
    (path,) = server.wait_delivered(1)
    assert b"Subject: full disk 2" in path.read_bytes()
    assert_clean_log(server)


def test_bdat_commit_on_full_disk_is_452(disk_server):
    """The body is written, then the disk fills: the envelope, written at the commit, fails."""
    disk, server = disk_server()
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail("bob@remote.test")[0] == 250
        assert client.rcpt(USER)[0] == 250
        assert bdat(client, message(BIG), last=False)[0] == 250
        assert sorted(name[-4:] for name in queue_files(server)) == [".env", ".msg"]
        disk.fill()
        code, text = bdat(client, b"", last=True)
        assert (code, text[:6]) == (452, b"4.3.1 "), text
        assert queue_files(server) == []
        send_after_freeing(disk, server, client, BIG)
    assert_clean_log(server)


def test_imap_append_on_full_disk_is_a_tagged_no(disk_server):
    disk, server = disk_server(imap_services=True, server={"allow_plaintext_auth": True})
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    try:
        client.login(USER, PASSWORD)
        disk.fill()
        status, data = client.append("INBOX", None, None, message(BIG))
        assert status == "NO", data
        assert data[0] == b"[UNAVAILABLE] Not enough disk space, try again later", data
        assert list((server.maildir() / "tmp").iterdir()) == []
        disk.free()
        assert client.append("INBOX", None, None, message(SMALL, 2))[0] == "OK"
        assert client.select("INBOX") == ("OK", [b"1"])
        assert client.noop()[0] == "OK"
    finally:
        client.logout()
    assert_clean_log(server)
