"""The Maildir++ store behind api.Mailbox/api.Folder, on real files."""

import os

import pytest

from mailforge.store.api import (
    DELETED,
    FLAGGED,
    SEEN,
    FlagMode,
    FolderExists,
    FolderNotFound,
    InvalidName,
    StoreError,
)
from mailforge.store.folders import MaildirMailbox
from mailforge.store.maildir import ensure_maildir, mailbox_path
from mailforge.store.pop3box import MaildirMaildrop, crlf_form

ADDRESS = "user@example.test"


@pytest.fixture
def mailbox(tmp_path):
    return MaildirMailbox(tmp_path, ADDRESS)


def deliver(store_dir, base, body=b"Subject: hi\n\nbody\n"):
    """What queue/delivery.py does: a file in new/ named <base>,S=<size>."""
    maildir = ensure_maildir(mailbox_path(store_dir, ADDRESS))
    (maildir / "new" / f"{base},S={len(body)}").write_bytes(body)


def uids(folder):
    return [info.uid for info in folder.messages()]


def test_inbox_and_special_use_folders_on_first_open(mailbox):
    infos = {info.name: info.attributes for info in mailbox.folders()}
    assert next(iter(infos)) == "INBOX"
    assert infos["Sent"] >= {"\\Sent", "\\HasNoChildren"}
    assert {"Drafts", "Trash", "Junk", "Archive"} <= set(infos)
    assert (mailbox.root / ".Sent" / "maildirfolder").exists()


def test_uids_are_stable_across_reopen_and_never_reused(tmp_path, mailbox):
    deliver(tmp_path, "1700000001.Qa.host")
    deliver(tmp_path, "1700000002.Qb.host")
    folder = mailbox.select("INBOX")
    assert uids(folder) == [1, 2]
    folder.set_flags([1], [DELETED], FlagMode.ADD)
    assert folder.expunge() == [1]
    assert uids(folder) == [2]
    again = MaildirMailbox(tmp_path, ADDRESS).select("INBOX")
    assert uids(again) == [2] and again.uidvalidity == folder.uidvalidity
    deliver(tmp_path, "1700000003.Qc.host")
    assert [info.uid for info in again.refresh().added] == [3]


def test_two_sessions_see_each_others_changes(tmp_path, mailbox):
    one = mailbox.select("INBOX")
    two = MaildirMailbox(tmp_path, ADDRESS).select("INBOX")
    appended = mailbox.append("INBOX", b"Subject: a\n\nx\n", [SEEN])
    (uid,) = appended.uids
    changes = two.refresh()
    assert [(i.uid, i.flags) for i in changes.added] == [(uid, frozenset({SEEN}))]
    # \Recent goes to exactly one read-write session.
    assert sum(i.recent for i in (one.refresh().added + changes.added)) == 1
    one.set_flags([uid], [FLAGGED, "$Label1"], FlagMode.ADD)
    changes = two.refresh()
    assert [i.flags for i in changes.flags] == [frozenset({SEEN, FLAGGED, "$Label1"})]
    assert not two.refresh()
    two.set_flags([uid], [DELETED], FlagMode.ADD)
    assert two.expunge() == [uid]
    assert one.refresh().expunged == (uid,) and one.messages() == []


def test_flag_changes_from_two_stale_sessions_both_land(tmp_path, mailbox):
    deliver(tmp_path, "1700000001.Qa.host")
    one = mailbox.select("INBOX")
    two = MaildirMailbox(tmp_path, ADDRESS).select("INBOX")
    one.set_flags([1], [SEEN], FlagMode.ADD)
    (info,) = two.set_flags([1], [FLAGGED], FlagMode.ADD)  # two has not refreshed
    assert info.flags == {SEEN, FLAGGED}
    reopened = MaildirMailbox(tmp_path, ADDRESS).select("INBOX", read_only=True)
    assert reopened.messages()[0].flags == {SEEN, FLAGGED}
    (name,) = os.listdir(mailbox.root / "cur")
    assert name.endswith(":2,FS")


def test_examine_sees_recent_but_claims_none_and_changes_nothing(tmp_path, mailbox):
    """RFC 3501 6.3.2: EXAMINE reports \\Recent and leaves it to the next SELECT."""
    deliver(tmp_path, "1700000001.Qa.host")
    examined = mailbox.select("INBOX", read_only=True)
    assert [i.recent for i in examined.messages()] == [True]
    assert examined.set_flags([1], [SEEN], FlagMode.ADD)[0].flags == frozenset()
    assert os.listdir(mailbox.root / "new")
    assert mailbox.status("INBOX").recent == 1
    selected = mailbox.select("INBOX")
    assert [i.recent for i in selected.messages()] == [True]
    assert mailbox.status("INBOX").recent == 0


def test_read_gives_crlf_and_size_matches(tmp_path, mailbox):
    deliver(tmp_path, "1700000001.Qa.host", b"Subject: a\n\nline\n")
    folder = mailbox.select("INBOX")
    data = folder.read(1)
    assert data == b"Subject: a\r\n\r\nline\r\n" and folder.messages()[0].size == len(data)
    with pytest.raises(StoreError):
        folder.read(99)


def test_append_sets_internal_date_and_flags(mailbox):
    appended = mailbox.append("Drafts", b"x\r\n", ["\\draft", "\\Recent"], 1_600_000_000.0)
    folder = mailbox.select("Drafts")
    (info,) = folder.messages()
    assert info.uid == appended.uids[0] and appended.uidvalidity == folder.uidvalidity
    assert info.flags == {"\\Draft"} and info.internal_date == 1_600_000_000.0
    with pytest.raises(FolderNotFound):
        mailbox.append("Nope", b"x\r\n")


