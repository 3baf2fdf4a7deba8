"""Mailbox routing on real nodes (README "Scaling out"): a proxied login (SASL PLAIN with
the [cluster] secret_file master secret) counts only from a proxy_trusted peer and with the
right secret; a PROXY header from elsewhere is refused; a mailbox whose owner node cannot be
reached gets a temporary error, never a wrong-password answer; mail a node relays to an
owner (PROXY LOCAL) is not checked again, as its client's was. Two nodes sharing their
counters in Redis: a proxied session counts once against the client's per-IP cap, and mail
to a subaddress lands in the owner's folder of that name, as it would locally. Mail the front
node's DMARC check quarantined lands in the owner's Junk folder, as it would locally; only a
node may ask that of the owner (XJUNK), never a client; a verdict that claims to be the
owner's (its hostname another than the front node's) is removed there. A REQUIRETLS message
reaches its mailbox on the owner, as it would locally, instead of bouncing for want of
validated TLS; the owner, reached in the clear, keeps the sender's demand when it relays the
message on (its accounts make the address a forward to a remote address): to an MX without
validated TLS it bounces 5.7.30, as the front node's own forward does, and is never sent."""

from __future__ import annotations

import base64
import contextlib
import email
import poplib
import smtplib
import socket
import ssl
from collections.abc import Iterator

import pytest

from mailforge.protocols.connection.proxy import V2_LOCAL_HEADER, v2_header
from tests.redis_server import RedisServer
from tests.smtp_sinks import Sink
from tests.system.dns_server import txt
from .conftest import PASSWORD, USER, Server, cli, free_port
from .test_cluster_counters import cluster_state, wait_for
from .test_mail_authentication import HOSTNAME, SPF_FAIL, message, our_results
from .test_outbound import wait_until

SECRET = "the-cluster-master-secret"
FRONT = "127.0.0.2"  # the one proxy_trusted peer: a node of the cluster
OWNED_ELSEWHERE = "erin@example.test"  # owned by a node that is down


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One node for the module's login tests (none of them changes what the others see)."""
    server = Server(tmp_path_factory.mktemp("node"), pop3_services=True, imap_services=True,
                    server={"proxy_trusted": [f"{FRONT}/32"], "allow_plaintext_auth": True},
                    pop3={"proxy_protocol": True},
                    cluster={"node": "a", "secret_file": "cluster.secret"})
    try:
        (server.dir / "cluster.secret").write_text(SECRET + "\n")
        cli(server.conf, "user", "add", OWNED_ELSEWHERE, "--password-stdin", input=PASSWORD + "\n")
        cli(server.conf, "node", "add", "gone", "--host", "127.0.0.1", "--pop3-port",
            str(free_port()), "--imap-port", str(free_port()))
        cli(server.conf, "user", "set", OWNED_ELSEWHERE, "--node", "gone")
        server.start()
        yield server
    finally:
        server.stop()


def plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def pop3_auth(node, source: str, credentials: str, client_counted: bool = False) -> bytes:
    """AUTH PLAIN over a connection from `source` with a PROXY header naming 192.0.2.9 (marked
    as a node's proxied session: `client_counted`): the answer (b"" when the connection was
    closed unanswered)."""
    with socket.create_connection(("127.0.0.1", node.pop3_port), timeout=20,
                                  source_address=(source, 0)) as sock:
        sock.sendall(v2_header(("192.0.2.9", 40000), ("127.0.0.1", node.pop3_port),
                               client_counted))
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


def test_a_session_marked_as_proxied_takes_only_the_proxied_login(node):
    """The mark that spares a session the client's per-IP cap holds only with the master
    secret: the user's own password on such a connection is refused, and said in the log."""
    own_password = plain("", USER, PASSWORD)
    assert pop3_auth(node, FRONT, own_password, client_counted=True).startswith(b"-ERR [SYS/TEMP]")
    assert "only a proxied login may be made there" in node.log()
    assert pop3_auth(node, FRONT, plain(USER, "b", SECRET), client_counted=True).startswith(b"+OK")
    assert pop3_auth(node, FRONT, own_password).startswith(b"+OK")  # unmarked: as before


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


