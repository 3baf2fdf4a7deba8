"""Client set-up over the [autoconfig] HTTP listener: Thunderbird's autoconfig, Outlook's
autodiscover and an Apple profile name our hostname and ports, so a user types only an
address and a password; bad and oversized requests are refused; caps and idle timeout hold."""

import imaplib
import plistlib
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from tests.ports import free_port

from .conftest import PASSWORD, USER

HOSTNAME = "mx.example.test"
THUNDERBIRD_PATHS = ["/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"]
AUTODISCOVER_PATHS = ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"]
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
OUTLOOK_NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def autodiscover_request(address: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="{REQUEST_NS}"><Request>'
            f"<EMailAddress>{address}</EMailAddress><AcceptableResponseSchema>"
            f"{OUTLOOK_NS.strip('{}')}</AcceptableResponseSchema></Request></Autodiscover>").encode()


@pytest.fixture(scope="module")
def web(make_module_server):
    """One listener for the module: its answers depend on the request alone."""
    port = free_port()
    server = make_module_server(tls_services=True, pop3_services=True, imap_services=True,
                         autoconfig={"listen": [f"127.0.0.1:{port}"], "workers": 1,
                                     "idle_timeout": 1, "max_connections_per_ip": 3})
    server.start()
    server.web_port = port
    return server


def get(server, path: str, data: bytes | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.web_port}{path}", data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def raw(server, request: bytes) -> bytes:
    """Send `request` as it is; what came back before the server closed."""
    with socket.create_connection(("127.0.0.1", server.web_port), timeout=10) as sock:
        try:
            sock.sendall(request)
        except ConnectionResetError:
            pass  # answered and closed before all was sent
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
@pytest.mark.parametrize("path", THUNDERBIRD_PATHS)
def test_thunderbird_autoconfig_names_our_hostname_and_ports(web, path):
    result = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{web.web_port}{path}"
                             f"?emailaddress=alice%40example.test"],
                            capture_output=True, timeout=30, check=True)
    provider = ET.fromstring(result.stdout).find("emailProvider")
    assert provider.get("id") == provider.findtext("domain") == "example.test"
    servers = [(s.tag, s.get("type"), s.findtext("hostname"), int(s.findtext("port")),
                s.findtext("socketType"), s.findtext("username")) for s in provider if s.get("type")]
    assert servers == [
        ("incomingServer", "imap", HOSTNAME, web.imaps_port, "SSL", USER),
        ("incomingServer", "imap", HOSTNAME, web.imap_port, "STARTTLS", USER),
        ("incomingServer", "pop3", HOSTNAME, web.pop3s_port, "SSL", USER),
        ("incomingServer", "pop3", HOSTNAME, web.pop3_port, "STARTTLS", USER),
        ("outgoingServer", "smtp", HOSTNAME, web.smtps_port, "SSL", USER),
        ("outgoingServer", "smtp", HOSTNAME, web.submission_port, "STARTTLS", USER),
    ]


def test_what_autoconfig_names_lets_a_client_log_in(web):
    """The first incoming server, as a client would use it, with only address and password."""
    _, _, body = get(web, THUNDERBIRD_PATHS[0] + "?emailaddress=alice@example.test")
    first = ET.fromstring(body).find("emailProvider/incomingServer")
    context = ssl.create_default_context(cafile=web.ca_file)
    context.check_hostname = False  # the name is HOSTNAME; we connect to 127.0.0.1
    client = imaplib.IMAP4_SSL("127.0.0.1", int(first.findtext("port")), ssl_context=context)
    assert client.login(first.findtext("username"), PASSWORD)[0] == "OK"
    client.logout()


def test_without_an_address_thunderbird_gets_its_placeholders(web):
    status, headers, body = get(web, THUNDERBIRD_PATHS[1])
    assert status == 200 and headers["Content-Type"].startswith("application/xml")
    assert ET.fromstring(body).find("emailProvider/incomingServer/username").text == "%EMAILADDRESS%"


def test_the_address_is_escaped_in_the_xml(web):
    status, _, body = get(web, THUNDERBIRD_PATHS[0] + "?emailaddress=a%26b%3Cc%3E@example.test")
    assert status == 400  # "<" has no place in an address
    status, _, body = get(web, THUNDERBIRD_PATHS[0] + "?emailaddress=a%26b@example.test")
    assert status == 200 and b"a&amp;b@example.test" in body
    assert ET.fromstring(body).find("emailProvider/incomingServer/username").text == "a&b@example.test"


