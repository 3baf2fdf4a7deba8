"""CONDSTORE and QRESYNC (RFC 7162) over a real server: a client away while another session
expunged and flagged messages resynchronises exactly those changes, and MODSEQs and the
expunge memory survive a restart and `mailforge store repair`."""

from __future__ import annotations

import re
import smtplib

from .conftest import USER, cli
from .imap_helpers import RawSession, fill, login, message, ok


def qresync_session(server) -> RawSession:
    session = RawSession(server.imap_port)
    session.login()
    assert session.command(b"E", b"ENABLE QRESYNC")[0] == b"* ENABLED CONDSTORE QRESYNC\r\n"
    return session


def select_state(session: RawSession) -> tuple[int, int]:
    lines = b"".join(session.command(b"S", b"SELECT INBOX"))
    uidvalidity = int(re.search(rb"\[UIDVALIDITY (\d+)\]", lines).group(1))
    return uidvalidity, int(re.search(rb"\[HIGHESTMODSEQ (\d+)\]", lines).group(1))


def test_qresync_after_another_session_expunged_and_flagged(imap_server):
    fill(login(imap_server), 6)
    away = qresync_session(imap_server)
    uidvalidity, modseq = select_state(away)
    away.command(b"L", b"LOGOUT")
    other = login(imap_server)
    other.select("INBOX")
    other.uid("STORE", "2,4", "+FLAGS", r"(\Deleted)")
    other.expunge()
    other.uid("STORE", "5", "+FLAGS", r"(\Flagged)")
    other.logout()
    back = qresync_session(imap_server)
    lines = back.command(b"Q", b"SELECT INBOX (QRESYNC (%d %d 1:6))" % (uidvalidity, modseq))
    vanished = [line for line in lines if line.startswith(b"* VANISHED")]
    fetches = [line for line in lines if b" FETCH " in line]
    assert vanished == [b"* VANISHED (EARLIER) 2,4\r\n"]
    assert len(fetches) == 1 and re.fullmatch(
        rb"\* 3 FETCH \(UID 5 FLAGS \(\\Flagged\) MODSEQ \((\d+)\)\)\r\n", fetches[0])
    assert int(re.search(rb"MODSEQ \((\d+)\)", fetches[0]).group(1)) > modseq


def message_modseqs(session: RawSession) -> dict[int, int]:
    """UID → MODSEQ of every message in the selected folder."""
    lines = session.command(b"M", b"UID FETCH 1:* (MODSEQ)")
    return {int(uid): int(modseq) for uid, modseq in
            (re.search(rb"UID (\d+) MODSEQ \((\d+)\)", line).groups()
             for line in lines if b" FETCH " in line and line.startswith(b"* "))}


