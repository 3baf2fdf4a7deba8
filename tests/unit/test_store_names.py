"""Pure parts of the store: folder names on disk, Maildir file names, the index format."""

import pytest

from mailforge.store import folderdir, uidindex
from mailforge.store.api import InvalidName
from mailforge.store.flags import (
    base_of,
    crlf_size,
    field_of,
    letters_of,
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


def test_index_round_trip_and_damage():
    index = uidindex.UidIndex(7, 3, 3, {"a": 1, "b": 2})
    assert uidindex.decode(uidindex.encode(index)) == index
    with pytest.raises(uidindex.IndexCorrupt):
        uidindex.decode(uidindex.encode(index)[:-3])
    assert uidindex.salvage(b"\xc1")[0] is None


def test_refresh_with_nothing_changed_does_not_list_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("mailforge.store.selected.MTIME_SLACK_NS", 0)
    folder = MaildirMailbox(tmp_path, "u@example.test").select("INBOX")
    calls = []
    real = folderdir.FolderDir.sync
    monkeypatch.setattr(folderdir.FolderDir, "sync", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert not folder.refresh() and calls == []