@contextlib.contextmanager
def smtp_after(server, header: bytes) -> Iterator[smtplib.SMTP]:
    """An SMTP session with `server` after `header` (a PROXY header, or b""), greeted and past
    EHLO."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock.sendall(header)
    client = smtplib.SMTP()
    client.sock = sock
    try:
        assert client.getreply()[0] == 220
        client.ehlo("relay.test")
        yield client
    finally:
        client.close()


def smtp_status(server, header: bytes) -> int:
    """A message from a DMARC domain (whose DNS never answers) after `header`: the reply code."""
    with smtp_after(server, header) as client:
        client.mail("dave@slow.test")
        assert client.rcpt(USER)[0] == 250
        return client.data(b"From: dave@slow.test\r\nSubject: hi\r\n\r\nhi\r\n")[0]


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


CAP = 2  # [pop3] max_connections_per_ip on both nodes
CAROL = "carol@example.test"  # her mailbox is node b's, as are the others of OWNED_BY_B
# One POP3 session per mailbox at a time (its lock): a mailbox for each held session.
OWNED_BY_B = [CAROL] + [f"user{n}@example.test" for n in range(1, CAP)]
TEAM = "team@example.test"    # an alias: carol (on b) and alice (on whichever node)


@pytest.fixture(scope="module")
def front_and_owner(tmp_path_factory):
    """Node a, which clients reach, and node b, which owns carol's mailbox: each with its own
    accounts (the same on both), one Redis for their counters."""
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    nodes: dict[str, Server] = {}
    try:
        for name in ("a", "b"):
            node = nodes[name] = Server(
                tmp_path_factory.mktemp(f"node-{name}"), pop3_services=True,
                server={"proxy_trusted": ["127.0.0.1/32"], "allow_plaintext_auth": True},
                pop3={"max_connections_per_ip": CAP, "proxy_protocol": name == "b"},
                smtp={"proxy_protocol": name == "b"},
                cluster={"redis": redis.url, "node": name, "secret_file": "cluster.secret"})
            (node.dir / "cluster.secret").write_text(SECRET + "\n")
        for node in nodes.values():
            for name, peer in nodes.items():
                cli(node.conf, "node", "add", name, "--host", "127.0.0.1", "--smtp-port",
                    str(peer.port), "--pop3-port", str(peer.pop3_port),
                    "--imap-port", str(free_port()))
            for user in OWNED_BY_B:
                cli(node.conf, "user", "add", user, "--password-stdin", input=PASSWORD + "\n")
                cli(node.conf, "user", "set", user, "--node", "b")
            cli(node.conf, "alias", "add", TEAM, CAROL)
            cli(node.conf, "alias", "add", TEAM, USER)
            node.start()
        for node in nodes.values():
            wait_for(lambda: cluster_state(node)["shared"], f"node {node.config.node_name} shared")
        yield nodes["a"], nodes["b"]
    finally:
        for node in nodes.values():
            node.stop()
        redis.stop()


def test_a_proxied_session_counts_once_against_the_per_ip_cap(front_and_owner):
    front, owner = front_and_owner
    held = []
    try:
        for user in OWNED_BY_B:  # CAP sessions, each proxied to b and counted on a only
            client = poplib.POP3("127.0.0.1", front.pop3_port, timeout=20)
            held.append(client)
            client.user(user)
            assert client.pass_(PASSWORD).startswith(b"+OK")
        with pytest.raises(poplib.error_proto,
                           match=r"-ERR \[SYS/TEMP\] Too many connections from your IP"):
            poplib.POP3("127.0.0.1", front.pop3_port, timeout=20)
        assert all(f"{user}: POP3 login from 127.0.0.1 via node a" in owner.log()
                   for user in OWNED_BY_B)
    finally:
        for client in held:
            client.quit()


def make_folder(maildir, name: str) -> None:
    """A Maildir++ folder, as any IMAP client's CREATE (or mutt) leaves it."""
    for part in ("cur", "new", "tmp"):
        (maildir / f".{name}" / part).mkdir(parents=True)


