"""PROXY protocol v1 and v2 over real sockets: a test client plays the load balancer (sends
the header, then speaks SMTP or POP3), and the server's policy sees the header's client.

Every connection comes from 127.0.0.1 (the trusted balancer); the clients it names are
documentation addresses, so only the header can have told the server about them.
"""

from __future__ import annotations

import email
import poplib
import smtplib
import socket
import ssl
import struct
import typing

import pytest

from mailforge.protocols.connection.proxy import V2_SIGNATURE

from .conftest import PASSWORD, USER, Server

RELAY_NET_CLIENT, OUTSIDER = "192.0.2.7", "198.51.100.23"
UNTRUSTED_BALANCER = "127.0.0.3"
BLOCK_AFTER = 3


def v1(client: str, port: int = 40000) -> bytes:
    family = "TCP6" if ":" in client else "TCP4"
    server = "::1" if ":" in client else "127.0.0.1"
    return f"PROXY {family} {client} {server} {port} 25\r\n".encode()


def v2(client: str | None, port: int = 40000) -> bytes:
    """A v2 PROXY header for `client`, or the LOCAL command (a health check) for None."""
    if client is None:
        return V2_SIGNATURE + b"\x20\x00\x00\x00"
    family, server = (socket.AF_INET6, "::1") if ":" in client else (socket.AF_INET, "127.0.0.1")
    block = (socket.inet_pton(family, client) + socket.inet_pton(family, server)
             + struct.pack("!HH", port, 25))
    code = 0x21 if family == socket.AF_INET6 else 0x11
    return V2_SIGNATURE + bytes([0x21, code]) + struct.pack("!H", len(block)) + block


def balancer(port: int, header: bytes, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
    sock.sendall(header)
    return sock


class ProxiedSMTP(smtplib.SMTP):
    """smtplib behind a load balancer: the header goes first on the new connection."""

    def __init__(self, header: bytes, port: int) -> None:
        self.header = header
        super().__init__("127.0.0.1", port, timeout=20, local_hostname="client.test")

    def _get_socket(self, host, port, timeout):
        return balancer(port, self.header)


class ProxiedPOP3(poplib.POP3):
    def __enter__(self) -> typing.Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __init__(self, header: bytes, port: int) -> None:
        self.header = header
        super().__init__("127.0.0.1", port, timeout=20)

    def _create_socket(self, timeout):
        return balancer(self.port, self.header)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("proxy"), pop3_services=True, imap_services=True,
                    server={"proxy_trusted": ["127.0.0.1/32", "::1/128"], "allow_plaintext_auth": True},
                    smtp={"proxy_protocol": True, "max_connections_per_ip": 2},
                    pop3={"proxy_protocol": True}, pop3s={"proxy_protocol": True},
                    imap={"proxy_protocol": True}, imaps={"proxy_protocol": True},
                    relay={"mode": "networks", "networks": ["192.0.2.0/24"]},
                    abuse={"tarpit_after": BLOCK_AFTER, "block_after": BLOCK_AFTER,
                           "block_time": 600.0})
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("make_header", [v1, v2], ids=["v1", "v2"])
def test_relay_is_allowed_for_a_listed_network_only_through_the_header(proxied, make_header):
    with ProxiedSMTP(make_header(RELAY_NET_CLIENT), proxied.port) as client:
        client.ehlo("relay-client.test")
        client.mail("someone@example.test")
        assert client.rcpt("far@remote.test")[0] == 250
    with ProxiedSMTP(make_header(OUTSIDER), proxied.port) as client:
        _code, text = client.ehlo("outsider.test")
        assert f"[{OUTSIDER}]".encode() in text  # "Hello name [client]"
        client.mail("someone@example.test")
        assert client.rcpt("far@remote.test")[0] in (550, 554)


@pytest.mark.parametrize(("make_header", "client_ip"),
                         [(v1, "198.51.100.41"), (v2, "2001:db8::42")], ids=["v1", "v2-ipv6"])
def test_the_received_header_names_the_proxied_client(proxied, make_header, client_ip):
    before = len(proxied.delivered())
    with ProxiedSMTP(make_header(client_ip), proxied.port) as client:
        client.sendmail("sender@remote.test", [USER], f"Subject: via {client_ip}\r\n\r\nhello\r\n")
    delivered = proxied.wait_delivered(before + 1)
    messages = [email.message_from_bytes(p.read_bytes()) for p in delivered]
    (message,) = [m for m in messages if m["Subject"] == f"via {client_ip}"]
    assert f"[{client_ip}]" in message["Received"]
    assert "127.0.0.1" not in message["Received"]


def test_the_per_ip_cap_counts_the_proxied_address(proxied):
    first, second = ProxiedSMTP(v2("203.0.113.5"), proxied.port), ProxiedSMTP(v1("203.0.113.5"), proxied.port)
    try:
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            ProxiedSMTP(v2("203.0.113.5"), proxied.port)
        assert refused.value.smtp_code == 421
        assert b"too many connections from your IP" in refused.value.smtp_error
        # Same balancer, another client: served.
        with ProxiedSMTP(v2("203.0.113.6"), proxied.port) as other:
            assert other.noop()[0] == 250
    finally:
        first.close()
        second.close()


