"""Mail sent over SMTP lands, exactly, in the recipient's Maildir."""

import shutil
import smtplib
import subprocess

import pytest

from .conftest import USER, cli

BODY = (b"From: Bob <bob@remote.test>\r\nTo: Alice <alice@example.test>\r\nSubject: hello\r\n"
        b"Message-ID: <m1@remote.test>\r\n\r\nfirst line\r\n.leading dot\r\n..two dots\r\nlast line\r\n")


def headers_and_rest(raw: bytes) -> tuple[list[bytes], bytes]:
    """Our added trace headers, then the message as the client sent it (LF line ends)."""
    lines = raw.split(b"\n")
    added = []
    while lines and (lines[0].startswith((b"Return-Path:", b"Delivered-To:", b"Received:"))
                     or lines[0].startswith(b"\t")):
        added.append(lines.pop(0))
    return added, b"\n".join(lines)


def test_smtplib_delivers_exact_body(server):
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        code, _ = client.ehlo("client.test")
        assert code == 250 and client.has_extn("pipelining") and client.has_extn("chunking")
        refused = client.sendmail("bob@remote.test", [USER], BODY)
        assert refused == {}
    (path,) = server.wait_delivered(1)
    assert path.parent.name == "new" and ",S=" in path.name
    for sub in ("cur", "new", "tmp"):
        assert (server.maildir() / sub).is_dir()
    added, rest = headers_and_rest(path.read_bytes())
    assert added[0] == b"Return-Path: <bob@remote.test>"
    assert added[1] == f"Delivered-To: {USER}".encode()
    assert added[2].startswith(b"Received: from client.test ([127.0.0.1])")
    assert rest == BODY.replace(b"\r\n", b"\n")
    assert int(path.name.split(",S=")[1].split(":")[0]) == path.stat().st_size


def test_bdat_delivers(server):
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        client.mail("")
        client.rcpt(USER)
        for chunk, last in ((BODY[:40], False), (BODY[40:], True)):
            client.putcmd(f"BDAT {len(chunk)}{' LAST' if last else ''}")
            client.send(chunk)
            code, text = client.getreply()
            assert code == 250, text
        assert b"queued as" in text
    (path,) = server.wait_delivered(1)
    added, rest = headers_and_rest(path.read_bytes())
    assert added[0] == b"Return-Path: <>"
    # BDAT carries the message verbatim: no dot-unstuffing.
    assert rest == BODY.replace(b"\r\n", b"\n")


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by `make test`")
def test_swaks_delivers(server):
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{server.port}", "--to", USER, "--from", "carol@remote.test",
         "--helo", "swaks.test", "--header", "Subject: via swaks", "--body", "swaks body line"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    (path,) = server.wait_delivered(1)
    text = path.read_text()
    assert "Subject: via swaks" in text and "swaks body line" in text and "\r" not in text


def test_unknown_user_and_relay_refused(server):
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        client.mail("bob@remote.test")
        code, text = client.rcpt("nobody@example.test")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, text = client.rcpt("someone@elsewhere.test")
        assert (code, text[:5]) == (554, b"5.7.1")


def test_message_too_big(make_server):
    server = make_server(limits={"max_message_size": 2000})
    server.start()
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("bob@remote.test", [USER], b"x" * 5000, mail_options=["SIZE=5000"])
        assert refused.value.smtp_code == 552
        client.rset()
        # A client that does not declare SIZE is refused at the end of DATA.
        client.mail("bob@remote.test")
        client.rcpt(USER)
        code, text = client.data(b"Subject: big\r\n\r\n" + b"y" * 3000 + b"\r\n")
        assert code == 552 and text.startswith(b"5.3.4")
        assert client.noop()[0] == 250
    assert server.delivered() == []


def test_big_message_streams_into_files_of_its_own(server):
    """Past the in-memory bound a message spills into queue files; it arrives exactly."""
    line = b"0123456789" * 7 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * 20000  # about 1.4 MB, well past SPILL_SIZE
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        assert client.sendmail("bob@remote.test", [USER], body) == {}
    (path,) = server.wait_delivered(1)
    _, rest = headers_and_rest(path.read_bytes())
    assert rest == body.replace(b"\r\n", b"\n")


def test_many_recipients_each_get_their_own_delivered_to(make_server):
    server = make_server()
    server.start()
    cli(server.conf, "user", "add", "carol@example.test", "--password-stdin", input="pw\n")
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo("client.test")
        assert client.sendmail("bob@remote.test", [USER, "carol@example.test"], BODY) == {}
    for rcpt in (USER, "carol@example.test"):
        (path,) = server.wait_delivered(1, rcpt)
        added, rest = headers_and_rest(path.read_bytes())
        assert added[1] == f"Delivered-To: {rcpt}".encode() and rest == BODY.replace(b"\r\n", b"\n")