@pytest.mark.parametrize("path", AUTODISCOVER_PATHS)
def test_outlook_autodiscover_answers_the_posted_address(web, path):
    status, _, body = get(web, path, autodiscover_request("Alice@example.test"))
    assert status == 200
    account = ET.fromstring(body).find(f"{OUTLOOK_NS}Response/{OUTLOOK_NS}Account")
    protocols = [(p.findtext(f"{OUTLOOK_NS}Type"), p.findtext(f"{OUTLOOK_NS}Server"),
                  int(p.findtext(f"{OUTLOOK_NS}Port")), p.findtext(f"{OUTLOOK_NS}Encryption"),
                  p.findtext(f"{OUTLOOK_NS}LoginName"))
                 for p in account.findall(f"{OUTLOOK_NS}Protocol")]
    assert protocols[0] == ("IMAP", HOSTNAME, web.imaps_port, "SSL", USER)
    assert ("SMTP", HOSTNAME, web.submission_port, "TLS", USER) in protocols
    status, _, body = get(web, path, autodiscover_request("x&amp;y@example.test"))
    account = ET.fromstring(body).find(f"{OUTLOOK_NS}Response/{OUTLOOK_NS}Account")
    assert account.find(f"{OUTLOOK_NS}Protocol/{OUTLOOK_NS}LoginName").text == "x&y@example.test"


def test_apple_profile_is_a_valid_plist(web):
    status, headers, body = get(web, "/apple/mailforge.mobileconfig?emailaddress=alice@example.test")
    assert status == 200 and headers["Content-Type"] == "application/x-apple-aspen-config"
    profile = plistlib.loads(body)
    assert profile["PayloadType"] == "Configuration"
    (account,) = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert (account["EmailAddress"], account["IncomingMailServerUsername"]) == (USER, USER)
    assert (account["IncomingMailServerHostName"], account["IncomingMailServerPortNumber"],
            account["IncomingMailServerUseSSL"]) == (HOSTNAME, web.imaps_port, True)
    assert (account["OutgoingMailServerPortNumber"], account["OutgoingMailServerUseSSL"]) == (
        web.smtps_port, True)
    again = plistlib.loads(get(web, "/apple/mailforge.mobileconfig?emailaddress=alice@example.test")[2])
    assert again["PayloadUUID"] == profile["PayloadUUID"]  # a second download replaces the first


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /nothing/here HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"GET /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"GET /apple/mailforge.mobileconfig HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # no address
    (b"GET /mail/config-v1.1.xml?emailaddress=nobody HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"HELLO\r\n\r\n", 400),
    (b"GET /mail/config-v1.1.xml HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
    (b"GET /mail/config-v1.1.xml HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\n\r\n", 411),
    (b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
    (b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nnot xml!!", 400),
])
def test_bad_requests_are_refused(web, request_bytes, status):
    response = raw(web, request_bytes)
    assert status_of(response) == status, response
    assert b"\r\nConnection: close\r\n" in response


def test_an_xml_bomb_is_refused_unparsed(web):
    """Billion laughs: ten entities, each ten of the one before."""
    entities = ['<!ENTITY a "aaaaaaaaaa">'] + [
        f'<!ENTITY {chr(98 + i)} "{f"&{chr(97 + i)};" * 10}">' for i in range(9)]
    bomb = (f'<?xml version="1.0"?><!DOCTYPE x [{"".join(entities)}]><Autodiscover><Request>'
            f"<EMailAddress>&j;</EMailAddress></Request></Autodiscover>").encode()
    status, _, body = get(web, AUTODISCOVER_PATHS[0], bomb)
    assert status == 400 and b"document type" in body


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n", 413),
    (b"GET /mail/config-v1.1.xml?emailaddress=" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: y\r\n" * 100 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20_000 + b"\r\n\r\n", 431),
])
def test_oversized_requests_are_refused(web, request_bytes, status):
    assert status_of(raw(web, request_bytes)) == status


def test_an_idle_client_gets_408_and_a_crowd_gets_429(web):
    with socket.create_connection(("127.0.0.1", web.web_port), timeout=10) as idle:
        started = time.monotonic()
        assert idle.recv(100).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert time.monotonic() - started < 5  # idle_timeout = 1, the sweeper ticks each second
    held = [socket.create_connection(("127.0.0.1", web.web_port), timeout=10) for _ in range(3)]
    try:
        time.sleep(0.3)  # the three are counted by the rate-keeper
        assert status_of(raw(web, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")) == 429
    finally:
        for sock in held:
            sock.close()