def test_mail_to_a_subaddress_keeps_its_folder_on_the_owner(front_and_owner):
    front, owner = front_and_owner
    make_folder(owner.maildir(CAROL), "lists")
    make_folder(front.maildir(USER), "lists")
    with smtplib.SMTP("127.0.0.1", front.port, timeout=20) as client:
        for rcpt in ("carol+lists@example.test", "team+lists@example.test"):
            client.sendmail("dave@remote.test", [rcpt], f"Subject: to {rcpt}\r\n\r\nhi\r\n")
    # carol's both in her `lists` folder on b, alice's (a local delivery on a) in hers.
    lists = owner.maildir(CAROL) / ".lists" / "new"
    wait_for(lambda: len(list(lists.iterdir())) == 2, "two messages in carol's lists folder")
    wait_for(lambda: len(list((front.maildir(USER) / ".lists" / "new").iterdir())) == 1,
             "alice's copy in her lists folder")
    assert owner.delivered(CAROL) == [] and front.delivered(CAROL) == []
    delivered_to = sorted(path.read_bytes().split(b"\n", 2)[1] for path in lists.iterdir())
    assert delivered_to == [b"Delivered-To: carol+lists@example.test"] * 2


def test_a_requiretls_message_is_delivered_to_its_mailbox_on_another_node(front_and_owner):
    """REQUIRETLS constrains relaying to other MTAs (RFC 8689), not the hop to the mailbox's
    owner, which could never meet it (no policy domain to validate TLS by): it bounced."""
    front, owner = front_and_owner
    with smtplib.SMTP("127.0.0.1", front.port, timeout=20) as client:
        client.starttls(context=ssl.create_default_context(cafile=front.ca_file))
        client.sendmail(USER, [CAROL], "Subject: required\r\n\r\nhi\r\n", ["REQUIRETLS"])

    def bounced() -> bool:
        return any(b"5.7.30" in path.read_bytes() for path in front.delivered(USER))

    wait_for(lambda: "required" in carols_copies(owner).get("", []) or bounced(),
             "carol's copy on b, or the bounce on a")
    assert not bounced()
    assert "required" in carols_copies(owner)[""]


def add_nodes(node, nodes: dict[str, Server]) -> None:
    """`nodes` in `node`'s node table, by name, at their SMTP ports (their IMAP and POP3 ports
    are not served)."""
    for name, peer in nodes.items():
        cli(node.conf, "node", "add", name, "--host", "127.0.0.1", "--smtp-port", str(peer.port),
            "--pop3-port", str(free_port()), "--imap-port", str(free_port()))


OWNER_HOSTNAME = "b.example.test"  # node b's [server] hostname; a's is HOSTNAME
SHARED_ID = "example.test"  # an [authentication] authserv_id for every node


@pytest.fixture
def checking_front_and_owner(make_server, dns_server):
    """Node a, which checks its clients' mail (SPF, DKIM, DMARC) against a DNS zone whose DMARC
    policy quarantines what fails, and node b, which owns carol's mailbox, under a hostname of
    its own: clients reach a; a reaches b's internal port (PROXY LOCAL)."""
    return checking_nodes(make_server, dns_server, {})


@pytest.fixture
def front_and_owner_sharing_an_authserv_id(make_server, dns_server):
    """The same two nodes, both naming SHARED_ID in their Authentication-Results."""
    return checking_nodes(make_server, dns_server, {"authserv_id": SHARED_ID})


def checking_nodes(make_server, dns_server, authentication: dict) -> tuple[Server, Server]:
    dns_server.zone("quarantine.test", [SPF_FAIL, txt("_dmarc", "v=DMARC1; p=quarantine")])
    front = make_server(dns={"nameservers": [dns_server.nameserver], "lifetime": 3.0},
                        authentication={"inbound_checks": True, **authentication},
                        cluster={"node": "a"})
    owner = make_server(server={"proxy_trusted": ["127.0.0.1/32"], "hostname": OWNER_HOSTNAME},
                        smtp={"proxy_protocol": True}, authentication=authentication,
                        cluster={"node": "b"})
    for node in (front, owner):
        add_nodes(node, {"a": front, "b": owner})
        cli(node.conf, "user", "add", CAROL, "--password-stdin", input=PASSWORD + "\n")
        cli(node.conf, "user", "set", CAROL, "--node", "b")
        node.start()
    return front, owner


