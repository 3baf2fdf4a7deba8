"""NOTIFY (RFC 5465) over a real server: one session is told what another changed in folders
it has not selected (STATUS), in the folder list and subscriptions (LIST), and in its selected
folder with MessageNew's FETCH attributes; after any command and while idling."""

from __future__ import annotations

import re

from .imap_helpers import RawSession, login, message

EVERYTHING = b"(MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)"


def notified(server, spec: bytes) -> RawSession:
    session = RawSession(server.imap_port)
    session.login()
    lines = session.command(b"N", b"NOTIFY SET " + spec)
    assert lines[-1].startswith(b"N OK"), lines
    return session


def untagged(session: RawSession, command: bytes = b"NOOP") -> list[bytes]:
    return session.command(b"P", command)[:-1]


def test_changes_to_other_folders_and_the_folder_list_are_told_after_any_command(imap_server):
    other = login(imap_server)
    other.create("Work")
    watcher = notified(imap_server, b"STATUS (PERSONAL " + EVERYTHING + b")")
    other.append("Work", None, None, message(1))
    lines = untagged(watcher, b"CAPABILITY")
    assert re.fullmatch(rb'\* STATUS Work \(MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+ UNSEEN 1\)\r\n',
                        lines[-1]), lines
    other.select("Work")
    other.store("1", "+FLAGS", r"(\Seen)")
    assert untagged(watcher) == [b"* STATUS Work (UNSEEN 0)\r\n"]
    other.store("1", "+FLAGS", r"(\Deleted)")
    other.expunge()
    other.close()
    assert untagged(watcher)[-1] == b"* STATUS Work (MESSAGES 0 UIDNEXT 2 UNSEEN 0)\r\n"
    other.create("Projects")
    other.subscribe("Projects")
    lines = untagged(watcher)
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" Projects\r\n' in lines, lines
    other.delete("Projects")
    assert untagged(watcher) == [b'* LIST (\\NonExistent) "/" Projects\r\n']
    assert untagged(watcher) == []  # each change told once
    watcher.command(b"X", b"NOTIFY NONE")
    other.append("Work", None, None, message(2))
    assert untagged(watcher) == []
    watcher.close()
    other.logout()


def test_a_message_new_in_another_folder_is_pushed_while_idling(imap_server):
    other = login(imap_server)
    other.create("Lists")
    watcher = notified(imap_server, b"(MAILBOXES Lists (MessageNew MessageExpunge))")
    watcher.start_idle()
    other.append("Lists", None, None, message(1))
    line = watcher.readline()
    assert re.fullmatch(rb"\* STATUS Lists \(MESSAGES 1 UIDNEXT 2 UIDVALIDITY \d+ UNSEEN 1\)\r\n",
                        line), line
    watcher.end_idle()
    watcher.close()
    other.logout()


def test_new_messages_in_the_selected_folder_come_with_the_fetch_attributes(imap_server):
    other = login(imap_server)
    watcher = RawSession(imap_server.imap_port)
    watcher.login()
    watcher.command(b"S", b"SELECT INBOX")
    assert watcher.command(b"N", b"NOTIFY SET (SELECTED (MessageNew (UID FLAGS "
                                 b"BODY.PEEK[1]) MessageExpunge))"
                           )[-1].startswith(b"N OK")
    other.append("INBOX", None, None, message(7))
    lines = untagged(watcher)
    assert lines[:2] == [b"* 1 EXISTS\r\n", b"* 1 RECENT\r\n"]
    assert lines[2] == b"* 1 FETCH (UID 1 FLAGS (\\Recent) BODY[1] {9}\r\n"
    assert lines[3] == b"hello 7\r\n"
    # SELECTED (not SELECTED-DELAYED): an expunge is told even after a FETCH.
    other.select("INBOX")
    other.store("1", "+FLAGS", r"(\Deleted)")
    other.expunge()
    assert watcher.command(b"F", b"FETCH 1 FLAGS")[-2:] == [b"* 1 EXPUNGE\r\n",
                                                          b"F OK FETCH completed\r\n"]
    watcher.close()
    other.logout()


def test_notify_refuses_what_it_does_not_offer(imap_server):
    session = RawSession(imap_server.imap_port)
    session.login()
    lines = session.command(b"A", b"NOTIFY SET (PERSONAL (MessageNew AnnotationChange))")
    assert lines[-1].startswith(b"A NO [BADEVENT (MessageNew MessageExpunge FlagChange ")
    lines = session.command(b"B", b"NOTIFY SET (PERSONAL (MessageNew (UID) MessageExpunge))")
    assert lines[-1].startswith(b"B BAD")
    lines = session.command(b"C", b"NOTIFY SET (SELECTED (MessageNew))")
    assert lines[-1] == b"C BAD MessageNew and MessageExpunge must be together\r\n"
    names = b" ".join(b"f%d" % n for n in range(101))
    lines = session.command(b"D", b"NOTIFY SET (MAILBOXES (%s) (MessageNew))" % names)
    assert lines[-1].startswith(b"D NO [NOTIFICATIONOVERFLOW]")
    assert session.command(b"E", b"NOTIFY BOGUS")[-1].startswith(b"E BAD")
    session.close()


def test_a_session_busy_elsewhere_is_told_within_a_bounded_number_of_looks(imap_server):
    """Many watched folders are checked FOLDERS_PER_LOOK at a time: a change is told by the
    time every folder had its turn, and told once."""
    other = login(imap_server)
    for n in range(60):
        other.create(f"F{n}")
    watcher = notified(imap_server, b"(PERSONAL (MessageNew MessageExpunge))")
    other.append("F59", None, None, message(1))
    told = []
    for _ in range(3):  # 66 folders (the 60 and INBOX, Sent, ...), 50 a look
        told += [line for line in untagged(watcher) if line.startswith(b"* STATUS")]
    assert len(told) == 1 and told[0].startswith(b"* STATUS F59 (MESSAGES 1 ")
    for _ in range(3):
        assert untagged(watcher) == []
    watcher.close()
    other.logout()