def test_create_list_delete_rename(mailbox):
    mailbox.create("Work/2024/Q1")
    names = {info.name: info.attributes for info in mailbox.folders()}
    assert "\\HasChildren" in names["Work"] and "\\HasNoChildren" in names["Work/2024/Q1"]
    assert (mailbox.root / ".Work.2024.Q1").is_dir()
    with pytest.raises(FolderExists):
        mailbox.create("Work")
    mailbox.create("v1.2")
    assert (mailbox.root / ".v1\\2e2").is_dir() and "v1.2" in {i.name for i in mailbox.folders()}
    mailbox.append("Work/2024", b"a\n")
    mailbox.rename("Work", "Old/Work")
    names = {info.name for info in mailbox.folders()}
    assert {"Old", "Old/Work", "Old/Work/2024", "Old/Work/2024/Q1"} <= names
    assert "Work" not in names and len(mailbox.select("Old/Work/2024").messages()) == 1
    mailbox.delete("Old/Work")  # has children: its name stays, \Noselect
    infos = {info.name: info.attributes for info in mailbox.folders()}
    assert "\\Noselect" in infos["Old/Work"] and "Old/Work/2024" in infos
    with pytest.raises(FolderNotFound):
        mailbox.select("Old/Work")
    with pytest.raises(InvalidName):
        mailbox.delete("inbox")
    with pytest.raises(InvalidName):
        mailbox.create("a//b")


def test_rename_inbox_moves_its_messages(tmp_path, mailbox):
    deliver(tmp_path, "1700000001.Qa.host")
    inbox = mailbox.select("INBOX")
    inbox.set_flags([1], [SEEN], FlagMode.ADD)
    mailbox.rename("INBOX", "Old mail")
    assert inbox.refresh().expunged == (1,)
    moved = mailbox.select("Old mail")
    assert [i.flags for i in moved.messages()] == [frozenset({SEEN})]
    assert "INBOX" in {info.name for info in mailbox.folders()}


def test_copy_and_move_keep_flags_and_dates(mailbox):
    mailbox.create("Keep")
    mailbox.append("INBOX", b"one\n", [SEEN, "$Important"], 1_600_000_000.0)
    mailbox.append("INBOX", b"two\n")
    inbox = mailbox.select("INBOX")
    uidvalidity, pairs = inbox.copy([1], "Keep")
    keep = mailbox.select("Keep")
    assert uidvalidity == keep.uidvalidity and pairs == [(1, keep.messages()[0].uid)]
    assert keep.messages()[0].flags == {SEEN, "$Important"}
    assert keep.messages()[0].internal_date == 1_600_000_000.0
    _, pairs = inbox.move([2], "Keep")
    assert uids(inbox) == [1] and [i.uid for i in keep.refresh().added] == [pairs[0][1]]
    assert keep.read(pairs[0][1]) == b"two\r\n"
    with pytest.raises(FolderNotFound):
        inbox.copy([1], "Missing")


def test_subscriptions_in_dovecot_format(mailbox):
    mailbox.create("A/B")
    mailbox.subscribe("A/B")
    mailbox.subscribe("INBOX")
    assert (mailbox.root / "subscriptions").read_text() == "V\t2\n\nA\tB\nINBOX\n"
    mailbox.subscribe("INBOX", False)
    assert mailbox.subscriptions() == ["A/B"]
    assert {i.name for i in mailbox.folders() if i.subscribed} == {"A/B"}


def test_pop3_and_imap_share_one_identity(tmp_path, mailbox):
    deliver(tmp_path, "1700000001.Qa.host")
    deliver(tmp_path, "1700000002.Qb.host")
    drop = MaildirMaildrop.for_user(tmp_path, ADDRESS)
    folder = mailbox.select("INBOX")
    assert len(folder.messages()) == len(drop.messages) == 2
    pop3_view = []
    for index in (0, 1):
        with drop.open_message(index) as message:
            pop3_view.append(crlf_form(message.read()))
    assert [folder.read(i.uid) for i in folder.messages()] == pop3_view
    drop.delete([0])
    drop.close()
    assert folder.refresh().expunged == (1,)
    assert uids(folder) == [2]


def test_a_second_select_sees_what_other_sessions_changed_meanwhile(tmp_path):
    """A session keeps what it learnt of a folder between SELECTs (dates, sizes, flags by file
    name); what another session changed in between must still show, keywords included."""
    mine, other = MaildirMailbox(tmp_path, ADDRESS), MaildirMailbox(tmp_path, ADDRESS)
    first = mine.append("INBOX", b"Subject: a\r\n\r\none\r\n", internal_date=1_000_000).uids[0]
    second = mine.append("INBOX", b"Subject: b\r\n\r\ntwo\r\n").uids[0]
    before = {info.uid: info for info in mine.select("INBOX").messages()}
    theirs = other.select("INBOX")
    theirs.set_flags([first], ["$Label", SEEN], FlagMode.ADD)
    theirs.set_flags([second], [DELETED], FlagMode.ADD)
    theirs.expunge()
    third = other.append("INBOX", b"Subject: c\r\n\r\nthree\r\n").uids[0]
    after = {info.uid: info for info in mine.select("INBOX").messages()}
    assert sorted(after) == [first, third]
    assert after[first].flags == {"$Label", SEEN}
    assert after[first].internal_date == before[first].internal_date == 1_000_000
    assert after[first].size == before[first].size == len(b"Subject: a\r\n\r\none\r\n")
