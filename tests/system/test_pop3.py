"""POP3 and POP3S over real sockets: poplib (plain, STLS, implicit TLS) and curl fetch what
SMTP delivered, byte for byte in the CRLF form; deletes happen only at QUIT; the maildrop lock."""

import os
import poplib
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time

import pytest

from .conftest import PASSWORD, USER, cli

HOSTNAME = "mx.example.test"
MESSAGES = [
    b"Subject: one\r\n\r\nhello\r\n",
    # Lines that need byte-stuffing, and a lone "." that would end a careless response.
    b"Subject: two\r\n\r\n.dot first\r\n.\r\n..two dots\r\nlast\r\n",
    b"Subject: three\r\nX-Long: " + b"x" * 900 + b"\r\n\r\n" + b"line\r\n" * 500,
]


def deliver(server, messages=MESSAGES):
    before = len(server.delivered())
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        for message in messages:
            client.sendmail("bob@remote.test", [USER], message)
    server.wait_delivered(before + len(messages))


def stored(server) -> dict[str, bytes]:
    """UIDL → the message in the CRLF form POP3 must send, from the Maildir itself."""
    result = {}
    for sub in ("new", "cur"):
        for path in (server.maildir() / sub).iterdir():
            result[path.name.split(",")[0]] = path.read_bytes().replace(b"\n", b"\r\n")
    return result


def tls_context(server) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=server.ca_file)
    context.check_hostname = False  # poplib names 127.0.0.1; the certificate names HOSTNAME
    return context


def retrieve_all(client) -> dict[str, bytes]:
    uids = {int(n): uid.decode() for n, uid in (line.split() for line in client.uidl()[1])}
    sizes = {int(n): int(size) for n, size in (line.split() for line in client.list()[1])}
    fetched = {}
    for number, uid in uids.items():
        _, lines, octets = client.retr(number)
        data = b"".join(line + b"\r\n" for line in lines)
        assert len(data) == octets == sizes[number]
        fetched[uid] = data
    return fetched


def login(server, port=None) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", port or server.pop3_port, timeout=10)
    client.user(USER)
    client.pass_(PASSWORD)
    return client


@pytest.fixture
def plain_server(make_server):
    server = make_server(pop3_services=True, server={"allow_plaintext_auth": True})
    server.start()
    return server


@pytest.fixture(scope="module")
def shared_plain_server(make_module_server):
    """plain_server for the tests that leave the maildrop as they found it."""
    server = make_module_server(pop3_services=True, server={"allow_plaintext_auth": True})
    server.start()
    return server


@pytest.fixture
def tls_server(make_server):
    server = make_server(pop3_services=True)
    server.start()
    return server


def test_fetch_exact_bytes_and_delete_only_at_quit(plain_server):
    deliver(plain_server)
    expected = stored(plain_server)
    client = login(plain_server)
    count, size = client.stat()
    assert count == 3 and size == sum(len(m) for m in expected.values())
    fetched = retrieve_all(client)
    assert fetched == expected
    for message in MESSAGES:
        assert any(data.endswith(message) for data in fetched.values())
    (top,) = [lines for lines in (client.top(n, 2)[1] for n in (1, 2, 3))
              if b"Subject: three" in lines]
    assert top[-3:] == [b"", b"line", b"line"] and top[0].startswith(b"Return-Path: ")
    assert client.dele(1).startswith(b"+OK")
    assert len(list((plain_server.maildir() / "cur").iterdir())) == 3  # not before QUIT
    client.quit()
    assert len(list((plain_server.maildir() / "cur").iterdir())) == 2
    client = login(plain_server)
    assert client.stat()[0] == 2 and retrieve_all(client) == {
        uid: data for uid, data in expected.items() if uid in stored(plain_server)}
    client.quit()


def test_a_message_bigger_than_one_read_streams_whole(plain_server):
    big = b"Subject: big\r\n\r\n" + b"".join(b".%06d dotted, read in several chunks\r\n" % n
                                          for n in range(5000))
    deliver(plain_server, [big])
    expected = stored(plain_server)
    client = login(plain_server)
    assert retrieve_all(client) == expected and len(big) > 3 * 64 * 1024
    _, lines, _ = client.top(1, 3)
    assert lines[-3:] == [b".000000 dotted, read in several chunks",
                          b".000001 dotted, read in several chunks",
                          b".000002 dotted, read in several chunks"]
    client.quit()


def test_dropped_connection_deletes_nothing_and_releases_the_lock(plain_server):
    deliver(plain_server, MESSAGES[:2])
    client = login(plain_server)
    client.dele(1)
    client.dele(2)
    client.sock.shutdown(socket.SHUT_RDWR)  # no QUIT
    client = _login_when_free(plain_server)
    assert client.stat()[0] == 2
    client.quit()