def test_the_local_command_and_unknown_keep_the_balancers_address(proxied):
    for header in (v2(None), b"PROXY UNKNOWN\r\n"):
        with ProxiedSMTP(header, proxied.port) as client:
            assert b"[127.0.0.1]" in client.ehlo("health.test")[1]


def test_abuse_counters_count_the_proxied_address_over_pop3(proxied):
    attacker, bystander = "203.0.113.66", "203.0.113.67"
    for _ in range(BLOCK_AFTER - 1):
        with ProxiedPOP3(v2(attacker), proxied.pop3_port) as client:
            client.user(USER)
            with pytest.raises(poplib.error_proto, match="AUTH"):
                client.pass_("wrong")
    with ProxiedPOP3(v2(attacker), proxied.pop3_port) as client:
        client.user(USER)
        with pytest.raises(poplib.error_proto):
            client.pass_("wrong")  # the blocking failure
    with pytest.raises(poplib.error_proto, match="SYS/TEMP"):
        ProxiedPOP3(v1(attacker), proxied.pop3_port)
    with ProxiedPOP3(v1(bystander), proxied.pop3_port) as client:
        client.user(USER)
        assert client.pass_(PASSWORD).startswith(b"+OK")
        client.quit()
    assert f"POP3 login from {bystander}" in proxied.log()


def test_implicit_tls_reads_the_header_before_the_handshake(proxied):
    context = ssl.create_default_context(cafile=proxied.ca_file)
    context.check_hostname = False
    # Header, ClientHello and all in as few segments as the client likes: nothing is lost.
    with balancer(proxied.pop3s_port, v2("198.51.100.77")) as raw, context.wrap_socket(raw) as tls:
        lines = tls.makefile("rb")
        assert lines.readline().startswith(b"+OK")
        tls.sendall(f"USER {USER}\r\nPASS {PASSWORD}\r\n".encode())
        assert lines.readline().startswith(b"+OK")
        assert lines.readline().startswith(b"+OK")
        tls.sendall(b"QUIT\r\n")
        assert lines.readline().startswith(b"+OK")
    assert "POP3 login from 198.51.100.77" in proxied.log()


def imap_login(sock: socket.socket) -> None:
    lines = sock.makefile("rb")
    assert lines.readline().startswith(b"* OK")
    sock.sendall(f'a LOGIN "{USER}" "{PASSWORD}"\r\nb LOGOUT\r\n'.encode())
    answers = [lines.readline() for _ in range(4)]
    assert any(line.startswith(b"a OK") for line in answers), answers


def test_imap_and_imaps_see_the_proxied_address(proxied):
    with balancer(proxied.imap_port, v1("198.51.100.91")) as sock:
        imap_login(sock)
    context = ssl.create_default_context(cafile=proxied.ca_file)
    context.check_hostname = False
    with balancer(proxied.imaps_port, v2("2001:db8::91")) as raw, context.wrap_socket(raw) as tls:
        imap_login(tls)
    log = proxied.log()
    assert "IMAP login from 198.51.100.91" in log and "IMAP login from 2001:db8::91" in log


def closed_unanswered(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_a_header_from_an_untrusted_address_is_refused(proxied):
    for port in (proxied.port, proxied.pop3_port):
        with balancer(port, v1(RELAY_NET_CLIENT), source=UNTRUSTED_BALANCER) as sock:
            assert closed_unanswered(sock)
    assert f"{UNTRUSTED_BALANCER} is not in [server] proxy_trusted" in proxied.log()


@pytest.mark.parametrize("garbage", [
    b"EHLO no-header.test\r\n",
    b"PROXY TCP4 192.0.2.7 127.0.0.1 99999 25\r\n",
    b"PROXY TCP4 192.0.2.7\n",
    V2_SIGNATURE + b"\x21\x12\x00\x0c" + b"\0" * 12,
    b"PROXY " + b"x" * 200,
], ids=["no-header", "bad-port", "lf-only", "v2-datagram", "overlong"])
def test_malformed_headers_are_refused_without_a_greeting(proxied, garbage):
    with balancer(proxied.port, garbage) as sock:
        assert closed_unanswered(sock)
    with ProxiedSMTP(v1(OUTSIDER), proxied.port) as client:  # the worker is fine
        assert client.noop()[0] == 250


def test_the_server_stops_cleanly_with_proxied_listeners(proxied):
    """Last in this module: SIGTERM closes the PROXY listeners and every worker exits 0."""
    with ProxiedSMTP(v1(OUTSIDER), proxied.port) as client:
        assert client.noop()[0] == 250
    assert proxied.stop() == 0
    assert "Traceback" not in proxied.log()
