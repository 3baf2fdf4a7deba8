"""Repair: the Maildir files are the truth; the UID index is rebuilt from them."""

import os
import subprocess
import sys

import msgpack

from mailforge.store.api import FLAGGED, SEEN, FlagMode
from mailforge.store.folders import MaildirMailbox
from mailforge.store.folderstate import forget_states
from mailforge.store.repair import check, repair
from mailforge.store.uidindex import INDEX_NAME

ADDRESS = "user@example.test"


def filled(tmp_path):
    """A mailbox with four messages; its root, UIDVALIDITY and view. The process then forgets
    the index it loaded: a worker process keeps it for its sessions (and a while after), while
    these tests damage the files as if no process had it loaded."""
    mailbox = MaildirMailbox(tmp_path, ADDRESS)
    for i in range(4):
        mailbox.append("INBOX", f"Subject: {i}\n\n".encode(), [SEEN] if i % 2 else [])
    folder = mailbox.select("INBOX")
    folder.set_flags([3], [FLAGGED, "$Work"], FlagMode.ADD)
    forget_states()
    return mailbox.root, folder.uidvalidity, view(folder)


def view(folder):
    return [(i.uid, i.flags) for i in folder.messages()]


def problems(root):
    return [p for report in check(root) for p in report.problems]


def test_lost_index_is_rebuilt_with_a_new_uidvalidity_keeping_messages_and_flags(tmp_path, caplog):
    root, uidvalidity, before = filled(tmp_path)
    os.unlink(root / INDEX_NAME)
    assert problems(root) == ["UID index missing (4 messages)"]
    with caplog.at_level("WARNING", logger="mailforge.store"):
        again = MaildirMailbox(tmp_path, ADDRESS).select("INBOX")
    assert "rebuilt with new UIDVALIDITY" in caplog.text
    assert again.uidvalidity != uidvalidity
    assert sorted(sorted(f) for _, f in view(again)) == sorted(sorted(f) for _, f in before)
    assert problems(root) == []


def test_corrupt_index_is_repaired_keeping_uids(tmp_path):
    root, uidvalidity, _ = filled(tmp_path)
    repair(root)  # every message in the snapshot, none only in the log
    raw = msgpack.unpackb((root / INDEX_NAME).read_bytes())
    raw["messages"][0][0] = raw["messages"][1][0]  # two messages, one UID
    (root / INDEX_NAME).write_bytes(msgpack.packb(raw))
    assert any("bad entry" in p for p in problems(root))
    done = repair(root)
    assert any(line.startswith("INBOX: UID index rebuilt") for line in done)
    again = MaildirMailbox(tmp_path, ADDRESS).select("INBOX")
    assert again.uidvalidity == uidvalidity
    # Three keep their UIDs; the one whose entry was bad gets a new UID, never a used one.
    assert [uid for uid, _ in view(again)] == [2, 3, 4, 5]
    assert problems(root) == []


def test_truncated_index_found_at_select_is_rebuilt(tmp_path):
    root, uidvalidity, _ = filled(tmp_path)
    data = (root / INDEX_NAME).read_bytes()
    (root / INDEX_NAME).write_bytes(data[: len(data) // 2])
    again = MaildirMailbox(tmp_path, ADDRESS).select("INBOX")
    assert len(again.messages()) == 4 and again.uidvalidity != uidvalidity
    assert {SEEN} in [i.flags for i in again.messages()]


def test_cli_check_and_repair(tmp_path):
    data_dir = tmp_path / "var"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mailforge", "-c",
                               str(data_dir / "mailforge.toml"), *args],
                              capture_output=True, text=True, env=env, timeout=120, check=False)

    subprocess.run([sys.executable, "-m", "mailforge", "init", "--dir", str(data_dir)],
                   check=True, capture_output=True, env=env, timeout=120)
    root, _, _ = filled(data_dir / "store")
    assert cli("store", "check", ADDRESS).returncode == 0
    (root / ".Sent" / INDEX_NAME).write_bytes(b"\x00garbage")
    (root / ".Sent" / "new" / "1700000000.Qa.host,S=2").write_bytes(b"x\n")
    result = cli("store", "check", ADDRESS)
    assert result.returncode == 1 and "Sent: PROBLEM: UID index" in result.stdout
    result = cli("store", "repair", ADDRESS)
    assert result.returncode == 0 and "Sent: UID index rebuilt" in result.stdout
    assert cli("store", "check", ADDRESS).returncode == 0
    assert cli("store", "check", "nobody@example.test").returncode != 0
