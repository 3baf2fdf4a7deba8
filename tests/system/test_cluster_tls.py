"""Mailbox routing over TLS ([cluster] tls = "starttls", README "Scaling out"): the front node
asks the owner for STARTTLS (POP3: STLS) and verifies its certificate against the cluster's
CA file for the node table's host before it sends the master secret. A recording relay
between the nodes (the node table points at it) shows what an eavesdropper would see: the
STARTTLS exchange, then ciphertext, never the secret. An owner whose certificate another CA
signed gets no login at all: the client gets a temporary error, the front node logs why.
An owner with TLS on takes a proxied login only inside TLS; inside it, the PROXY header's
client and its node marking hold as they do in the clear. Mail the front node relays to a
mailbox's owner goes inside TLS verified the same way: the relay between them sees STARTTLS,
never the message; to an owner whose certificate another CA signed it is not sent at all but
stays in the front node's queue, deferred, the reason logged."""

from __future__ import annotations

import asyncio
import imaplib
import json
import poplib
import smtplib
import socket
import ssl
import threading

import pytest

from mailforge.protocols.connection.proxy import V2_LOCAL_HEADER, v2_header
from .conftest import PASSWORD, Server, cli
from .test_cluster_counters import wait_for
from .test_cluster_logins import plain
from .throwaway_ca import ThrowawayCA

SECRET = "the-cluster-master-secret"
CAROL = "carol@example.test"  # her mailbox is node b's: b's certificate the cluster CA's
DORA = "dora@example.test"    # hers is node c's: c's certificate another CA's
ERIN = "erin@example.test"    # b's too, for the logins the test makes at b itself
FAY = "fay@example.test"      # b's too, for the mail relayed to b
# What only the message's body holds: a relay between the nodes must never see it.
MARKER = "the body an eavesdropper must not read"
CLIENT = ("192.0.2.9", 40000)  # the client a PROXY header names


