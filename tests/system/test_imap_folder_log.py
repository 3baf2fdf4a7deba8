"""Sessions learn of each other's changes through the folder's change log (store/folderlog.py),
of deliveries through new/, and of a file renamed by hand (as mutt does) through the fallback
scan of cur/."""

from __future__ import annotations

import imaplib
import os
import re
import smtplib
import time

import pytest

from .conftest import USER
from .imap_helpers import fill, login, message

# The fallback trusts a cur/ mtime only once it is this old (folderdir.MTIME_SLACK_NS), so a
# change made by hand in the same clock tick as a logged one shows within about that long.
NOTICED_WITHIN = 5.0


@pytest.fixture
def log_server(make_server):
    # Two IMAP workers: the two sessions may well run in different processes.
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True},
                         imap={"workers": 2})
    server.start()
    return server


def view(client: imaplib.IMAP4) -> dict[int, set[str]]:
    """UID → flags, after a NOOP has taken in what others changed."""
    assert client.noop()[0] == "OK"
    typ, data = client.uid("FETCH", "1:*", "(FLAGS)")
    assert typ == "OK"
    found = {}
    for line in data:
        if isinstance(line, bytes) and (match := re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", line)):
            found[int(match[1])] = set(match[2].decode().split())
    return found


def eventually(client: imaplib.IMAP4, wanted) -> dict[int, set[str]]:
    deadline = time.monotonic() + NOTICED_WITHIN
    while True:
        seen = view(client)
        if wanted(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


def test_sessions_see_each_others_changes_deliveries_and_hand_renames(log_server):
    one, two = login(log_server), login(log_server)
    fill(one, 2)
    one.select("INBOX")
    two.select("INBOX")
    assert set(view(two)) == {1, 2}

    assert one.append("INBOX", None, None, message(3))[0] == "OK"
    assert set(view(two)) == {1, 2, 3}

    assert one.uid("STORE", "2", "+FLAGS", r"(\Flagged)")[0] == "OK"
    assert r"\Flagged" in view(two)[2]

    assert two.uid("STORE", "1", "+FLAGS", r"(\Deleted)")[0] == "OK"
    assert two.expunge()[0] == "OK"
    assert set(view(one)) == {2, 3}
    assert one.untagged_responses.pop("EXPUNGE", None) == [b"1"]

    with smtplib.SMTP("127.0.0.1", log_server.port, timeout=10) as smtp:
        smtp.sendmail("bob@remote.test", [USER], message(4))
    log_server.wait_delivered(1)
    assert len(eventually(one, lambda seen: len(seen) == 3)) == 3
    assert len(eventually(two, lambda seen: len(seen) == 3)) == 3

    cur = log_server.maildir() / "cur"
    name = next(n for n in sorted(os.listdir(cur)) if "S" not in n.partition(":2,")[2])
    os.rename(cur / name, cur / (name + "S"))  # as mutt marks a message \Seen
    seen = eventually(two, lambda seen: sum(r"\Seen" in flags for flags in seen.values()) == 1)
    assert sum(r"\Seen" in flags for flags in seen.values()) == 1
    one.logout()
    two.logout()


def test_a_folder_reopened_from_the_workers_kept_state_shows_hand_renames(make_server):
    """One worker: it keeps the folder's state after the session that opened it logs out, and
    a cur/ listing it found final is trusted by later sessions; a file renamed by hand in
    between still shows at the next SELECT (its rename moves cur/'s mtime)."""
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True},
                         imap={"workers": 1})
    server.start()
    first = login(server)
    fill(first, 3)
    time.sleep(1.2)  # past the slack: the next listing of cur/ is final
    first.select("INBOX")
    assert set(view(first)) == {1, 2, 3}
    first.logout()
    cur = server.maildir() / "cur"
    for name in sorted(os.listdir(cur)):
        if "S" not in name.partition(":2,")[2]:
            os.rename(cur / name, cur / (name + "S"))  # as mutt marks each message \Seen
    second = login(server)
    assert second.select("INBOX", readonly=True)[0] == "OK"
    assert all(r"\Seen" in flags for flags in view(second).values())
    assert len(view(second)) == 3
    second.logout()
