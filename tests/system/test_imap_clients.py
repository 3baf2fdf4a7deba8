"""Real IMAP clients against the server: curl; mbsync (Debian's isync) syncing a 1,000-message
mailbox both ways, then another session's flag changes; mutt resynchronising its header cache
of a 1,000-message folder with CONDSTORE/QRESYNC after another session's flag changes. What a
sync cost the server is read from its log (each session's `disconnect` line)."""

from __future__ import annotations

import fcntl
import imaplib
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from .conftest import PASSWORD, USER
from .imap_helpers import HOSTNAME, fill, login, message, tls_context
from .session_log import wait_session_ends

# The other session's changes a resync must pick up: ten messages flagged, spread over the folder.
CHANGES = 10


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


def put_messages(maildir: Path, total: int, read: bool = False) -> None:
    """`total` messages written straight into the Maildir with LF line ends, as delivery leaves
    them in new/; `read`: in cur/ with the Seen flag, as a mail client leaves what was read."""
    folder = maildir / ("cur" if read else "new")
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(total):
        name = f"{1700000000 + n}.M{n}P1.bench" + (":2,S" if read else "")
        (folder / name).write_bytes(message(n).replace(b"\r\n", b"\n"))


def flag_from_another_session(client: imaplib.IMAP4) -> set[int]:
    """Another session flags CHANGES messages spread over the folder and logs out; their UIDs."""
    client.select("INBOX")
    unflagged = [int(uid) for uid in client.uid("SEARCH", "UNFLAGGED")[1][0].split()]
    changed = set(unflagged[::len(unflagged) // CHANGES][:CHANGES])
    for uid in changed:
        assert client.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Flagged)")[0] == "OK"
    client.logout()
    return changed


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
def test_mbsync_syncs_1000_messages_both_ways_then_nothing_then_flags_of_another_session(
        tls_server, tmp_path):
    total = 1000
    maildir = tls_server.maildir()
    put_messages(maildir, total)
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

    # Another session flags ten messages. isync 1.4 (Debian 12's) does not use CONDSTORE: its
    # next sync asks for every message's flags (one UID FETCH over the whole range) and fetches
    # no message; the server saw a handful of commands where the first sync sent a thousand.
    changed = flag_from_another_session(login_tls(tls_server))
    traffic = mbsync(rc, "-Dn")
    sent = [line[4:] for line in traffic.splitlines() if line.startswith(">>> ")]
    fetches = [line for line in sent if "FETCH" in line]
    assert len(fetches) == 1 and re.fullmatch(r"\d+ UID FETCH 1:\d+ \(UID FLAGS\)", fetches[0])
    assert not [line for line in sent if re.search(r"APPEND|STORE|EXPUNGE|BODY", line)]
    flagged_here = {int(re.search(r",U=(\d+)", name).group(1))
                    for name, flags in local_messages(local).items() if "F" in flags}
    assert changed <= flagged_here and len(flagged_here) == 10 + CHANGES
    first, *_, last = wait_session_ends(tls_server, "imaps", 6)
    assert int(first["commands"]) > total and int(last["commands"]) < 20


MUTTRC = """\
set imap_user="{user}"
set imap_pass="{password}"
set folder="imap://127.0.0.1:{port}/"
set spoolfile="+INBOX"
set header_cache="{home}/hcache"
set imap_condstore=yes
set imap_qresync=yes
set ssl_starttls=no
set ssl_force_tls=no
set record=""
"""
# mutt's debug log (-d 2, in $HOME/.muttdebug0, the last run's) shows each IMAP line it sent
# ("> a0007 UID FETCH …") and got ("< * 5 FETCH …").
MUTT_IMAP_LINE = re.compile(r"^\[[^]]*\] \d+([<>]) (.*)$")
MUTT_TIMEOUT = 60.0


def mutt_opens_inbox_and_quits(home: Path) -> list[tuple[str, str]]:
    """mutt opens its spool folder (with its header cache) and quits, in a terminal of its own
    (it is a curses program); the IMAP lines of that run, as (">" sent or "<" got, line)."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(["mutt", "-n", "-F", str(home / "muttrc"), "-d", "2",
                             "-e", "push <quit>"], stdin=terminal, stdout=terminal,
                            stderr=terminal, env=dict(os.environ, HOME=str(home), TERM="xterm"),
                            start_new_session=True)
    os.close(terminal)
    deadline = time.monotonic() + MUTT_TIMEOUT
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    os.read(controller, 65536)  # the screen, drained so mutt never blocks
                except OSError:
                    break
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    debug = (home / ".muttdebug0").read_text(errors="replace")
    return [(m.group(1), m.group(2)) for m in map(MUTT_IMAP_LINE.match, debug.splitlines()) if m]


@pytest.mark.skipif(shutil.which("mutt") is None, reason="mutt not installed")
def test_mutt_resyncs_its_header_cache_after_10_flag_changes_fetching_only_those(
        imap_server, tmp_path):
    total = 1000
    # Read mail, as in a real folder of this size: mutt's quit marks unread ones "Old" (a STORE).
    put_messages(imap_server.maildir(), total, read=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / "muttrc").write_text(MUTTRC.format(user=USER, password=PASSWORD,
                                               port=imap_server.imap_port, home=home))
    first = mutt_opens_inbox_and_quits(home)
    assert any(way == ">" and "BODY.PEEK[HEADER.FIELDS" in line for way, line in first)
    changed = flag_from_another_session(login(imap_server))
    second = mutt_opens_inbox_and_quits(home)
    sent = [line for way, line in second if way == ">"]
    fetches = [line for line in sent if "FETCH" in line]
    assert len(fetches) == 1 and re.fullmatch(
        rf"a\d+ UID FETCH 1:{total} \(FLAGS\) \(CHANGEDSINCE \d+ VANISHED\)", fetches[0])
    assert not [line for line in sent if "STORE" in line or "EXPUNGE" in line]
    answers = [re.match(r"\* \d+ FETCH \(UID (\d+) FLAGS \(([^)]*)\)", line)
               for way, line in second if way == "<" and re.match(r"\* \d+ FETCH ", line)]
    assert len(answers) == CHANGES and {int(a.group(1)) for a in answers} == changed
    assert all("\\Flagged" in a.group(2) for a in answers)
    opened, _, resynced = wait_session_ends(imap_server, "imap", 3)
    # 10 changes against 1,000 headers: about 2.7 KB against 410 KB here.
    assert 20 * int(resynced["bytes_out"]) < int(opened["bytes_out"])
