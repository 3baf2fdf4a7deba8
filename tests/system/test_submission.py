"""TLS (STARTTLS and implicit), SMTP AUTH, submission rules and relay control, over real sockets."""

import base64
import shutil
import smtplib
import socket
import ssl
import subprocess
import warnings

import pytest

from tests.unit.test_sasl import ScramClient

from .conftest import PASSWORD, USER, cli, free_port

HOSTNAME = "mx.example.test"
MESSAGE = b"Subject: submitted\r\n\r\nhello\r\n"


def client_context(server) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=server.ca_file)
    context.check_hostname = False  # smtplib names 127.0.0.1; the name is checked below
    return context


def started_tls_server(make_server):
    # remote.test goes to a port nobody listens on: its mail waits in the queue, whatever DNS says.
    server = make_server(tls_services=True,
                         delivery={"mx_override": {"remote.test": f"127.0.0.1:{free_port()}"}})
    server.start()
    return server


@pytest.fixture
def tls_server(make_server):
    return started_tls_server(make_server)


@pytest.fixture(scope="module")
def shared_tls_server(make_module_server):
    """tls_server for the tests that neither send mail nor change accounts."""
    return started_tls_server(make_module_server)


def test_certificate_names_the_host_and_tls_is_1_2_or_newer(shared_tls_server):
    strict = ssl.create_default_context(cafile=shared_tls_server.ca_file)
    with socket.create_connection(("127.0.0.1", shared_tls_server.smtps_port), timeout=10) as raw:
        with strict.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert tls.recv(100).startswith(b"220 ")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():  # asking for the deprecated version is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", shared_tls_server.smtps_port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            old.wrap_socket(raw).recv(100)


def test_starttls_then_auth_on_port_25(tls_server):
    with smtplib.SMTP("127.0.0.1", tls_server.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("starttls")
        assert client.esmtp_features["auth"].split() == ["SCRAM-SHA-256", "CRAM-MD5"]
        code, text = client.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode())
        assert (code, text[:6]) == (538, b"5.7.11")
        client.starttls(context=client_context(tls_server))
        client.ehlo("client.test")
        assert "PLAIN" in client.esmtp_features["auth"] and not client.has_extn("starttls")
        client.login(USER, PASSWORD)
        assert client.sendmail(USER, [USER], MESSAGE) == {}
    (path,) = tls_server.wait_delivered(1)
    assert b"with ESMTPSA id" in path.read_bytes()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_each_mechanism_on_submission(shared_tls_server, mechanism):
    with smtplib.SMTP("127.0.0.1", shared_tls_server.submission_port, timeout=10) as client:
        client.starttls(context=client_context(shared_tls_server))
        client.ehlo("client.test")
        client.user, client.password = USER, PASSWORD
        authobject = {"PLAIN": client.auth_plain, "LOGIN": client.auth_login,
                      "CRAM-MD5": client.auth_cram_md5}[mechanism]
        code, _ = client.auth(mechanism, authobject, initial_response_ok=mechanism != "CRAM-MD5")
        assert code == 235


def test_scram_sha_256_with_our_own_client(shared_tls_server):
    scram = ScramClient(USER, PASSWORD)
    with smtplib.SMTP("127.0.0.1", shared_tls_server.port, timeout=10) as client:
        client.ehlo("client.test")  # SCRAM never sends the password: fine before TLS
        code, challenge = client.docmd("AUTH", "SCRAM-SHA-256 " + base64.b64encode(scram.first().encode()).decode())
        assert code == 334
        final = scram.final(base64.b64decode(challenge).decode())
        code, verifier = client.docmd(base64.b64encode(final.encode()).decode())
        assert code == 334
        assert base64.b64decode(verifier) == b"v=" + base64.b64encode(scram.server_signature)
        assert client.docmd("")[0] == 235


def test_wrong_password_and_unknown_user_look_the_same(shared_tls_server):
    replies = []
    for user, password in ((USER, "wrong"), ("nobody@example.test", PASSWORD)):
        with smtplib.SMTP("127.0.0.1", shared_tls_server.submission_port, timeout=10) as client:
            client.starttls(context=client_context(shared_tls_server))
            client.ehlo("client.test")
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                client.login(user, password)
            replies.append((failed.value.smtp_code, failed.value.smtp_error))
    assert replies[0] == replies[1] and replies[0][0] == 535 and replies[0][1].startswith(b"5.7.8")


