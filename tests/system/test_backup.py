"""`mailforge backup`: an archive made while the server runs gives back, on an empty data dir,
every message (with its flags and UID), folder and account; a server started there serves them."""

from __future__ import annotations

import json
import poplib
import smtplib
import tarfile
import threading
from pathlib import Path

import pytest

from mailforge.auth.accounts import Accounts
from mailforge.store.api import FlagMode
from mailforge.store.folders import open_mailbox

from .conftest import DOMAIN, PASSWORD, USER, Server, cli

BOB, BOB_PASSWORD = f"bob@{DOMAIN}", "battery staple"


def send(server: Server, subject: str, to: str = USER) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=20) as client:
        client.sendmail("someone@remote.test", [to], f"Subject: {subject}\r\n\r\n{subject} body\r\n")


def store_state(data_dir: Path) -> dict[str, set[tuple[str, int, str, str]]]:
    """Per mailbox: (folder, UID, flags, text) of every message, through the store API."""
    config_store = data_dir / "store"
    accounts = Accounts(data_dir / "accounts.sqlite3")
    try:
        state = {}
        for address in (USER, BOB):
            mailbox = open_mailbox(config_store, accounts.mailbox_settings, address)
            found = set()
            for info in mailbox.folders():
                folder = mailbox.select(info.name, read_only=True)
                for message in folder.messages():
                    found.add((info.name, message.uid, " ".join(sorted(message.flags)),
                               folder.read(message.uid).decode()))
                folder.close()
            state[address] = found
        return state
    finally:
        accounts.close()


def pop3_messages(server: Server, user: str, password: str) -> list[bytes]:
    client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=20)
    try:
        client.user(user)
        client.pass_(password)
        count, _ = client.stat()
        return sorted(b"\r\n".join(client.retr(n + 1)[1]) for n in range(count))
    finally:
        client.quit()


@pytest.fixture
def busy(make_server):
    server = make_server(pop3_services=True, server={"allow_plaintext_auth": True})
    cli(server.conf, "user", "add", BOB, "--password-stdin", input=BOB_PASSWORD + "\n")
    server.start()
    for n in range(3):
        send(server, f"inbox {n}")
    send(server, "for bob", to=BOB)
    server.wait_delivered(3)
    server.wait_delivered(1, BOB)
    accounts = Accounts(server.config.accounts_db)
    mailbox = open_mailbox(server.config.store_dir, accounts.mailbox_settings, USER)
    mailbox.create("Projects")
    mailbox.append("Projects", b"Subject: kept\r\n\r\nold news\r\n", flags=["\\Flagged", "$Label1"])
    inbox = mailbox.select("INBOX")
    uids = [m.uid for m in inbox.messages()]
    inbox.set_flags(uids[:2], ["\\Seen"], FlagMode.ADD)
    inbox.set_flags(uids[:1], ["\\Answered"], FlagMode.ADD)
    inbox.close()
    mailbox.close()
    accounts.close()
    return server


def test_restore_gives_back_every_message_flag_and_account(busy, tmp_path):
    before = store_state(busy.dir)
    assert {flags for _, _, flags, _ in before[USER]} == {"\\Answered \\Seen", "\\Seen", "", "$Label1 \\Flagged"}
    # Mail keeps arriving while the backup is made.
    traffic = threading.Thread(target=lambda: [send(busy, f"during {n}", to=BOB) for n in range(5)])
    traffic.start()
    made = cli(busy.conf, "backup", "create").stdout
    traffic.join()
    archive = Path(made.split()[0])
    assert archive.parent == busy.dir / "backup" and archive.name.endswith(".tar.gz")
    assert archive.stat().st_mode & 0o077 == 0  # the TLS key and password hashes are inside
    assert str(archive) in cli(busy.conf, "backup", "list").stdout
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert manifest["version"] == 1
    assert {"mailforge.toml", "accounts.sqlite3", "tls/cert.pem", "tls/key.pem"} <= {f["name"] for f in manifest["files"]}
    pop3_before = pop3_messages(busy, USER, PASSWORD)
    busy.stop()

    target = tmp_path / "restored"
    cli(busy.conf, "backup", "restore", str(archive), "--dir", str(target))
    after = store_state(target)
    assert after[USER] == before[USER]
    assert before[BOB] <= after[BOB]  # and whichever "during" messages had arrived
    restored = Server.existing(target)
    restored.start()
    try:
        assert pop3_messages(restored, USER, PASSWORD) == pop3_before
        assert any(b"for bob" in m for m in pop3_messages(restored, BOB, BOB_PASSWORD))
        waiting = len(restored.delivered())
        send(restored, "after restore")  # the restored server accepts and delivers mail
        restored.wait_delivered(waiting + 1)
    finally:
        restored.stop()


def test_cli_errors_are_one_line(busy, tmp_path):
    missing = cli(busy.conf, "backup", "restore", str(tmp_path / "nope.tar.gz"), "--dir",
                  str(tmp_path / "x"), check=False)
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0 and "no such backup archive" in missing.stderr
    archive = cli(busy.conf, "backup", "create", "--compress", "none").stdout.split()[0]
    assert archive.endswith(".tar")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "something").write_text("x")
    refused = cli(busy.conf, "backup", "restore", archive, "--dir", str(occupied), check=False)
    assert refused.returncode != 0 and "not an empty directory" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0
    not_backup = tmp_path / "other.tar"
    with tarfile.open(not_backup, "w") as tar:
        tar.add(busy.conf, arcname="mailforge.toml")
    wrong = cli(busy.conf, "backup", "restore", str(not_backup), "--dir", str(tmp_path / "y"), check=False)
    assert wrong.returncode != 0 and "not a mailforge backup" in wrong.stderr


def test_with_postgresql_accounts_the_archive_says_they_are_not_in_it(make_server):
    # Nothing connects to the database to make the archive: a port nobody listens on will do.
    server = make_server(accounts=False)
    server.reconfigure({"accounts": {"backend": "postgresql", "dsn": "host=127.0.0.1 port=1"}})
    made = cli(server.conf, "backup", "create", check=False)
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[1] == ("mailforge: the accounts are in PostgreSQL ([accounts] "
                                           "dsn), not in the archive: back that database up with "
                                           "pg_dump")
    (archive,) = (server.dir / "backup").glob("mailforge-*.tar.gz")
    with tarfile.open(archive) as opened:
        assert "accounts.sqlite3" not in opened.getnames()
