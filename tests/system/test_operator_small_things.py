"""The small surprises of an operator's first hour (issue 20): a web client on the SMTP port,
`limits show` and `store check` saying what they found, POP3's wording, and POP3 LAST as
fetchmail sends it."""

import os
import poplib
import shutil
import socket
import subprocess

import pytest

from .conftest import DOMAIN, PASSWORD, USER, cli
from .test_pop3 import HOSTNAME, deliver

GOODBYE = b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"


def read_to_close(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
@pytest.mark.parametrize("method", [[], ["--data", "a=b"]], ids=["GET", "POST"])
def test_a_web_client_on_the_smtp_port_gets_one_reply_and_the_close(server, method):
    """As Postfix: one 221 and the connection closed, where every line of the request (request
    line, each header, the blank line) used to get its own 500 until the error limit."""
    result = subprocess.run(["curl", "--http0.9", "-s", "--max-time", "10", *method,
                             f"http://127.0.0.1:{server.port}/"],
                            capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result  # the server closed: curl did not time out
    assert result.stdout == b"220 mx.example.test ESMTP mailforge\r\n" + GOODBYE
    assert "non-SMTP command" in server.log()


def test_header_lines_sent_as_commands_end_the_session_too(server):
    """A client that sends its message's header after a refused DATA (Postfix's
    regexp:{{/^[^ ]+:/}}) is hung up on at the first header line."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"EHLO client.test\r\nDATA\r\nSubject: hello\r\nFrom: a@b.test\r\n\r\nbody\r\n")
        replies = read_to_close(sock).split(b"\r\n")
    assert replies[-3:] == [b"503 5.5.1 Error: need MAIL command", GOODBYE.rstrip(), b""]


def test_limits_show_with_nothing_set_says_so(make_server):
    server = make_server()
    result = cli(server.conf, "limits", "show")
    assert result.stdout.startswith("no limits set: every logged-in sender may send without limit")


@pytest.mark.parametrize("command", ["check", "repair"])
def test_store_check_of_an_unknown_address_says_no_such_mailbox(make_server, command):
    server = make_server()
    result = cli(server.conf, "store", command, f"nobody@{DOMAIN}", check=False)
    assert (result.returncode, result.stderr) == (2, f"mailforge: no such mailbox: nobody@{DOMAIN}\n")
    assert cli(server.conf, "store", command, USER).returncode == 0  # a real one is checked


@pytest.fixture
def pop3_server(make_server):
    server = make_server(pop3_services=True, server={"allow_plaintext_auth": True})
    server.start()
    return server


def test_pop3_counts_in_the_singular_and_plural(pop3_server):
    deliver(pop3_server, [b"Subject: one\r\n\r\nhello\r\n"])
    client = poplib.POP3("127.0.0.1", pop3_server.pop3_port, timeout=10)
    client.user(USER)
    login = client.pass_(PASSWORD)
    size = client.stat()[1]
    assert login == f"+OK Logged in, 1 message ({size} octets)".encode()
    assert client.list()[0] == f"+OK 1 message ({size} octets)".encode()
    assert client.retr(1)[0] == f"+OK {size} octets".encode()
    client.dele(1)
    assert client.quit() == b"+OK Logging out, 1 message deleted"


def test_pop3_last_is_refused_without_counting_as_an_error(pop3_server):
    deliver(pop3_server, [b"Subject: one\r\n\r\nhello\r\n"])
    client = poplib.POP3("127.0.0.1", pop3_server.pop3_port, timeout=10)
    client.user(USER)
    client.pass_(PASSWORD)
    for _ in range(25):  # past the 20 errors that hang a session up
        with pytest.raises(poplib.error_proto, match="LAST was removed from POP3"):
            client._shortcmd("LAST")
    assert client.stat()[0] == 1
    client.quit()
    assert "reply=-ERR" not in pop3_server.log()  # not logged as a failed command


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail not installed")
def test_fetchmail_keeping_mail_on_the_server_fetches_each_message_once(make_server, tmp_path):
    """fetchmail sends LAST (RFC 1460) when it keeps mail and is not told to use UIDL; refused,
    it falls back to UIDL, so a second poll fetches nothing again."""
    server = make_server(pop3_services=True)
    server.start()
    deliver(server, [b"Subject: one\r\n\r\nhello\r\n", b"Subject: two\r\n\r\nworld\r\n"])
    out = tmp_path / "fetched"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'set no syslog\nset invisible\n'
        f'poll 127.0.0.1 port {server.pop3s_port} proto pop3 auth password\n'
        f'  user "{USER}" there with password "{PASSWORD}" is "fetcher" here\n'
        f'  ssl sslcertck sslcertfile "{server.ca_file}" sslcommonname "{HOSTNAME}"\n'
        f'  keep norewrite mda "cat > {out}/m.$$"\n')
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path)}
    polls = []
    for _ in range(2):
        result = subprocess.run(["fetchmail", "-v", "-f", str(rc), "--nodetach", "--idfile",
                                 str(tmp_path / "ids"), "--pidfile", str(tmp_path / "pid")],
                                env=env, capture_output=True, text=True, timeout=120, check=False)
        polls.append(result)
    assert polls[0].returncode == 0, polls[0].stdout + polls[0].stderr
    assert polls[1].returncode == 1, polls[1].stdout + polls[1].stderr  # 1: no new mail
    assert "LAST" in polls[0].stderr + polls[0].stdout  # it did ask
    assert len(list(out.iterdir())) == 2
    assert len(server.delivered()) + len(list((server.maildir() / "cur").iterdir())) == 2  # kept
    assert "reply=-ERR" not in server.log()
