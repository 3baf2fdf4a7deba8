"""store/waiting.py: inside `refused()` a lock held elsewhere raises WouldWait instead of being
waited for, and the IMAP machine's `handle_on_loop` gives such a command back untouched (no
untagged line said, nothing changed) for the thread pool to run."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest

from mailforge.protocols.imap.state import IMAPMachine, IMAPSettings
from mailforge.speedups import CommandParser
from mailforge.store import waiting
from mailforge.store.folders import MaildirMailbox
from mailforge.store.uidindex import LOCK_NAME
from mailforge.store.waiting import WouldWait

USER = "alice@example.test"


def test_a_held_lock_is_refused_inside_and_waited_for_outside():
    lock = threading.RLock()
    taken = threading.Event()
    release = threading.Event()

    def holder():
        with lock:
            taken.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    taken.wait(5)
    with waiting.refused(), pytest.raises(WouldWait):
        with waiting.held(lock):
            pass
    release.set()
    with waiting.held(lock):  # outside: waits, and gets it
        assert not waiting.refusing()
    thread.join()
    with waiting.refused(), waiting.held(lock), waiting.held(lock):  # its own: re-entered
        pass


def test_a_flock_held_by_another_descriptor_is_refused(tmp_path):
    path = tmp_path / "lock"
    other = os.open(path, os.O_RDWR | os.O_CREAT)
    mine = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        with waiting.refused(), pytest.raises(WouldWait):
            waiting.flock_exclusive(mine)
        fcntl.flock(other, fcntl.LOCK_UN)
        with waiting.refused():
            waiting.flock_exclusive(mine)
    finally:
        os.close(other)
        os.close(mine)


class Accounts:
    def check_password(self, address: str, password: str) -> bool:
        return True


def send(machine: IMAPMachine, line: bytes, on_loop: bool = False):
    command, _ = CommandParser().feed(line + b"\r\n")
    return machine.handle_on_loop(command) if on_loop else machine.handle(command)


def test_a_command_that_would_wait_on_the_loop_is_given_back_unchanged(tmp_path):
    mailbox = MaildirMailbox(tmp_path, USER)
    for n in range(2):
        mailbox.append("INBOX", b"Subject: %d\r\n\r\nhi\r\n" % n)
    machine = IMAPMachine(IMAPSettings("mx.example.test", allow_plaintext_auth=True),
                          Accounts(), lambda user: MaildirMailbox(tmp_path, user))
    reply = send(machine, b'a LOGIN alice@example.test "x"')
    machine.mailbox_opened()
    send(machine, b"s SELECT INBOX")
    holder = os.open(mailbox.root / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another process's APPEND, say
        assert send(machine, b"t STORE 1:2 +FLAGS (\\Flagged)", on_loop=True) is None
        assert mailbox.select("INBOX", read_only=True).messages()[0].flags == frozenset()
        # A view-only FETCH needs no lock: answered on the loop all the same.
        reply = send(machine, b"f FETCH 1 (FLAGS)", on_loop=True)
        assert reply is not None and reply.text.startswith(b"* 1 FETCH (FLAGS (\\Recent))")
    finally:
        os.close(holder)
    reply = send(machine, b"t STORE 1:2 +FLAGS (\\Flagged)")  # in the pool
    assert reply.text == (b"* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
                          b"* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
                          b"t OK STORE completed\r\n")


def test_reads_past_the_limit_are_refused_inside_and_done_outside(tmp_path):
    mailbox = MaildirMailbox(tmp_path, USER)
    for n in range(3):
        mailbox.append("INBOX", b"Subject: %d\r\n\r\n" % n + b"x" * 1000)
    folder = mailbox.select("INBOX")
    uids = [info.uid for info in folder.messages()]
    with waiting.refused(read_limit=2100):
        folder.read(uids[0])
        folder.read(uids[1])
        with pytest.raises(WouldWait):
            folder.read(uids[2])  # the third passes 2,100 octets
    with waiting.refused():
        with pytest.raises(WouldWait):
            folder.read(uids[0])  # no limit given: no read on the loop
    assert folder.read(uids[2]).startswith(b"Subject: 2")  # outside: read


def test_a_fetch_that_reads_much_on_the_loop_is_given_back_for_the_pool(tmp_path):
    from mailforge.protocols.imap.messages import LOOP_READ_LIMIT
    mailbox = MaildirMailbox(tmp_path, USER)
    half = b"x" * (LOOP_READ_LIMIT // 2)
    for n in range(3):
        mailbox.append("INBOX", b"Subject: %d\r\n\r\n" % n + half)
    machine = IMAPMachine(IMAPSettings("mx.example.test", allow_plaintext_auth=True),
                          Accounts(), lambda user: MaildirMailbox(tmp_path, user))
    send(machine, b'a LOGIN alice@example.test "x"')
    machine.mailbox_opened()
    send(machine, b"s SELECT INBOX")
    assert not machine.runs_in_thread(CommandParser().feed(b"f FETCH 1:3 (BODY.PEEK[])\r\n")[0])
    # Two of them fit the loop's limit, the third does not: nothing is said on the loop.
    assert send(machine, b"f FETCH 1:3 (BODY.PEEK[])", on_loop=True) is None
    reply = send(machine, b"f FETCH 1:3 (BODY.PEEK[])")  # in the pool: all three
    assert reply.text.count(b" FETCH (BODY[] {") == 3 and reply.text.endswith(b"f OK FETCH completed\r\n")
    reply = send(machine, b"g FETCH 2 (BODY.PEEK[])", on_loop=True)
    assert reply is not None and reply.text.startswith(b"* 2 FETCH (BODY[] {")


def logged_in_machine(tmp_path):
    machine = IMAPMachine(IMAPSettings("mx.example.test", allow_plaintext_auth=True),
                          Accounts(), lambda user: MaildirMailbox(tmp_path, user))
    send(machine, b'a LOGIN alice@example.test "x"')
    machine.mailbox_opened()
    send(machine, b"s SELECT INBOX")
    return machine


def files(folder, sub):
    return sorted(os.listdir(folder / sub))


def test_an_append_on_the_loop_gives_its_syncs_to_the_pool_and_answers_after_them(tmp_path):
    from mailforge.protocols.imap.state import Blocking
    machine = logged_in_machine(tmp_path)
    root = MaildirMailbox(tmp_path, USER).root
    outcome = send(machine, b"t APPEND INBOX {11+}\r\nSubject: x", on_loop=True)
    # First the new file's data: written to tmp/, not yet in cur/.
    assert isinstance(outcome, Blocking)
    assert len(files(root, "tmp")) == 1 and files(root, "cur") == []
    outcome.step()
    outcome = machine.resume_on_loop(outcome, None)
    # Then cur/ and the change log, after the message is in the folder.
    assert isinstance(outcome, Blocking)
    assert files(root, "tmp") == [] and len(files(root, "cur")) == 1
    outcome.step()
    reply = machine.resume_on_loop(outcome, None)
    assert reply.text.endswith(b"t OK [APPENDUID %d 1] APPEND completed\r\n"
                               % machine.selected.folder.uidvalidity)
    assert b"* 1 EXISTS\r\n* 1 RECENT\r\n" in reply.text


def test_an_append_whose_sync_failed_answers_no_and_leaves_nothing(tmp_path):
    machine = logged_in_machine(tmp_path)
    root = MaildirMailbox(tmp_path, USER).root
    outcome = send(machine, b"t APPEND INBOX {11+}\r\nSubject: x", on_loop=True)
    outcome.step()  # (the step closes the file; it is its failure that counts)
    reply = machine.resume_on_loop(outcome, OSError(5, "Input/output error"))
    assert reply.text.startswith(b"t NO ") and files(root, "tmp") == files(root, "cur") == []
    assert send(machine, b"n NOOP").text == b"n OK NOOP completed\r\n"


def test_an_append_that_finds_the_folder_locked_is_given_back_unmade(tmp_path):
    machine = logged_in_machine(tmp_path)
    root = MaildirMailbox(tmp_path, USER).root
    outcome = send(machine, b"t APPEND INBOX {11+}\r\nSubject: x", on_loop=True)
    outcome.step()
    holder = os.open(root / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another process's change
        assert machine.resume_on_loop(outcome, None) is None
    finally:
        os.close(holder)
    assert files(root, "tmp") == files(root, "cur") == []
    reply = send(machine, b"t APPEND INBOX {11+}\r\nSubject: x")  # again, in the pool
    assert b"t OK [APPENDUID" in reply.text and len(files(root, "cur")) == 1


def test_a_message_that_cannot_be_linked_is_copied_and_synced_by_the_change(tmp_path):
    mailbox = MaildirMailbox(tmp_path, USER)
    # Put there by another Maildir tool: no W= size in its name, so COPY copies the bytes.
    (mailbox.root / "cur" / "1700000000.M1P1.host:2,S").write_bytes(b"Subject: x\r\n\r\nhi\r\n")
    machine = logged_in_machine(tmp_path)
    send(machine, b"c CREATE Archive")
    reply = send(machine, b"k COPY 1 Archive")
    assert b"k OK [COPYUID" in reply.text
    archive = mailbox.root / ".Archive"
    (copied,) = files(archive, "cur")
    assert (archive / "cur" / copied).read_bytes() == b"Subject: x\r\n\r\nhi\r\n"
    assert files(archive, "tmp") == []
