"""Mailbox routing on one real node (README "Scaling out"): a proxied login (SASL PLAIN with
the [cluster] secret_file master secret) counts only from a proxy_trusted peer and with the
right secret; a PROXY header from elsewhere is refused; a mailbox whose owner node cannot be
reached gets a temporary error, never a wrong-password answer; mail a node relays to an
owner (PROXY LOCAL) is not checked again, as its client's was."""

from __future__ import annotations

import base64
import smtplib
import socket

import pytest

from mailforge.protocols.connection.proxy import V2_LOCAL_HEADER, v2_header
from .conftest import PASSWORD, USER, cli, free_port

SECRET = "the-cluster-master-secret"
FRONT = "127.0.0.2"  # the one proxy_trusted peer: a node of the cluster
OWNED_ELSEWHERE = "erin@example.test"  # owned by a node that is down


@pytest.fixture
def node(make_server):
    server = make_server(pop3_services=True, imap_services=True,
                         server={"proxy_trusted": [f"{FRONT}/32"], "allow_plaintext_auth": True},
                         pop3={"proxy_protocol": True},
                         cluster={"node": "a", "secret_file": "cluster.secret"})
    (server.dir / "cluster.secret").write_text(SECRET + "\n")
    cli(server.conf, "user", "add", OWNED_ELSEWHERE, "--password-stdin", input=PASSWORD + "\n")
    cli(server.conf, "node", "add", "gone", "--host", "127.0.0.1", "--pop3-port",
        str(free_port()), "--imap-port", str(free_port()))
    cli(server.conf, "user", "set", OWNED_ELSEWHERE, "--node", "gone")
    server.start()
    return server


def plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def pop3_auth(node, source: str, credentials: str) -> bytes:
    """AUTH PLAIN over a connection from `source` with a PROXY header naming 192.0.2.9: the
    answer (b"" when the connection was closed unanswered)."""
    with socket.create_connection(("127.0.0.1", node.pop3_port), timeout=20,
                                  source_address=(source, 0)) as sock:
        sock.sendall(v2_header(("192.0.2.9", 40000), ("127.0.0.1", node.pop3_port)))
        lines = sock.makefile("rb")
        try:
            if not lines.readline().startswith(b"+OK"):
                return b""
        except ConnectionResetError:
            return b""
        sock.sendall(f"AUTH PLAIN {credentials}\r\n".encode())
        return lines.readline()


def imap_auth(node, credentials: str) -> bytes:
    """AUTHENTICATE PLAIN on the IMAP port (no PROXY header), from 127.0.0.1: the tagged answer."""
    with socket.create_connection(("127.0.0.1", node.imap_port), timeout=20) as sock:
        lines = sock.makefile("rb")
        lines.readline()
        sock.sendall(f"A1 AUTHENTICATE PLAIN {credentials}\r\n".encode())
        while not (line := lines.readline()).startswith(b"A1 "):
            pass
        return line


def test_proxied_logins_need_a_trusted_peer_and_the_right_secret(node):
    master = plain(USER, "b", SECRET)
    assert pop3_auth(node, "127.0.0.1", master) == b""  # not proxy_trusted: closed unanswered
    assert pop3_auth(node, FRONT, plain(USER, "b", SECRET + "x")).startswith(b"-ERR [AUTH]")
    assert pop3_auth(node, FRONT, master).startswith(b"+OK")
    assert f"{USER}: POP3 login from 192.0.2.9 via node b" in node.log()
    # The IMAP port takes no PROXY header: 127.0.0.1 is the peer, and not a trusted one.
    assert imap_auth(node, master).startswith(b"A1 NO [AUTHENTICATIONFAILED]")
    assert imap_auth(node, plain("", USER, PASSWORD)).startswith(b"A1 OK")


def test_an_owner_that_is_down_is_a_temporary_error(node):
    with socket.create_connection(("127.0.0.1", node.pop3_port), timeout=20,
                                  source_address=(FRONT, 0)) as sock:
        sock.sendall(v2_header(("192.0.2.9", 40000), ("127.0.0.1", node.pop3_port)))
        lines = sock.makefile("rb")
        lines.readline()
        sock.sendall(f"USER {OWNED_ELSEWHERE}\r\nPASS {PASSWORD}\r\n".encode())
        lines.readline()
        assert lines.readline().startswith(b"-ERR [SYS/TEMP]")
    assert imap_auth(node, plain("", OWNED_ELSEWHERE, PASSWORD)).startswith(b"A1 NO [UNAVAILABLE]")
    assert "cannot proxy the imap session from 127.0.0.1 to node gone" in node.log()
    assert imap_auth(node, plain("", USER, PASSWORD)).startswith(b"A1 OK")  # others go on


def smtp_status(server, header: bytes) -> int:
    """A message from a DMARC domain (whose DNS never answers) after `header`: the reply code."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock.sendall(header)
    client = smtplib.SMTP()
    client.sock = sock
    try:
        assert client.getreply()[0] == 220
        client.ehlo("relay.test")
        client.mail("dave@slow.test")
        assert client.rcpt(USER)[0] == 250
        return client.data(b"From: dave@slow.test\r\nSubject: hi\r\n\r\nhi\r\n")[0]
    finally:
        client.close()


def test_mail_a_node_relays_is_not_checked_again(make_server, silent_nameserver):
    server = make_server(dns={"nameservers": [silent_nameserver.nameserver], "timeout": 0.3,
                              "lifetime": 0.6},
                         authentication={"inbound_checks": True},
                         server={"proxy_trusted": ["127.0.0.1/32"]}, smtp={"proxy_protocol": True})
    server.start()
    # A client through the balancer: its sender's DMARC policy cannot be read, so 451.
    assert smtp_status(server, v2_header(("192.0.2.9", 40000), ("127.0.0.1", server.port))) == 451
    assert smtp_status(server, V2_LOCAL_HEADER) == 250  # a node, speaking for itself
    server.wait_delivered(1)
