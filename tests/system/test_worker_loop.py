"""A session's blocking work (the accounts DB, a mailbox's quota file) runs in its worker's
thread pool: while it waits, the worker's other sessions are answered."""

from __future__ import annotations

import errno
import os
import smtplib
import time
from pathlib import Path

from .conftest import USER, cli

# Generous, for a loaded CI: an answer comes within it unless the worker's event loop is
# blocked, and then none comes until the blocked work is released.
REPLY_TIMEOUT = 15


def _writer_once_read(fifo: Path) -> int:
    """The write end of `fifo`, once the server has opened it for reading (and so waits on it)."""
    deadline = time.monotonic() + REPLY_TIMEOUT
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # ENXIO: no reader yet
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
        time.sleep(0.02)


def test_a_blocked_rcpt_does_not_hold_up_other_sessions(make_server):
    # The watchdog must not come to the rescue: a replaced worker would answer the other session.
    server = make_server(smtp={"workers": 1}, server={"worker_timeout": 4 * REPLY_TIMEOUT})
    # RCPT reads the recipient's maildirsize file (a quota is set). A FIFO in its place is a
    # disk that does not answer: the read waits until the test writes the file's contents.
    # Those say the mailbox is over its quota, so the RCPT's answer shows that it read them.
    cli(server.conf, "quota", "set", USER, "1M")
    fifo = server.maildir() / "maildirsize"
    os.mkfifo(fifo)
    server.start()
    (worker,) = server.worker_pids()
    blocked = smtplib.SMTP("127.0.0.1", server.port, timeout=REPLY_TIMEOUT)
    blocked.ehlo("blocked.test")
    blocked.mail("bob@remote.test")
    blocked.putcmd("rcpt", f"TO:<{USER}>")
    writer = _writer_once_read(fifo)
    try:
        # The only SMTP worker is in the middle of that RCPT: a new session is served anyway.
        with smtplib.SMTP("127.0.0.1", server.port, timeout=REPLY_TIMEOUT) as other:
            assert other.ehlo("other.test")[0] == 250
            assert other.noop()[0] == 250
        os.write(writer, b"1048576S,0C\n2000000 1\n")
    finally:
        os.close(writer)
        fifo.unlink()
    assert blocked.getreply() == (452, b"4.2.2 <alice@example.test>: Mailbox full")
    blocked.quit()
    assert server.worker_pids() == [worker]