def carols_copies(node) -> dict[str, list[str]]:
    """The subjects of carol's messages on `node`, by folder ("" for her INBOX), where any."""
    copies = {}
    for folder in ("", ".Junk"):
        new = node.maildir(CAROL) / folder / "new"
        subjects = sorted(email.message_from_bytes(path.read_bytes())["Subject"]
                          for path in new.iterdir()) if new.is_dir() else []
        if subjects:
            copies[folder] = subjects
    return copies


def test_a_message_the_front_quarantined_is_junk_on_the_owner(checking_front_and_owner):
    front, owner = checking_front_and_owner
    with smtplib.SMTP("127.0.0.1", front.port, timeout=60) as client:
        client.sendmail("sender@quarantine.test", [CAROL],
                        message("quarantine.test", "quarantined"))
    assert wait_until(lambda: carols_copies(owner), what="carol's copy on b") == {
        ".Junk": ["quarantined"]}
    assert carols_copies(front) == {}
    (path,) = (owner.maildir(CAROL) / ".Junk" / "new").iterdir()
    # a's verdict, the one Authentication-Results header of ours: b did not check it again.
    assert "dmarc=fail (p=quarantine)" in our_results(email.message_from_bytes(path.read_bytes()))


def stored_with_a_forged_verdict(front, owner, authserv_id: str) -> email.message.Message:
    """Carol's copy on the owner of a message sent to the front with an Authentication-Results
    header naming `authserv_id` (dmarc=pass), which its DMARC policy quarantines."""
    forged = f"Authentication-Results: {authserv_id}; dmarc=pass\r\n".encode()
    with smtplib.SMTP("127.0.0.1", front.port, timeout=60) as client:
        client.sendmail("sender@quarantine.test", [CAROL],
                        message("quarantine.test", "forged", forged))
    wait_until(lambda: carols_copies(owner), what="carol's copy on b")
    (path,) = (owner.maildir(CAROL) / ".Junk" / "new").iterdir()
    return email.message_from_bytes(path.read_bytes())


def test_a_verdict_forged_in_the_owners_name_is_removed(checking_front_and_owner):
    """Only a's checks saw the message, and they remove the results that name a alone; b takes
    a node's mail unchecked: it removes those that name b."""
    parsed = stored_with_a_forged_verdict(*checking_front_and_owner, OWNER_HOSTNAME)
    assert [v.split(";")[0] for v in parsed.get_all("Authentication-Results")] == [HOSTNAME]
    assert "dmarc=fail (p=quarantine)" in our_results(parsed)


def test_with_a_shared_authserv_id_the_front_removes_every_forged_verdict(
        front_and_owner_sharing_an_authserv_id):
    """Every node names SHARED_ID (RFC 8601 2.5: one per administrative domain), so a verdict
    forged in any node's name names it too, and the node that checks the message removes it;
    the owner keeps that node's verdict."""
    parsed = stored_with_a_forged_verdict(*front_and_owner_sharing_an_authserv_id, SHARED_ID)
    results = parsed.get_all("Authentication-Results")
    assert len(results) == 1 and results[0].split(";")[0] == SHARED_ID
    assert "dmarc=fail (p=quarantine)" in results[0]


def test_only_a_node_may_ask_the_owner_to_file_a_message_as_junk(checking_front_and_owner):
    front, owner = checking_front_and_owner
    through_balancer = v2_header(("192.0.2.9", 40000), ("127.0.0.1", owner.port))
    for node, header in ((front, b""), (owner, through_balancer)):  # clients
        with smtp_after(node, header) as client:
            assert not client.has_extn("XJUNK")
            code, text = client.mail("dave@remote.test", ["XJUNK"])
            assert (code, text[:5]) == (555, b"5.5.4")
            assert client.rset()[0] == 250
            client.sendmail("dave@remote.test", [CAROL], f"Subject: from {node.port}\r\n\r\nhi\r\n")
    with smtp_after(owner, V2_LOCAL_HEADER) as client:  # a node, speaking for itself
        assert client.has_extn("XJUNK")
        client.sendmail("dave@remote.test", [CAROL], "Subject: node\r\n\r\nhi\r\n",
                        mail_options=["XJUNK"])
    wait_until(lambda: sum(map(len, carols_copies(owner).values())) == 3,
               what="three messages for carol on b")
    assert carols_copies(owner) == {"": sorted([f"from {front.port}", f"from {owner.port}"]),
                                    ".Junk": ["node"]}


