"""The HTTP request machine line by line, and the client set-up documents it serves."""

import plistlib
import xml.etree.ElementTree as ET

import pytest

from mailforge.protocols import autoconfig
from mailforge.protocols.http import MAX_BODY, HTTPMachine, Request, response
from mailforge.protocols.session import Action

SETTINGS = autoconfig.ClientSettings.from_ports(
    "mx.test", {"imap": 143, "imaps": 993, "submission": 587, "smtp": 25}, tls_available=True)


def echo(request: Request) -> object:
    return response(200, repr(request).encode(), "text/plain")


def feed(lines: list[bytes]) -> tuple[HTTPMachine, object]:
    machine = HTTPMachine(echo)
    for line in lines:
        step = machine.line(line)
        if step is not None:
            return machine, step
    return machine, None


def status(step) -> int:
    return int(step.text.split(b" ", 2)[1])


def test_a_get_with_a_query_asks_for_no_body():
    machine, step = feed([b"GET /mail/config-v1.1.xml?emailaddress=a%40b.test&x HTTP/1.1",
                          b"Host: mx.test", b"Accept: */*", b"accept: text/xml", b""])
    assert step == 0
    request = machine.request
    assert (request.method, request.path, request.query) == (
        "GET", "/mail/config-v1.1.xml", {"emailaddress": "a@b.test", "x": ""})
    assert request.headers == {"host": "mx.test", "accept": "*/*, text/xml"}
    reply = machine.respond(b"")
    assert reply.action is Action.CLOSE and b"\r\nConnection: close\r\n" in reply.text


def test_a_post_asks_for_its_content_length():
    machine, step = feed([b"", b"POST /x HTTP/1.0", b"Content-Length: 12", b""])
    assert step == 12
    assert b"body=b'hello world!'" in machine.respond(b"hello world!").text


@pytest.mark.parametrize("lines, expected", [
    ([b"GET / HTTP/1.1 extra"], 400), ([b"GET noslash HTTP/1.1"], 400), ([b"G3T / HTTP/1.1"], 400),
    ([b"GET / HTTP/3"], 505), ([b"GET / SMTP/1.0"], 400), ([b"GET /\x7f HTTP/1.1"], 400),
    ([b"GET / HTTP/1.1", b""], 400), ([b"GET / HTTP/1.1", b"Host: a", b" folded", b""], 400),
    ([b"GET / HTTP/1.1", b"Bad Name: a"], 400), ([b"GET / HTTP/1.1", b"NoColon"], 400),
    ([b"POST / HTTP/1.1", b"Host: a", b""], 411),
    ([b"POST / HTTP/1.1", b"Host: a", b"Content-Length: 1", b"Content-Length: 2", b""], 400),
    ([b"POST / HTTP/1.1", b"Host: a", b"Content-Length: -1", b""], 400),
    ([b"POST / HTTP/1.1", b"Host: a", b"Content-Length: " + b"9" * 5000, b""], 413),
    ([b"POST / HTTP/1.1", b"Host: a", b"Content-Length: %d" % (MAX_BODY + 1), b""], 413),
    ([b"POST / HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked", b""], 501),
    ([b"GET / HTTP/1.1", *[b"X: y"] * 65], 431),
])
def test_bad_requests(lines, expected):
    _, step = feed(lines)
    assert status(step) == expected


def test_line_limits_and_too_long_replies():
    machine = HTTPMachine(echo)
    assert status(machine.line_too_long()) == 414
    machine.line(b"GET / HTTP/1.1")
    assert status(machine.line_too_long()) == 431
    assert machine.line_limit < 100_000


def test_thunderbird_offers_implicit_tls_first_and_never_port_25():
    reply = autoconfig.answer(SETTINGS, Request("GET", "/mail/config-v1.1.xml",
                                                {"emailaddress": "Bob@Example.test"}))
    body = reply.text.split(b"\r\n\r\n", 1)[1]
    servers = ET.fromstring(body).find("emailProvider")
    ports = [(s.get("type"), s.findtext("port"), s.findtext("socketType"))
             for s in servers if s.get("type")]
    assert ports == [("imap", "993", "SSL"), ("imap", "143", "STARTTLS"), ("smtp", "587", "STARTTLS")]
    assert servers.find("incomingServer/username").text == "bob@example.test"


def test_without_a_certificate_only_plain_services_with_a_hashed_mechanism():
    plain = autoconfig.ClientSettings.from_ports("mx.test", {"imap": 143, "imaps": 993,
                                                             "submission": 587}, tls_available=False)
    assert [(s.kind, s.port, s.socket) for s in plain.services] == [
        ("imap", 143, "plain"), ("smtp", 587, "plain")]
    reply = autoconfig.answer(plain, Request("GET", "/apple/mailforge.mobileconfig",
                                             {"emailaddress": "a@b.test"}))
    account = plistlib.loads(reply.text.split(b"\r\n\r\n", 1)[1])["PayloadContent"][0]
    assert account["IncomingMailServerAuthentication"] == "EmailAuthCRAMMD5"
    assert account["IncomingMailServerUseSSL"] is False
