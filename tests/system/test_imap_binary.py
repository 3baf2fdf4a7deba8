"""BINARY (RFC 3516) over real sockets: APPEND of a literal8 holding NUL and bare line ends,
stored 7-bit safe (its binary part in base64) and given back exactly by BINARY[part];
quoted-printable decoded as RFC 2045 6.7 says. imaplib sends no literal8: a raw session does."""

from __future__ import annotations

import base64

from .imap_helpers import RawSession

RAW = b"\x00-\xe4\n\r\n\n"
BINARY_MESSAGE = (b"From: user@domain.org\r\nMime-Version: 1.0\r\n"
                  b"Content-Type: application/octet-stream\r\n"
                  b"Content-Transfer-Encoding: binary\r\n\r\n" + RAW)
QP_MESSAGE = (b"From: user@domain.org\r\nContent-Type: text/plain\r\n"
              b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
              b"hello  \r\nfoo\t= \r\n=62ar=3D\r\n")


def session(make_server) -> RawSession:
    server = make_server(imap_services=True, server={"allow_plaintext_auth": True})
    server.start()
    raw = RawSession(server.imap_port)
    raw.login()
    return raw


def test_literal8_append_is_kept_7bit_and_fetched_back_binary(make_server):
    raw = session(make_server)
    assert b" BINARY " in raw.command(b"C", b"CAPABILITY")[0]
    reply = raw.command(b"A", b"APPEND INBOX ~{%d+}\r\n%s" % (len(BINARY_MESSAGE), BINARY_MESSAGE))
    assert reply[-1].startswith(b"A OK [APPENDUID ")
    raw.command(b"S", b"SELECT INBOX")
    reply = raw.command(b"F", b"FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.MIME])")
    assert base64.b64encode(RAW) in b"".join(reply)
    assert b"Content-Transfer-Encoding: base64" in b"".join(reply)
    raw.send(b"B FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])\r\n")
    assert raw.readline() == b"* 1 FETCH (BINARY.SIZE[1] 7 BINARY[1] ~{7}\r\n"
    assert raw.reader.read(len(RAW)) == RAW
    assert raw.until_tagged(b"B")[-1].startswith(b"B OK")
    raw.close()


def test_quoted_printable_is_decoded_as_rfc_2045_says(make_server):
    raw = session(make_server)
    raw.command(b"A", b"APPEND INBOX {%d+}\r\n%s" % (len(QP_MESSAGE), QP_MESSAGE))
    raw.command(b"S", b"SELECT INBOX")
    reply = raw.command(b"F", b"FETCH 1 (BINARY.PEEK[1])")
    assert b"".join(reply[:3]) == b"* 1 FETCH (BINARY[1] {17}\r\nhello\r\nfoo\tbar=\r\n"
    raw.close()


def test_unknown_encoding_is_no_unknown_cte(make_server):
    raw = session(make_server)
    data = b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n"
    raw.command(b"A", b"APPEND INBOX {%d+}\r\n%s" % (len(data), data))
    raw.command(b"S", b"SELECT INBOX")
    assert raw.command(b"F", b"FETCH 1 (BINARY.PEEK[1])")[-1].startswith(b"F NO [UNKNOWN-CTE]")
    raw.close()