REMOTE = "remote.test"  # not ours: its MX is a sink that offers no TLS
FORWARD = "fwd@example.test"  # on both nodes: an alias to fwd@remote.test
DAN = "dan@example.test"  # to a, a mailbox b owns; to b, a forward to dan@remote.test


@pytest.fixture
def plaintext_mx():
    sink = Sink()
    yield sink
    sink.stop()


@pytest.fixture
def forwarding_front_and_owner(make_server, plaintext_mx):
    """Node a, which clients reach, and node b, which a takes to own dan's mailbox, reached in
    the clear (b has no certificate, so offers no STARTTLS); each node with its own accounts
    database, and REMOTE's MX a sink in the clear. b's accounts make dan@ a forward, as they
    would if the mailbox became one while a message to it was on its way to b (with one
    database, a expands a forward itself, as it does fwd@)."""
    delivery = {"mx_override": {REMOTE: plaintext_mx.address}, "connect_timeout": 5.0,
                "command_timeout": 5.0}
    front = make_server(delivery=delivery, cluster={"node": "a"})
    owner = make_server(delivery=delivery, server={"proxy_trusted": ["127.0.0.1/32"]},
                        smtp={"proxy_protocol": True}, cluster={"node": "b"})
    for node in (front, owner):
        add_nodes(node, {"a": front, "b": owner})
        cli(node.conf, "alias", "add", FORWARD, f"fwd@{REMOTE}")
    cli(front.conf, "user", "add", DAN, "--password-stdin", input=PASSWORD + "\n")
    cli(front.conf, "user", "set", DAN, "--node", "b")
    cli(owner.conf, "alias", "add", DAN, f"dan@{REMOTE}")
    for path in (owner.config.tls.cert, owner.config.tls.key):  # b offers no STARTTLS
        (owner.config.data_dir / path).unlink()
    for node in (front, owner):
        node.start()
    return front, owner


def test_a_requiretls_message_the_owner_forwards_bounces_rather_than_go_in_the_clear(
        forwarding_front_and_owner, plaintext_mx):
    """The hop to b needs no validated TLS, but b keeps the sender's demand for the relay on:
    to an MX without validated TLS the message bounces 5.7.30, on b as on a single node."""
    front, owner = forwarding_front_and_owner
    with smtplib.SMTP("127.0.0.1", front.port, timeout=20) as client:
        client.starttls(context=ssl.create_default_context(cafile=front.ca_file))
        for rcpt in (FORWARD, DAN):
            client.sendmail(USER, [rcpt], f"Subject: required for {rcpt}\r\n\r\nhi\r\n",
                            ["REQUIRETLS"])

    def bounce(node, rcpt: str) -> str:
        """The 5.7.30 bounce of the message to `rcpt` in alice's mailbox on `node`."""
        texts = [path.read_text() for path in node.delivered(USER)]
        return next((t for t in texts if "5.7.30" in t and f"required for {rcpt}" in t), "")

    # A bounce of dan's message on a would say that b refused the message with its flag.
    wait_until(lambda: plaintext_mx.received or (
        bounce(front, FORWARD) and (bounce(owner, DAN) or bounce(front, DAN))),
        what="the bounces, or a message in the clear")
    assert plaintext_mx.received == []
    assert bounce(front, DAN) == ""
    for node, rcpt, target in ((front, FORWARD, f"fwd@{REMOTE}"), (owner, DAN, f"dan@{REMOTE}")):
        text = bounce(node, rcpt)
        assert f"Final-Recipient: rfc822; {target}" in text
        assert f"Original-Recipient: rfc822; {rcpt}" in text
        assert f"]:{plaintext_mx.port} has no TLS validated by DANE or MTA-STS" in text
