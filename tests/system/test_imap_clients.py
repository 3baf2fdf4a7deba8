"""Real IMAP clients against the server: curl, and mbsync (Debian's isync) syncing a
1,000-message mailbox both ways."""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import PASSWORD, USER
from .imap_helpers import HOSTNAME, fill, message, tls_context


@pytest.fixture
def tls_server(make_server):
    server = make_server(imap_services=True)
    server.start()
    return server


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_lists_and_fetches_over_starttls(tls_server):
    client = login_tls(tls_server)
    fill(client, 2)
    client.logout()
    url = f"imap://{HOSTNAME}:{tls_server.imap_port}"
    base = ["curl", "-sS", "--max-time", "20", "--ssl-reqd", "--cacert", tls_server.ca_file,
            "--resolve", f"{HOSTNAME}:{tls_server.imap_port}:127.0.0.1",
            "--user", f"{USER}:{PASSWORD}"]
    listing = subprocess.run(base + [url + "/"], capture_output=True, timeout=30, check=True).stdout
    assert b'* LIST (\\HasNoChildren) "/" INBOX' in listing
    fetched = subprocess.run(base + [url + "/INBOX;UID=2"], capture_output=True, timeout=30,
                             check=True).stdout
    assert fetched == message(1)
    search = subprocess.run(base + ["-X", "SEARCH SUBJECT \"message 0\"", url + "/INBOX"],
                            capture_output=True, timeout=30, check=True).stdout
    assert search == b"* SEARCH 1\r\n"


def login_tls(server) -> imaplib.IMAP4_SSL:
    client = imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, timeout=20,
                               ssl_context=tls_context(server))
    client.login(USER, PASSWORD)
    return client


MBSYNC_RC = """\
IMAPAccount server
Host 127.0.0.1
Port {port}
User {user}
Pass "{password}"
SSLType IMAPS
CertificateFile {ca}
PipelineDepth 50

IMAPStore far
Account server

MaildirStore near
Path {local}/
Inbox {local}/INBOX

Channel box
Far :far:
Near :near:
Patterns INBOX
Create Both
Expunge Both
Sync All
SyncState *
"""


def mbsync(rc: Path, *options: str) -> str:
    result = subprocess.run(["mbsync", *options, "-c", str(rc), "-a"], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def local_messages(local: Path) -> dict[str, str]:
    """Local message file → its Maildir flags (mbsync keeps UIDs in the names, ,U=n)."""
    found = {}
    for sub in ("new", "cur"):
        for path in (local / "INBOX" / sub).iterdir():
            base, _, flags = path.name.partition(":2,")
            found[base] = flags
    return found


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) not installed")
def test_mbsync_syncs_1000_messages_both_ways_then_nothing(tls_server, tmp_path):
    total = 1000
    maildir = tls_server.maildir()
    (maildir / "new").mkdir(parents=True, exist_ok=True)
    for n in range(total):  # as delivery leaves them: LF line ends, in new/
        (maildir / "new" / f"{1700000000 + n}.M{n}P1.bench").write_bytes(
            message(n).replace(b"\r\n", b"\n"))
    local = tmp_path / "local"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(MBSYNC_RC.format(port=tls_server.imaps_port, user=USER, password=PASSWORD,
                                   ca=tls_server.ca_file, local=local))
    started = time.monotonic()
    mbsync(rc)
    pulled = local_messages(local)
    assert len(pulled) == total
    assert time.monotonic() - started < 240
    # Near side: flag ten messages, delete five, write three new ones.
    names = sorted((local / "INBOX" / "cur").iterdir()) + sorted((local / "INBOX" / "new").iterdir())
    for path in names[:10]:
        os.rename(path, local / "INBOX" / "cur" / (path.name.split(":2,")[0] + ":2,FS"))
    for path in names[10:15]:
        path.unlink()
    for n in range(3):
        (local / "INBOX" / "new" / f"local{n}").write_bytes(message(5000 + n).replace(b"\r\n", b"\n"))
    mbsync(rc)
    client = login_tls(tls_server)
    client.select("INBOX", readonly=True)
    assert client.search(None, "ALL")[1][0].count(b" ") + 1 == total - 5 + 3
    assert len(client.search(None, "FLAGGED SEEN")[1][0].split()) == 10
    assert client.search(None, 'SUBJECT "message 5002"')[1][0] != b""
    client.logout()
    before_local = local_messages(local)
    before_server = sorted(p.name for sub in ("cur", "new") for p in (maildir / sub).iterdir())
    traffic = mbsync(rc, "-Dn")  # every IMAP command mbsync sends
    assert local_messages(local) == before_local
    assert sorted(p.name for sub in ("cur", "new") for p in (maildir / sub).iterdir()) == before_server
    assert "UID FETCH" in traffic  # it did look
    sent = [line for line in traffic.splitlines() if line.startswith(">>> ")]
    assert not [line for line in sent if re.search(r"APPEND|STORE|EXPUNGE|BODY\.PEEK\[\]", line)]