def _login_when_free(server, timeout=10.0) -> poplib.POP3:
    """The server notices a dropped client a moment later: until then the maildrop is in use."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return login(server)
        except (poplib.error_proto, OSError) as exc:
            if time.monotonic() > deadline or (isinstance(exc, poplib.error_proto)
                                               and b"[IN-USE]" not in exc.args[0]):
                raise
            time.sleep(0.1)


def test_second_session_is_in_use_until_the_first_quits(plain_server):
    first = login(plain_server)
    second = poplib.POP3("127.0.0.1", plain_server.pop3_port, timeout=10)
    second.user(USER.upper())  # the same mailbox, however it is spelt
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(PASSWORD)
    first.quit()
    second.user(USER)
    assert second.pass_(PASSWORD).startswith(b"+OK")
    second.quit()


def test_mail_delivered_during_a_session_is_not_shown_nor_lost(plain_server):
    deliver(plain_server, MESSAGES[:2])
    client = login(plain_server)
    deliver(plain_server, MESSAGES[2:])  # lands in new/, after the snapshot
    assert client.stat()[0] == 2
    client.dele(1)
    client.dele(2)
    client.quit()
    client = login(plain_server)
    _, lines, _ = client.retr(1)
    assert b"Subject: three" in lines and client.stat()[0] == 1
    client.quit()


def test_wrong_password_is_auth_error(plain_server):
    client = poplib.POP3("127.0.0.1", plain_server.pop3_port, timeout=10)
    client.user(USER)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.pass_("wrong")
    client.quit()


def test_stls_then_login_and_sasl(tls_server):
    deliver(tls_server, MESSAGES[:1])
    client = poplib.POP3("127.0.0.1", tls_server.pop3_port, timeout=10)
    assert "STLS" in client.capa() and "USER" not in client.capa()
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext"):
        client.user(USER)
    client.stls(context=tls_context(tls_server))
    assert "USER" in client.capa() and "STLS" not in client.capa()
    assert "PLAIN" in client.capa()["SASL"]
    client.user(USER)
    client.pass_(PASSWORD)
    assert retrieve_all(client) == stored(tls_server)
    client.quit()


def test_pop3s_implicit_tls_and_uidl_is_the_maildir_name(tls_server):
    deliver(tls_server, MESSAGES[:2])
    client = poplib.POP3_SSL("127.0.0.1", tls_server.pop3s_port, timeout=10,
                             context=tls_context(tls_server))
    assert "STLS" not in client.capa()
    client.user(USER)
    client.pass_(PASSWORD)
    uids = sorted(line.split()[1].decode() for line in client.uidl()[1])
    client.quit()
    assert uids == sorted(stored(tls_server))
    names = os.listdir(tls_server.maildir() / "cur")
    assert sorted(name.split(",")[0] for name in names) == uids


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_lists_and_retrieves_over_stls(tls_server):
    deliver(tls_server, MESSAGES[:2])
    expected = stored(tls_server)
    url = f"pop3://{HOSTNAME}:{tls_server.pop3_port}"
    base = ["curl", "-sS", "--max-time", "20", "--ssl-reqd", "--cacert", tls_server.ca_file,
            "--resolve", f"{HOSTNAME}:{tls_server.pop3_port}:127.0.0.1",
            "--user", f"{USER}:{PASSWORD}"]
    listing = subprocess.run(base + [url + "/"], capture_output=True, timeout=30, check=True).stdout
    numbers, sizes = zip(*(line.split() for line in listing.split(b"\r\n") if line))
    assert numbers == (b"1", b"2") and sorted(map(int, sizes)) == sorted(map(len, expected.values()))
    fetched = [subprocess.run(base + [f"{url}/{n}"], capture_output=True, timeout=30,
                              check=True).stdout for n in (1, 2)]
    assert sorted(fetched) == sorted(expected.values())


def raw_session(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"+OK ")
    return sock, reader


@pytest.mark.parametrize("line, expected", [
    (b"STAT", b"-ERR STAT is only valid after login"),
    (b"RETR 1", b"-ERR RETR is only valid after login"),
    (b"PASS x", b"-ERR Send USER first"),
    (b"APOP alice 00", b"-ERR [AUTH] Authentication failed"),
    # Found by the long fuzz run: a non-ASCII digest crashed the comparison (TypeError).
    ("APOP alice@example.test 0é".encode(), b"-ERR [AUTH] Authentication failed"),
    (b"HELLO", b"-ERR Bad command"),
    (b"XYZ", b"-ERR Unknown command"),
    (b"\xff\xfe", b"-ERR Bad command"),
    (b"AUTH NTLM", b"-ERR Unsupported authentication mechanism"),
    (b"AUTH PLAIN !!!", b"-ERR [AUTH] Authentication failed"),
    (b"x" * 9000, b"-ERR Line too long"),
])
def test_malformed_and_out_of_state_commands(shared_plain_server, line, expected):
    sock, reader = raw_session(shared_plain_server.pop3_port)
    sock.sendall(line + b"\r\nNOOP\r\n")
    assert reader.readline().startswith(expected)
    assert reader.readline().startswith(b"-ERR NOOP is only valid after login")
    sock.sendall(b"USER " + USER.encode() + b"\r\nPASS " + PASSWORD.encode() + b"\r\nUSER x\r\n"
                 b"RETR 9\r\nTOP 1\r\nQUIT\r\n")  # pipelined
    replies = [reader.readline() for _ in range(6)]
    assert [r[:4] for r in replies] == [b"+OK ", b"+OK ", b"-ERR", b"-ERR", b"-ERR", b"+OK "]
    assert reader.readline() == b""
    sock.close()
    assert "Traceback" not in shared_plain_server.log()


def test_idle_timeout_says_why(make_server):
    server = make_server(pop3_services=True, pop3={"idle_timeout": 1})
    server.start()
    sock, reader = raw_session(server.pop3_port)
    assert reader.readline() == b"-ERR Disconnected for inactivity\r\n"
    assert reader.readline() == b""
    sock.close()


def test_idle_timeout_is_at_least_ten_minutes_unless_set(shared_plain_server):
    """RFC 1939 3: an autologout timer "MUST be of at least 10 minutes' duration"."""
    config = shared_plain_server.config
    assert config.pop3.idle_timeout >= 600 and config.pop3s.idle_timeout >= 600


def test_connection_cap_is_sys_temp(make_server):
    server = make_server(pop3_services=True, pop3={"max_connections_per_ip": 1})
    server.start()
    sock, _ = raw_session(server.pop3_port)
    with socket.create_connection(("127.0.0.1", server.pop3_port), timeout=10) as second:
        assert second.makefile("rb").readline().startswith(b"-ERR [SYS/TEMP]")
    sock.close()


def test_kill_9_of_the_worker_leaves_no_in_use(plain_server):
    deliver(plain_server, MESSAGES[:1])
    client = login(plain_server)
    client.dele(1)
    (pid,) = plain_server.worker_pids("pop3")
    os.kill(pid, signal.SIGKILL)
    client.sock.shutdown(socket.SHUT_RDWR)
    deadline = time.monotonic() + 20
    while plain_server.worker_pids("pop3") in ([], [pid]) and time.monotonic() < deadline:
        time.sleep(0.1)
    client = _login_when_free(plain_server)
    assert client.stat()[0] == 1  # the DELE died with the session
    client.quit()


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail not installed")
def test_fetchmail_downloads_1000_messages_with_exact_bytes(tls_server, tmp_path):
    messages = [b"Subject: m%d\r\n\r\n" % i + b".dot\r\n" * (i % 3) + b"body %d\r\n" % i * (i % 50)
                for i in range(1000)]
    deliver(tls_server, messages)
    expected = sorted(data.replace(b"\r\n", b"\n") for data in stored(tls_server).values())
    out = tmp_path / "fetched"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f'set no syslog\nset invisible\n'
        f'poll 127.0.0.1 port {tls_server.pop3s_port} proto pop3 auth password\n'
        f'  user "{USER}" there with password "{PASSWORD}" is "fetcher" here\n'
        f'  ssl sslcertck sslcertfile "{tls_server.ca_file}" sslcommonname "{HOSTNAME}"\n'
        # The MDA gets each message as fetchmail delivers it: local LF line ends.
        f'  fetchall norewrite mda "cat > {out}/m.$$"\n')
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run(["fetchmail", "-f", str(rc), "--nodetach", "--idfile",
                             str(tmp_path / "ids"), "--pidfile", str(tmp_path / "pid")],
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(path.read_bytes() for path in out.iterdir()) == expected
    assert not stored(tls_server)  # fetchmail deleted what it fetched, at QUIT


def test_delivery_during_sessions_loses_and_duplicates_nothing(plain_server):
    """Two fetchers take turns on the maildrop (the loser of a race gets [IN-USE]) while SMTP
    keeps delivering: every message is fetched exactly once."""
    total = 150
    fetched: list[bytes] = []
    delivering = threading.Thread(target=deliver_one_by_one, args=(plain_server, total))
    fetchers = [threading.Thread(target=fetch_until, args=(plain_server, total, fetched))
                for _ in range(2)]
    for thread in (delivering, *fetchers):
        thread.start()
    for thread in (delivering, *fetchers):
        thread.join(timeout=120)
    subjects = sorted(fetched)
    assert subjects == sorted(b"Subject: c%d" % i for i in range(total))
    assert not stored(plain_server)


def deliver_one_by_one(server, total):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        for i in range(total):
            client.sendmail("bob@remote.test", [USER], b"Subject: c%d\r\n\r\nbody\r\n" % i)


def fetch_until(server, total, fetched, timeout=90.0):
    deadline = time.monotonic() + timeout
    while len(fetched) < total and time.monotonic() < deadline:
        try:
            client = login(server)
        except poplib.error_proto as exc:
            assert b"[IN-USE]" in exc.args[0]
            continue
        mine = []
        for number in range(1, client.stat()[0] + 1):
            lines = client.retr(number)[1]
            mine += [line for line in lines if line.startswith(b"Subject: ")]
            client.dele(number)
        client.quit()
        fetched += mine  # only once QUIT said the deletes are done


def test_apop_with_a_secret_set_by_the_administrator(plain_server):
    deliver(plain_server, MESSAGES[:1])
    client = poplib.POP3("127.0.0.1", plain_server.pop3_port, timeout=10)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.apop(USER, PASSWORD)  # no APOP secret yet: the login password is not one
    client.close()
    cli(plain_server.conf, "user", "apop", USER, "--password-stdin", input="apop secret\n")
    client = poplib.POP3("127.0.0.1", plain_server.pop3_port, timeout=10)
    assert client.apop(USER, "apop secret").startswith(b"+OK")
    assert client.stat()[0] == 1
    client.quit()
    cli(plain_server.conf, "user", "apop", USER, "--off")
    client = poplib.POP3("127.0.0.1", plain_server.pop3_port, timeout=10)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.apop(USER, "apop secret")
    client.close()


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def test_pipelined_commands_wait_for_a_client_that_does_not_read(plain_server):
    """RFC 2449 PIPELINING: 2,000 RETRs of a 60 KB message in one 16 KB packet, not read yet.
    The worker stops taking commands while its replies wait unread (as Dovecot does) instead
    of holding 120 MB of replies in memory; read then, every reply comes, in order."""
    deliver(plain_server, [b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 750])
    (pid,) = plain_server.worker_pids("pop3")
    sock, reader = raw_session(plain_server.pop3_port)
    sock.sendall(b"USER %s\r\nPASS %s\r\n" % (USER.encode(), PASSWORD.encode()))
    assert reader.readline().startswith(b"+OK") and reader.readline().startswith(b"+OK")
    before = _rss(pid)
    count = 2000
    sock.sendall(b"RETR 1\r\n" * count + b"QUIT\r\n")
    time.sleep(2)
    assert _rss(pid) - before < 32 * 2**20
    replies = 0
    for line in iter(reader.readline, b""):
        replies += line.startswith(b"+OK ") and line.endswith(b" octets\r\n")
    assert replies == count
    sock.close()


def test_a_client_that_stops_reading_is_cut_at_the_idle_timeout(make_server):
    """A client that sends RETR of a large message and never reads the reply: at the idle
    timeout its connection is cut and the maildrop lock goes with it (the close waited for
    ever on its unread output, the session holding the lock: [IN-USE] for good)."""
    server = make_server(pop3_services=True, server={"allow_plaintext_auth": True},
                         pop3={"idle_timeout": 1})
    server.start()
    deliver(server, [b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 100_000])
    stuck = socket.create_connection(("127.0.0.1", server.pop3_port), timeout=10)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b"USER %s\r\nPASS %s\r\nRETR 1\r\n" % (USER.encode(), PASSWORD.encode()))
    time.sleep(1)
    client = _login_when_free(server, timeout=10)
    assert client.stat()[0] == 1
    client.quit()
    stuck.close()
    assert "Traceback" not in server.log()


def test_a_client_reading_a_large_message_slowly_is_not_cut_at_the_idle_timeout(make_server):
    """The idle timeout is for a client that does nothing: one that takes a long RETR slowly,
    reading all the while, is at work (Dovecot counts its reading too). Over the timeout it
    was cut mid-message, its input alone counting as activity."""
    server = make_server(pop3_services=True, server={"allow_plaintext_auth": True},
                         pop3={"idle_timeout": 1})
    server.start()
    body = (b"y" * 78 + b"\r\n") * 100_000  # 8 MB, read over ~6 s below
    deliver(server, [b"Subject: big\r\n\r\n" + body])
    with socket.create_connection(("127.0.0.1", server.pop3_port), timeout=10) as slow:
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        slow.sendall(b"USER %s\r\nPASS %s\r\nRETR 1\r\n" % (USER.encode(), PASSWORD.encode()))
        received, deadline = b"", time.monotonic() + 30
        while b"\r\n.\r\n" not in received[-400:] and time.monotonic() < deadline:
            chunk = slow.recv(65536)
            if not chunk:
                break
            received += chunk
            time.sleep(0.05)  # ~1.3 MB/s at most: more than the kernel's buffers can hold
    # The whole message and its end (the idle timeout may follow it: the client is idle then).
    assert body + b".\r\n" in received, len(received)  # the body ends in CRLF, then the dot