def test_modseq_and_expunge_memory_survive_a_restart_and_store_repair(imap_server):
    fill(login(imap_server), 3)
    session = qresync_session(imap_server)
    uidvalidity, before = select_state(session)
    session.command(b"F", b"UID STORE 3 +FLAGS.SILENT (\\Flagged)")
    session.command(b"D", b"UID STORE 2 +FLAGS.SILENT (\\Deleted)")
    session.command(b"X", b"EXPUNGE")
    _, highest = select_state(session)
    modseqs = message_modseqs(session)
    session.command(b"L", b"LOGOUT")
    imap_server.stop()
    cli(imap_server.conf, "store", "repair", USER)
    imap_server.start()
    again = qresync_session(imap_server)
    lines = again.command(b"Q", b"SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity, before))
    text = b"".join(lines)
    assert int(re.search(rb"\[HIGHESTMODSEQ (\d+)\]", text).group(1)) >= highest
    assert b"* VANISHED (EARLIER) 2\r\n" in lines
    # Each message keeps its MODSEQ, and the next change goes above every one handed out before.
    assert message_modseqs(again) == modseqs
    stored = b"".join(again.command(b"S", b"UID STORE 1 +FLAGS (\\Seen)"))
    assert int(re.search(rb"MODSEQ \((\d+)\)", stored).group(1)) > highest


def fetch_lines(client) -> list[bytes]:
    """The untagged FETCH responses imaplib gathered and no command of it took (their data)."""
    return [item for item in client.untagged_responses.pop("FETCH", [])
            if isinstance(item, bytes)]


def test_every_untagged_fetch_carries_the_uid_once_qresync_is_on(imap_server):
    """RFC 7162 3.2.4: with QRESYNC enabled, each untagged FETCH names the message's UID as
    well as its MODSEQ, whatever caused it: a STORE by sequence number (.SILENT too), a FETCH
    that set \\Seen, another session's change."""
    fill(login(imap_server), 3)
    client = login(imap_server)
    ok(client.enable("QRESYNC"))
    ok(client.select("INBOX"))
    assert re.fullmatch(rb"1 \(UID 1 FLAGS \(\\Flagged \\Recent\) MODSEQ \(\d+\)\)",
                        ok(client.store("1", "+FLAGS", r"(\Flagged)"))[0])
    assert re.fullmatch(rb"2 \(UID 2 MODSEQ \(\d+\)\)",
                        ok(client.store("2", "+FLAGS.SILENT", r"(\Answered)"))[0])
    (head, _), tail = ok(client.fetch("3", "(BODY[HEADER.FIELDS (SUBJECT)])"))
    assert head.startswith(b"3 (UID 3 BODY[")
    assert re.fullmatch(rb" FLAGS \(\\Seen \\Recent\) MODSEQ \(\d+\)\)", tail)
    other = login(imap_server)
    ok(other.select("INBOX"))
    ok(other.store("1", "+FLAGS", r"(\Deleted)"))
    ok(client.noop())
    assert re.fullmatch(rb"1 \(UID 1 FLAGS \(\\Deleted \\Flagged \\Recent\) MODSEQ \(\d+\)\)",
                        fetch_lines(client)[0])


def test_sort_by_modseq_ends_with_the_highest_modseq_found(imap_server):
    """RFC 7162 3.1.9 and 3.1.10: a SORT whose criteria hold MODSEQ appends the highest MODSEQ
    of the messages it found, `* SORT ... (MODSEQ n)`, and SORT RETURN (...) (ESORT) a MODSEQ
    item, as SEARCH does."""
    fill(login(imap_server), 3)
    client = login(imap_server)
    ok(client.select("INBOX"))
    ok(client.store("2", "+FLAGS", r"(\Flagged)"))
    modseq = int(re.fullmatch(rb"2 \(MODSEQ \((\d+)\)\)", ok(client.fetch("2", "(MODSEQ)"))[0])
                 .group(1))
    assert ok(client.search(None, "MODSEQ", str(modseq))) == [b"2 (MODSEQ %d)" % modseq]
    assert ok(client.sort("(SUBJECT)", "UTF-8", "MODSEQ", str(modseq))) == \
        [b"2 (MODSEQ %d)" % modseq]
    assert ok(client.uid("SORT", "(SUBJECT)", "UTF-8", "MODSEQ", "1")) == \
        [b"1 2 3 (MODSEQ %d)" % modseq]
    ok(client._simple_command("SORT", "RETURN", "(ALL)", "(SUBJECT)", "UTF-8",
                              "MODSEQ", str(modseq)))
    assert client.untagged_responses.pop("ESEARCH")[-1].endswith(b" ALL 2 MODSEQ %d" % modseq)


def test_a_new_folder_has_a_highestmodseq_above_zero_that_its_first_message_raises(imap_server):
    """RFC 7162 7: HIGHESTMODSEQ's value is a mod-sequence-value, 1 or more (Dovecot reports 1
    for a folder nothing happened in); the first message appended must still raise it, or a
    client that compares STATUS HIGHESTMODSEQ with what it saw would miss the message."""
    client = login(imap_server)
    ok(client.create("Empty"))
    status = rb'"?Empty"? \(HIGHESTMODSEQ (\d+)\)'
    empty = int(re.fullmatch(status, ok(client.status("Empty", "(HIGHESTMODSEQ)"))[0]).group(1))
    ok(client.select("Empty"))
    assert client.untagged_responses.pop("HIGHESTMODSEQ") == [b"%d" % empty]
    assert empty >= 1
    fill(client, 1, "Empty")
    ok(client.select("INBOX"))
    after = int(re.fullmatch(status, ok(client.status("Empty", "(HIGHESTMODSEQ)"))[0]).group(1))
    assert after > empty


def test_selecting_while_selected_says_closed_without_qresync_too(imap_server):
    """RFC 7162 3.2.11: a server that implements QRESYNC says [CLOSED] whenever SELECT or
    EXAMINE closes the folder that was selected, whether or not the client enabled it (as
    Dovecot does): the boundary between the two folders' untagged responses."""
    client = login(imap_server)
    ok(client.select("INBOX"))
    assert "CLOSED" not in client.untagged_responses
    ok(client.select("Trash", readonly=True))
    assert "CLOSED" in client.untagged_responses
    assert client.select("Nowhere")[0] == "NO"
    assert "CLOSED" in client.untagged_responses  # the failed SELECT closed Trash


def status_modseq(client, folder: str = "INBOX") -> int:
    reply = ok(client.status(folder, "(HIGHESTMODSEQ)"))[0]
    return int(re.search(rb"HIGHESTMODSEQ (\d+)", reply).group(1))


def test_claiming_recent_changes_no_modseq(imap_server):
    """RFC 7162 3.1.1: a MODSEQ moves when a message's metadata changes; \\Recent is the state
    of the session that claimed it. Another session's SELECT that claims the new messages
    leaves HIGHESTMODSEQ where it was, and a client holding that value has nothing to fetch."""
    fill(login(imap_server), 3)
    watcher = login(imap_server)
    before = status_modseq(watcher)
    claimer = login(imap_server)
    ok(claimer.select("INBOX"))
    assert claimer.untagged_responses.pop("RECENT") == [b"3"]
    assert claimer.untagged_responses.pop("HIGHESTMODSEQ") == [b"%d" % before]
    assert ok(watcher.status("INBOX", "(RECENT)")) == [b"INBOX (RECENT 0)"]
    assert status_modseq(watcher) == before
    ok(watcher.select("INBOX", readonly=True))
    assert watcher.untagged_responses.pop("HIGHESTMODSEQ") == [b"%d" % before]
    assert ok(watcher.fetch("1:*", "(FLAGS) (CHANGEDSINCE %d)" % before)) == [None]


def test_a_sessions_own_store_raises_the_highestmodseq_it_reports(imap_server):
    """A STORE by sequence number is not followed by a refresh, but the view takes in its own
    change: the HIGHESTMODSEQ code the first CONDSTORE command brings (RFC 7162 3.1) is not
    below the MODSEQ the STORE gave, and STATUS, SEARCH MODSEQ and CHANGEDSINCE agree."""
    fill(login(imap_server), 2)
    client = login(imap_server)
    ok(client.select("INBOX"))
    client.untagged_responses.pop("HIGHESTMODSEQ")  # SELECT's
    ok(client.store("1", "+FLAGS", r"(\Flagged)"))
    stored = int(re.fullmatch(rb"1 \(MODSEQ \((\d+)\)\)", ok(client.fetch("1", "(MODSEQ)"))[0])
                 .group(1))
    assert client.untagged_responses.pop("HIGHESTMODSEQ") == [b"%d" % stored]
    assert status_modseq(client) == stored
    assert ok(client.search(None, "MODSEQ", str(stored))) == [b"1 (MODSEQ %d)" % stored]
    assert re.fullmatch(rb"1 \(FLAGS \(\\Flagged \\Recent\) MODSEQ \(%d\)\)" % stored,
                        ok(client.fetch("1:*", "(FLAGS) (CHANGEDSINCE %d)" % (stored - 1)))[0])
    second = login(imap_server)
    ok(second.select("INBOX"))
    second.untagged_responses.pop("HIGHESTMODSEQ")
    ok(second.store("2", "+FLAGS", r"(\Seen)"))
    ok(second.status("INBOX", "(HIGHESTMODSEQ)"))
    assert second.untagged_responses.pop("HIGHESTMODSEQ") == [b"%d" % (stored + 1)]
    assert status_modseq(second) == stored + 1


def test_a_store_does_not_vouch_for_changes_the_session_was_not_told_of(imap_server):
    """When another session changed a message before this session's STORE and no refresh
    told of it yet, the HIGHESTMODSEQ this session reports stays below that change (RFC 5162
    erratum 1810): a client that saves it and reconnects with QRESYNC still hears of it."""
    fill(login(imap_server), 2)
    client = login(imap_server)
    ok(client.select("INBOX"))
    before = int(client.untagged_responses.pop("HIGHESTMODSEQ")[-1])
    other = login(imap_server)
    ok(other.select("INBOX"))
    ok(other.store("2", "+FLAGS", r"(\Seen)"))
    ok(client.store("1", "+FLAGS", r"(\Flagged)"))
    ok(client.fetch("1", "(MODSEQ)"))
    assert client.untagged_responses.pop("HIGHESTMODSEQ") == [b"%d" % before]


# QRESYNC parameters that break RFC 7162 7's grammar (after the UIDVALIDITY and MODSEQ of the
# folder, `%d %d`), and a word the BAD names the faulty one with.
MALFORMED_QRESYNC = [
    (b"0 1", b"UIDVALIDITY"),
    (b"4294967296 1", b"UIDVALIDITY"),
    (b"01 1", b"UIDVALIDITY"),
    (b"%d 0", b"mod-sequence"),
    (b"%d 9223372036854775808", b"mod-sequence"),
    (b"%d %d 1:*", b"known-uids"),
    (b"%d %d *", b"known-uids"),
    (b"%d %d 1:3 (1:* 1:3)", b"known-sequence-set"),
    (b"%d %d 1:3 (1:3 2,*)", b"known-uid-set"),
    (b"%d %d 1:3 (1,2 1:3)", b"sequence match"),
    (b"%d %d 1:3 (1,2)", b"sequence match"),
    (b"%d %d 1:3 foo", b"Syntax"),
    (b"%d %d (1,2 1,2) 1:3", b"Syntax"),
]


def test_malformed_qresync_parameters_are_bad_and_well_formed_ones_resync(imap_server):
    """Each malformed QRESYNC parameter gets a tagged BAD that names it, and the session goes
    on; the forms RFC 7162 allows (known-uids and sequence match data, each optional) still
    resynchronise."""
    fill(login(imap_server), 3)
    session = qresync_session(imap_server)
    uidvalidity, modseq = select_state(session)
    session.command(b"F", b"UID STORE 2 +FLAGS (\\Flagged)")
    for params, named in MALFORMED_QRESYNC:
        if params.count(b"%d") == 2:
            params %= (uidvalidity, modseq)
        elif b"%d" in params:
            params %= uidvalidity
        lines = session.command(b"Q", b"SELECT INBOX (QRESYNC (%s))" % params)
        assert lines[-1].startswith(b"Q BAD ") and named in lines[-1], (params, lines)
        assert session.command(b"N", b"NOOP") == [b"N OK NOOP completed\r\n"]
    for known in (b"", b" 1:3", b" 2", b" 1:3 (1,3 1,3)", b" (2:3 2:3)"):
        lines = session.command(b"Q", b"SELECT INBOX (QRESYNC (%d %d%s))"
                                % (uidvalidity, modseq, known))
        assert lines[-1] == b"Q OK [READ-WRITE] SELECT completed\r\n"
        assert [line for line in lines if b" FETCH " in line] == [
            b"* 2 FETCH (UID 2 FLAGS (\\Flagged) MODSEQ (%d))\r\n" % (modseq + 1)], known


def test_a_select_with_bad_parameters_leaves_the_selected_folder_selected(imap_server):
    """A BAD command is not carried out: the folder selected before stays so, no [CLOSED]."""
    fill(login(imap_server), 1)
    session = qresync_session(imap_server)
    session.command(b"S", b"SELECT INBOX")
    for params in (b"(QRESYNC (0 1))", b"(CONDSTORE CONDSTORE)", b"(X-UNKNOWN)"):
        lines = session.command(b"Q", b"SELECT INBOX " + params)
        assert lines[-1].startswith(b"Q BAD ") and not any(b"[CLOSED]" in line
                                                            for line in lines), lines
        assert session.command(b"F", b"FETCH 1 (FLAGS)")[-1].startswith(b"F OK"), params


def test_fetch_modifiers_come_in_either_order_each_once(imap_server):
    """RFC 4466 2.4 fetch-modifiers are a list, in any order; VANISHED needs CHANGEDSINCE
    (RFC 7162 3.2.6)."""
    fill(login(imap_server), 3)
    session = qresync_session(imap_server)
    _, modseq = select_state(session)
    session.command(b"X", b"UID STORE 3 +FLAGS (\\Deleted)")
    session.command(b"X", b"EXPUNGE")
    session.command(b"F", b"UID STORE 2 +FLAGS (\\Flagged)")
    answers = [session.command(b"F", b"UID FETCH 1:* (FLAGS) (%s)" % modifiers)
               for modifiers in (b"CHANGEDSINCE %d VANISHED" % modseq,
                                 b"VANISHED CHANGEDSINCE %d" % modseq)]
    assert answers[0] == answers[1] and answers[0][-1].startswith(b"F OK"), answers
    assert any(line.startswith(b"* VANISHED (EARLIER) 3") for line in answers[0]), answers[0]
    for modifiers in (b"VANISHED", b"CHANGEDSINCE 1 CHANGEDSINCE 2",
                      b"CHANGEDSINCE 1 VANISHED VANISHED", b"CHANGEDSINCE"):
        lines = session.command(b"B", b"UID FETCH 1:* (FLAGS) (%s)" % modifiers)
        assert lines[-1].startswith(b"B BAD "), (modifiers, lines)


def test_changedsince_takes_a_mod_sequence_value_unchangedsince_a_valzer(imap_server):
    """RFC 7162 7: CHANGEDSINCE's value is a mod-sequence-value, 1 or more, so 0 is BAD;
    UNCHANGEDSINCE takes a mod-sequence-valzer, and 0 there is a STORE every message fails
    (3.1.3: each has a MODSEQ above it)."""
    fill(login(imap_server), 2)
    session = RawSession(imap_server.imap_port)
    session.login()
    session.command(b"S", b"SELECT INBOX")
    for command in (b"FETCH", b"UID FETCH"):
        lines = session.command(b"F", command + b" 1:* (FLAGS) (CHANGEDSINCE 0)")
        assert lines[-1].startswith(b"F BAD ") and b"CHANGEDSINCE" in lines[-1], lines
    assert session.command(b"F", b"FETCH 1:* (FLAGS) (CHANGEDSINCE 1)")[-1].startswith(b"F OK")
    lines = session.command(b"T", b"STORE 1:2 (UNCHANGEDSINCE 0) +FLAGS (\\Seen)")
    assert lines[-1].startswith(b"T OK [MODIFIED 1:2] "), lines


def test_a_select_parameter_given_twice_is_bad(imap_server):
    """RFC 7162 7 lists each SELECT parameter once; a second one is BAD, not last-one-wins
    (as the SMTP side refuses a parameter given twice)."""
    fill(login(imap_server), 2)
    session = qresync_session(imap_server)
    uidvalidity, modseq = select_state(session)
    resync = b"QRESYNC (%d %d)" % (uidvalidity, modseq)
    for params in (b"CONDSTORE CONDSTORE", resync + b" " + resync,
                   b"condstore " + resync + b" CONDSTORE"):
        lines = session.command(b"Q", b"SELECT INBOX (%s)" % params)
        assert lines[-1].startswith(b"Q BAD ") and b"given twice" in lines[-1], (params, lines)
    lines = session.command(b"Q", b"SELECT INBOX (CONDSTORE %s)" % resync)
    assert lines[-1] == b"Q OK [READ-WRITE] SELECT completed\r\n"


def test_claiming_delivered_messages_a_status_listed_changes_no_modseq(imap_server):
    """Delivered mail waits in new/; a STATUS (or an EXAMINE) lists it there, and the next
    read-write SELECT moves it into cur/ to claim its \\Recent, its flags as they were. That
    move changes no message's metadata (RFC 7162 3.1.1): SELECT's HIGHESTMODSEQ is the one
    STATUS gave just before, and a client holding that value has nothing to fetch."""
    fill(login(imap_server), 1)
    with smtplib.SMTP("127.0.0.1", imap_server.port, timeout=10) as smtp:
        for n in range(3):
            smtp.sendmail("bob@remote.test", [USER], message(10 + n))
    imap_server.wait_delivered(3)
    watcher = login(imap_server)
    listed = status_modseq(watcher)
    assert ok(watcher.status("INBOX", "(MESSAGES)")) == [b"INBOX (MESSAGES 4)"]
    claimer = login(imap_server)
    ok(claimer.select("INBOX"))
    assert claimer.untagged_responses.pop("RECENT") == [b"4"]
    assert claimer.untagged_responses.pop("HIGHESTMODSEQ") == [b"%d" % listed]
    assert status_modseq(watcher) == listed
    assert ok(claimer.fetch("1:*", "(FLAGS) (CHANGEDSINCE %d)" % listed)) == [None]


def test_a_silent_store_tells_of_another_sessions_change_to_the_same_message(imap_server):
    """RFC 3501 6.4.6: .SILENT or not, a change to a message's flags from elsewhere is told
    with an untagged FETCH. The STORE takes the message in as it is now, so no later refresh
    would tell of it: without FLAGS here, the client would keep (\\Seen) for a message that is
    (\\Flagged \\Seen), under a HIGHESTMODSEQ that covers the other session's change."""
    fill(login(imap_server), 3)
    for number, enable in ((1, b"ENABLE CONDSTORE"), (2, b"NOOP")):
        session = RawSession(imap_server.imap_port)
        session.login()
        session.command(b"E", enable)
        session.command(b"S", b"SELECT INBOX")
        other = login(imap_server)
        ok(other.select("INBOX"))
        ok(other.store(str(number), "+FLAGS", r"(\Flagged)"))
        lines = session.command(b"T", b"STORE %d +FLAGS.SILENT (\\Seen)" % number)
        lines += session.command(b"N", b"NOOP")
        told = [line for line in lines if line.startswith(b"* %d FETCH " % number)]
        assert len(told) == 1 and b"FLAGS (\\Flagged \\Seen" in told[0], (enable, lines)
        # A message whose flags end as the STORE alone makes them is not told of (.SILENT).
        lines = session.command(b"T", b"STORE 3 +FLAGS.SILENT (\\Seen)")
        assert not [line for line in lines if b" FLAGS " in line], lines
        session.command(b"L", b"LOGOUT")
        other.logout()