class RecordingRelay:
    """A TCP forwarder on loopback to `port`, in a thread of its own: what crosses it, both
    ways, is kept in `passed`."""

    def __init__(self, port: int) -> None:
        self.passed = bytearray()
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._forward, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _close(self) -> None:
        self._server.close()
        forwarding = asyncio.all_tasks() - {asyncio.current_task()}
        for task in forwarding:
            task.cancel()
        await asyncio.gather(*forwarding, return_exceptions=True)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            onward_reader, onward_writer = await asyncio.open_connection("127.0.0.1", self._port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, onward_writer), self._pipe(onward_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                self.passed += data
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


def secret_forms(user: str) -> list[bytes]:
    """The master secret as it would cross in the clear: itself, and the AUTH PLAIN message
    of a's proxied login for `user`, base64 as sent."""
    return [SECRET.encode(), plain(user, "a", SECRET).encode()]


def node(tmp_path_factory, name: str, ca: ThrowawayCA, **overrides: dict) -> Server:
    """A node with [cluster] tls on, trusting `ca`, that takes PROXY headers from loopback."""
    server = Server(tmp_path_factory.mktemp(f"node-{name}"), pop3_services=True,
                    imap_services=True,
                    server={"proxy_trusted": ["127.0.0.1/32"], "allow_plaintext_auth": True},
                    cluster={"node": name, "secret_file": "cluster.secret", "tls": "starttls",
                             "tls_ca_file": str(ca.ca_file)},
                    **overrides)
    (server.dir / "cluster.secret").write_text(SECRET + "\n")
    return server


def owner(tmp_path_factory, name: str, ca: ThrowawayCA, signer: ThrowawayCA,
          users: list[str]) -> Server:
    """A node whose internal SMTP, POP3 and IMAP ports take PROXY headers, with a certificate
    for 127.0.0.1 that `signer` made, serving `users` itself."""
    server = node(tmp_path_factory, name, ca, smtp={"proxy_protocol": True},
                  pop3={"proxy_protocol": True}, imap={"proxy_protocol": True})
    cert, key = signer.issue(name, ["127.0.0.1"])
    server.reconfigure({"tls": {"cert": str(cert), "key": str(key)}})
    for user in users:
        cli(server.conf, "user", "add", user, "--password-stdin", input=PASSWORD + "\n")
    return server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Front node a, which clients reach; owners b (carol, erin, fay) and c (dora), each
    reached by a through a relay per service."""
    ca = ThrowawayCA(tmp_path_factory.mktemp("ca"))
    other_ca = ThrowawayCA(tmp_path_factory.mktemp("other-ca"))
    servers: list[Server] = []
    relays: dict[str, RecordingRelay] = {}
    try:
        b = owner(tmp_path_factory, "b", ca, ca, [CAROL, ERIN, FAY])
        c = owner(tmp_path_factory, "c", ca, other_ca, [DORA])
        a = node(tmp_path_factory, "a", ca)
        servers += [a, b, c]
        for name, peer in (("b", b), ("c", c)):
            relays[f"{name}-smtp"] = RecordingRelay(peer.port)
            relays[f"{name}-pop3"] = RecordingRelay(peer.pop3_port)
            relays[f"{name}-imap"] = RecordingRelay(peer.imap_port)
            cli(a.conf, "node", "add", name, "--host", "127.0.0.1",
                "--smtp-port", str(relays[f"{name}-smtp"].port),
                "--pop3-port", str(relays[f"{name}-pop3"].port),
                "--imap-port", str(relays[f"{name}-imap"].port))
        for user, name in ((CAROL, "b"), (DORA, "c"), (FAY, "b")):
            cli(a.conf, "user", "add", user, "--password-stdin", input=PASSWORD + "\n")
            cli(a.conf, "user", "set", user, "--node", name)
        for server in servers:
            server.start()
        yield a, b, c, relays
    finally:
        for server in servers:
            server.stop()
        for relay in relays.values():
            relay.stop()


def test_logins_through_the_front_reach_the_owner_inside_tls(cluster):
    a, b, _, relays = cluster
    with imaplib.IMAP4("127.0.0.1", a.imap_port, timeout=30) as client:
        client.login(CAROL, PASSWORD)
        assert client.select("INBOX")[0] == "OK"
    client = poplib.POP3("127.0.0.1", a.pop3_port, timeout=30)
    try:
        client.user(CAROL)
        assert client.pass_(PASSWORD).startswith(b"+OK")
        assert client.stat() == (0, 0)
    finally:
        client.quit()
    log = b.log()
    assert all(f"{CAROL}: {service} login from 127.0.0.1 via node a" in log
               for service in ("IMAP", "POP3"))
    imap, pop3 = bytes(relays["b-imap"].passed), bytes(relays["b-pop3"].passed)
    assert b"P1 STARTTLS\r\n" in imap and b"STLS\r\n" in pop3
    assert b"AUTHENTICATE" not in imap and b"AUTH PLAIN" not in pop3  # they went inside TLS
    for passed in (imap, pop3):
        assert not any(form in passed for form in secret_forms(CAROL))


def test_an_owner_whose_certificate_another_ca_signed_gets_no_secret(cluster):
    a, _, c, relays = cluster
    with imaplib.IMAP4("127.0.0.1", a.imap_port, timeout=30) as client:
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            client.login(DORA, PASSWORD)
    client = poplib.POP3("127.0.0.1", a.pop3_port, timeout=30)
    try:
        client.user(DORA)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\]"):
            client.pass_(PASSWORD)
    finally:
        client.quit()
    log = a.log()
    for service, starttls in (("imap", b"P1 STARTTLS\r\n"), ("pop3", b"STLS\r\n")):
        assert (f"{DORA}: cannot proxy the {service} session from 127.0.0.1 to node c: "
                "TLS handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED]") in log
        passed = bytes(relays[f"c-{service}"].passed)
        assert starttls in passed  # it got as far as the handshake
        assert not any(form in passed for form in secret_forms(DORA))
    assert f"{DORA}: " not in c.log()


def pop3_at_owner(b: Server, port: int, credentials: str, ca: str | None = None) -> bytes:
    """AUTH PLAIN at b's internal POP3 port (or a relay to it), after a PROXY header naming
    CLIENT and marked as a node's proxied session, inside TLS where a `ca` is given to verify
    b's certificate with: the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(v2_header(CLIENT, ("127.0.0.1", b.pop3_port), client_counted=True))
        lines = sock.makefile("rb")
        assert lines.readline().startswith(b"+OK")
        if ca is not None:
            sock.sendall(b"STLS\r\n")
            assert lines.readline().startswith(b"+OK")
            context = ssl.create_default_context(cafile=ca)
            with context.wrap_socket(sock, server_hostname="127.0.0.1") as secure:
                secure.sendall(f"AUTH PLAIN {credentials}\r\n".encode())
                return secure.makefile("rb").readline()
        sock.sendall(f"AUTH PLAIN {credentials}\r\n".encode())
        return lines.readline()


def test_the_owner_takes_a_proxied_login_only_inside_tls(cluster):
    """As a front node with tls = "none" would: its secret crosses (the relay shows it), and
    b refuses the login with a temporary error, so the mistake shows at once. Inside TLS the
    PROXY header's client and its marking hold: the proxied login alone is taken there."""
    _, b, _, _ = cluster
    ca = str(b.config.data_dir / b.config.cluster.tls_ca_file)
    master = plain(ERIN, "a", SECRET)
    relay = RecordingRelay(b.pop3_port)
    try:
        assert pop3_at_owner(b, relay.port, master).startswith(b"-ERR [SYS/TEMP]")
    finally:
        relay.stop()
    assert master.encode() in relay.passed  # what the relays above would have seen
    assert f"{ERIN}: refused the proxied login of node a (127.0.0.1) outside TLS" in b.log()
    assert pop3_at_owner(b, b.pop3_port, master, ca).startswith(b"+OK")
    assert f"{ERIN}: POP3 login from {CLIENT[0]} via node a" in b.log()
    own_password = plain("", ERIN, PASSWORD)
    assert pop3_at_owner(b, b.pop3_port, own_password, ca).startswith(b"-ERR [SYS/TEMP]")
    assert "only a proxied login may be made there" in b.log()



def test_the_owner_takes_a_nodes_mail_only_inside_tls(cluster):
    """As a front node with tls = "none" would relay: b answers MAIL with a temporary error
    (the mail would wait in that node's queue), and takes it once STARTTLS is done."""
    _, b, _, _ = cluster
    ca = str(b.config.data_dir / b.config.cluster.tls_ca_file)
    with socket.create_connection(("127.0.0.1", b.port), timeout=20) as sock:
        sock.sendall(V2_LOCAL_HEADER)
        client = smtplib.SMTP()
        client.sock, client.file = sock, None
        assert client.getreply()[0] == 220
        client.ehlo("a.test")
        code, text = client.docmd("MAIL FROM:<dave@remote.test>")
        assert (code, text) == (450, b"4.7.0 Must issue a STARTTLS command first: the "
                                     b"cluster's link is TLS")
        assert client.docmd("STARTTLS")[0] == 220
        context = ssl.create_default_context(cafile=ca)
        client.sock, client.file = context.wrap_socket(sock, server_hostname="127.0.0.1"), None
        client.ehlo("a.test")
        assert client.docmd("MAIL FROM:<dave@remote.test>")[0] == 250
        client.close()


def send_to(a: Server, rcpt: str) -> None:
    """A message for `rcpt` from a remote sender, accepted by the front node a."""
    with smtplib.SMTP("127.0.0.1", a.port, timeout=30) as client:
        client.sendmail("dave@remote.test", [rcpt],
                        f"From: dave@remote.test\r\nSubject: routed\r\n\r\n{MARKER}\r\n")


def test_mail_for_the_owner_crosses_inside_tls(cluster):
    a, b, _, relays = cluster
    send_to(a, FAY)
    (stored,) = b.wait_delivered(1, FAY)
    assert MARKER in stored.read_text() and a.delivered(FAY) == []
    # Verified, not only encrypted (opportunistic TLS would encrypt it as well).
    assert f"TLS to b[127.0.0.1]:{relays['b-smtp'].port} meets the cluster's TLS" in a.log()
    passed = bytes(relays["b-smtp"].passed)
    assert b"STARTTLS\r\n" in passed and b"RCPT TO" not in passed  # the envelope went inside
    assert MARKER.encode() not in passed


def test_mail_for_an_owner_whose_certificate_another_ca_signed_stays_queued(cluster):
    a, _, c, relays = cluster
    send_to(a, DORA)

    def queued() -> list[dict]:
        return json.loads(cli(a.conf, "queue", "list", "--json").stdout)

    wait_for(lambda: [e["state"] for e in queued()] == ["deferred"], "the deferral")
    (entry,) = queued()
    assert entry["recipients"] == [DORA]
    why = entry["errors"][DORA]
    assert why.startswith("4.7.5 ") and "CERTIFICATE_VERIFY_FAILED" in why
    assert "not sent without it" in why
    assert f"error=<{DORA}>: {why}" in a.log()  # the deferral's log line, with the reason
    assert DORA in cli(a.conf, "queue", "list").stdout
    passed = bytes(relays["c-smtp"].passed)
    assert b"STARTTLS\r\n" in passed  # it got as far as the handshake
    assert MARKER.encode() not in passed and b"RCPT TO" not in passed
    assert c.delivered(DORA) == []
