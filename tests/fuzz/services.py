"""The services the network fuzz suite attacks: one entry each: its verbs, a recording of real
clients (sessions/<name>.txt), its port, and a normal session with a real client."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from tests.system.conftest import PASSWORD, USER, Server

# A normal client comes from an address of its own: whatever the fuzz did to the counters of
# its addresses (auth failures, connections) must not decide whether others are served.
NORMAL_CLIENT = "127.0.0.250"


def tls_context(server: Server) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=server.ca_file)
    context.check_hostname = False  # clients name 127.0.0.1; the certificate names the host
    return context


def _smtp(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10, source_address=(NORMAL_CLIENT, 0)) as client:
        client.sendmail("bob@remote.test", [USER], b"Subject: after the fuzz\r\n\r\nhi\r\n")


def _submission(server: Server) -> None:
    with smtplib.SMTP("127.0.0.1", server.submission_port, timeout=10,
                      source_address=(NORMAL_CLIENT, 0)) as client:
        client.starttls(context=tls_context(server))
        client.login(USER, PASSWORD)
        client.sendmail(USER, [USER], b"Subject: submitted after the fuzz\r\n\r\nhi\r\n")


def _smtps(server: Server) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", server.smtps_port, timeout=10, context=tls_context(server),
                          source_address=(NORMAL_CLIENT, 0)) as client:
        assert client.noop()[0] == 250


def _pop3_login(client: poplib.POP3) -> None:
    try:
        client.user(USER)
        client.pass_(PASSWORD)
        count, _ = client.stat()
        assert len(client.list()[1]) == len(client.uidl()[1]) == count
        # No RETR: the fuzzed SMTP sessions delivered messages with lines past poplib's
        # 2,048-octet limit, which is the client's, not the protocol's.
    finally:
        client.quit()


def _pop3(server: Server) -> None:
    client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=10)
    client.stls(context=tls_context(server))
    _pop3_login(client)


def _pop3s(server: Server) -> None:
    _pop3_login(poplib.POP3_SSL("127.0.0.1", server.pop3s_port, timeout=10,
                                context=tls_context(server)))


def _imap_session(client: imaplib.IMAP4) -> None:
    try:
        client.login(USER, PASSWORD)
        assert client.append("INBOX", None, None, b"Subject: after the fuzz\r\n\r\nhi\r\n")[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
        assert client.fetch("1:*", "(FLAGS ENVELOPE BODYSTRUCTURE)")[0] == "OK"
        assert client.search(None, "ALL")[0] == "OK"
    finally:
        client.logout()


def _imap(server: Server) -> None:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    client.starttls(tls_context(server))
    _imap_session(client)


def _imaps(server: Server) -> None:
    _imap_session(imaplib.IMAP4_SSL("127.0.0.1", server.imaps_port, timeout=10,
                                    ssl_context=tls_context(server)))


@dataclass(frozen=True)
class ServiceFuzz:
    verbs: list[bytes]
    recording: str                  # sessions/<recording>.txt
    port: Callable[[Server], int]
    implicit_tls: bool
    normal_session: Callable[[Server], None]


SMTP_VERBS = [b"HELO", b"EHLO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"BDAT", b"RSET", b"NOOP",
              b"QUIT", b"VRFY", b"EXPN", b"HELP", b"STARTTLS", b"AUTH", b"AUTH PLAIN",
              b"AUTH LOGIN", b"AUTH CRAM-MD5", b"AUTH SCRAM-SHA-256", b"ETRN", b"TURN", b"XCLIENT"]
POP3_VERBS = [b"USER", b"PASS", b"APOP", b"AUTH", b"AUTH CRAM-MD5", b"AUTH PLAIN",
              b"AUTH SCRAM-SHA-256", b"CAPA", b"STLS", b"STAT", b"LIST", b"RETR", b"DELE", b"NOOP",
              b"RSET", b"TOP", b"UIDL", b"QUIT", b"LAST", b"UTF8"]
# Verbs of every state (IDLE and AUTHENTICATE start exchanges of their own), UID forms, and
# the extensions the server announces.
IMAP_VERBS = [b"a CAPABILITY", b"a NOOP", b"a LOGOUT", b"a STARTTLS", b"a AUTHENTICATE PLAIN",
              b"a AUTHENTICATE CRAM-MD5", b"a AUTHENTICATE SCRAM-SHA-256", b"a LOGIN", b"a SELECT",
              b"a EXAMINE", b"a CREATE", b"a DELETE", b"a RENAME", b"a SUBSCRIBE",
              b"a UNSUBSCRIBE", b"a LIST", b"a LSUB", b"a STATUS", b"a APPEND", b"a CHECK",
              b"a CLOSE", b"a UNSELECT", b"a EXPUNGE", b"a SEARCH", b"a FETCH", b"a STORE",
              b"a COPY", b"a MOVE", b"a UID FETCH", b"a UID SEARCH", b"a UID STORE",
              b"a UID COPY", b"a UID MOVE", b"a UID EXPUNGE", b"a IDLE", b"DONE", b"a NAMESPACE",
              b"a GETQUOTA", b"a GETQUOTAROOT", b"a ENABLE", b"a ID", b"*", b"+"]

SERVICES: dict[str, ServiceFuzz] = {
    "smtp": ServiceFuzz(SMTP_VERBS, "smtp", lambda s: s.port, False, _smtp),
    "submission": ServiceFuzz(SMTP_VERBS, "submission", lambda s: s.submission_port, False, _submission),
    "smtps": ServiceFuzz(SMTP_VERBS, "smtp", lambda s: s.smtps_port, True, _smtps),
    "pop3": ServiceFuzz(POP3_VERBS, "pop3", lambda s: s.pop3_port, False, _pop3),
    "pop3s": ServiceFuzz(POP3_VERBS, "pop3", lambda s: s.pop3s_port, True, _pop3s),
    "imap": ServiceFuzz(IMAP_VERBS, "imap", lambda s: s.imap_port, False, _imap),
    "imaps": ServiceFuzz(IMAP_VERBS, "imap", lambda s: s.imaps_port, True, _imaps),
}
