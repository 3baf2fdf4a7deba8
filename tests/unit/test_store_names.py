"""Pure parts of the store: folder names on disk, Maildir file names, the index format."""

import re

import pytest

from mailforge.store import folderdir, uidindex
from mailforge.store.api import InvalidName
from mailforge.store.filenames import (
    arrival_order,
    base_of,
    claimed_name,
    crlf_size,
    field_of,
    letters_of,
    maildir_hostname,
    message_base,
    new_base,
    sized_name,
    with_letters,
    with_size,
)
from mailforge.store.folders import MaildirMailbox
from mailforge.store.names import from_dir, normalize, to_dir


@pytest.mark.parametrize("name, directory", [
    ("Sent", ".Sent"), ("Sent/2024", ".Sent.2024"), ("v1.2/a\\b", ".v1\\2e2.a\\5cb"),
    ("Entwürfe", ".Entwürfe"), ("INBOX/Sub", ".INBOX.Sub")])
def test_folder_names_round_trip(name, directory):
    assert to_dir(name) == directory and from_dir(directory) == name


@pytest.mark.parametrize("name", ["", "/a", "a/", "a//b", "a\tb", "x" * 300])
def test_invalid_names(name):
    with pytest.raises(InvalidName):
        to_dir(normalize(name))


def test_inbox_is_case_insensitive_and_odd_directories_are_ignored():
    assert normalize("inbox/Sub") == "INBOX/Sub"
    assert [from_dir(d) for d in ("cur", "..", ".a..b", ".bad\\zz")] == [None] * 4


def test_maildir_file_names():
    name = "1700000000.Qx.host,S=12:2,FSa"
    assert base_of(name) == "1700000000.Qx.host" and field_of(name, "S") == 12
    assert letters_of(name) == "FSa" and field_of(name, "W") is None
    assert with_size(name, 14) == "1700000000.Qx.host,S=12,W=14:2,FSa"
    assert with_letters("b,S=1", "TS") == "b,S=1:2,ST"
    assert crlf_size(b"a\nb\r\n") == 6
    assert sized_name("1.Qx.host", 12) == "1.Qx.host,S=12"
    assert sized_name("1.Qx.host", 12, 14) == "1.Qx.host,S=12,W=14"
    assert claimed_name("1.Qx.host,S=12", 14) == "1.Qx.host,S=12,W=14:2,"
    assert claimed_name("1.Qx.host,S=12,W=14:2,S", 99) == "1.Qx.host,S=12,W=14:2,S"


def test_hostname_escapes_slash_and_colon():
    assert maildir_hostname("a/b:c.example") == "a\\057b\\072c.example"


def test_names_follow_dovecots_form_and_are_stable_per_message_and_mailbox():
    name = message_base(1700000000.5, "abc-1-2", "bob@example.test")
    assert re.fullmatch(rf"1700000000\.Qabc-1-2M[0-9a-f]{{8}}\.{re.escape(maildir_hostname())}", name)
    assert name == message_base(1700000000.5, "abc-1-2", "bob@example.test")
    assert name != message_base(1700000000.5, "abc-1-2", "carol@example.test")
    stored = new_base()
    assert stored != new_base() and base_of(sized_name(stored, 1, 1) + ":2,S") == stored


def test_arrival_order_sorts_by_the_leading_second_then_the_name():
    names = ["1700000010.Qb.h,S=1", "odd-name", "1700000002.Qz.h", "1700000010.Qa.h:2,S"]
    assert sorted(names, key=arrival_order) == [
        "odd-name", "1700000002.Qz.h", "1700000010.Qa.h:2,S", "1700000010.Qb.h,S=1"]


def test_index_round_trip_and_damage():
    index = uidindex.UidIndex(7, 3, 3)
    index.add("cur", "a,S=1,W=2:2,S", 1700000000.5, 2)
    index.add("new", "b,S=1", 1700000001.0, 2)
    assert uidindex.decode(uidindex.encode(index)) == index
    with pytest.raises(uidindex.IndexCorrupt):
        uidindex.decode(uidindex.encode(index)[:-3])
    assert uidindex.salvage(b"\xc1")[0] is None


def test_refresh_with_nothing_changed_does_not_list_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(folderdir, "MTIME_SLACK_NS", 0)
    folder = MaildirMailbox(tmp_path, "u@example.test").select("INBOX")
    folder.refresh()  # the one listing that the slack of 0 lets count as final
    calls = []
    real = folderdir.os.listdir
    monkeypatch.setattr(folderdir.os, "listdir", lambda *a: calls.append(a) or real(*a))
    assert not folder.refresh() and calls == []