def test_auth_cancelled(shared_tls_server):
    with smtplib.SMTP("127.0.0.1", shared_tls_server.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.docmd("AUTH", "CRAM-MD5")[0] == 334
        assert client.docmd("*")[0] == 501
        assert client.noop()[0] == 250


def test_submission_rules(tls_server):
    cli(tls_server.conf, "user", "add", "carol@example.test", "--password-stdin", input="pw\n")
    cli(tls_server.conf, "alias", "add", "team@example.test", USER)
    with smtplib.SMTP("127.0.0.1", tls_server.submission_port, timeout=10) as client:
        client.starttls(context=client_context(tls_server))
        client.ehlo("client.test")
        code, text = client.mail(USER)
        assert (code, text[:5]) == (530, b"5.7.0")
        client.login(USER, PASSWORD)
        code, text = client.mail("carol@example.test")
        assert (code, text[:5]) == (553, b"5.7.1")
        assert client.mail("team@example.test")[0] == 250  # an alias of the user's
        client.rset()
        assert client.mail(USER)[0] == 250
        assert client.rcpt("someone@remote.test")[0] == 250  # relay for the authenticated
        assert client.rcpt("carol@example.test")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    (path,) = tls_server.wait_delivered(1, "carol@example.test")
    assert tls_server.status()["queue"]["length"] >= 1  # the remote copy is deferred


def test_implicit_tls_on_smtps(tls_server):
    with smtplib.SMTP_SSL("127.0.0.1", tls_server.smtps_port, timeout=10,
                          context=client_context(tls_server)) as client:
        client.ehlo("client.test")
        assert not client.has_extn("starttls")
        client.login(USER, PASSWORD)
        assert client.sendmail(USER, [USER], MESSAGE) == {}
    tls_server.wait_delivered(1)


def test_commands_pipelined_behind_starttls_are_discarded(shared_tls_server):
    """CVE-2011-0411: plaintext sent after STARTTLS must not be acted on inside TLS."""
    with socket.create_connection(("127.0.0.1", shared_tls_server.port), timeout=10) as raw:
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(b"EHLO client.test\r\n")
        while reader.readline()[3:4] == b"-":
            pass
        raw.sendall(b"STARTTLS\r\nMAIL FROM:<evil@remote.test>\r\n")
        assert reader.readline().startswith(b"220 2.0.0")
        with client_context(shared_tls_server).wrap_socket(raw, server_hostname=HOSTNAME) as tls:
            tls.sendall(b"NOOP\r\n")
            # The injected MAIL got no reply: the first one is NOOP's.
            assert tls.recv(1000).startswith(b"250 2.0.0 Ok")


# Who may relay, per mode: (unauthenticated from a listed network, from an unlisted one,
# authenticated from an unlisted one). Local mail is accepted in every case.
RELAY_MATRIX = {
    "none": (False, False, False),
    "authenticated": (False, False, True),
    "networks": (True, False, True),
    "open": (True, True, True),
}
LISTED, UNLISTED = "127.0.0.2", "127.0.0.1"


def rcpt_replies(server, source: str, authenticated: bool) -> tuple[int, int]:
    """(reply code for a remote recipient, for a local one)."""
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10, source_address=(source, 0)) as client:
        client.starttls(context=client_context(server))
        client.ehlo("client.test")
        if authenticated:
            client.login(USER, PASSWORD)
        client.mail(USER)
        remote = client.rcpt("someone@remote.test")
        local = client.rcpt(USER)
    if remote[0] != 250:
        assert remote[1][:5] == b"5.7.1"
    return remote[0], local[0]


@pytest.mark.parametrize("mode", RELAY_MATRIX)
def test_relay_matrix(make_server, mode):
    server = make_server(relay={"mode": mode, "networks": [f"{LISTED}/32"]})
    server.start()
    cases = ((LISTED, False), (UNLISTED, False), (UNLISTED, True))
    for (source, authenticated), allowed in zip(cases, RELAY_MATRIX[mode]):
        remote, local = rcpt_replies(server, source, authenticated)
        assert remote == (250 if allowed else 554), (mode, source, authenticated)
        assert local == 250, (mode, source, authenticated)


def test_open_relay_warns_loudly(make_server):
    server = make_server(relay={"mode": "open"})
    result = cli(server.conf, "check-config")
    assert "WARNING" in result.stderr and "open" in result.stderr


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is installed by `make test`")
def test_swaks_with_tls_and_auth(tls_server):
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{tls_server.submission_port}", "--tls",
         "--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD,
         "--from", USER, "--to", USER, "--body", "via swaks and TLS"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0" in result.stdout
    tls_server.wait_delivered(1)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is installed by `make test`")
def test_openssl_s_client_starttls(shared_tls_server):
    result = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{shared_tls_server.port}",
         "-CAfile", shared_tls_server.ca_file, "-verify_hostname", HOSTNAME, "-verify_return_error",
         "-crlf", "-quiet"],
        input="EHLO openssl.test\nQUIT\n", capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "250-mx.example.test Hello openssl.test" in result.stdout
    assert "221 2.0.0" in result.stdout
