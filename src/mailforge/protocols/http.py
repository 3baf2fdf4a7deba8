"""A small HTTP/1.1 server state machine (RFC 9110, RFC 9112) for mailforge's own web answers
(the autoconfig service): one request per connection, a body framed by Content-Length only,
every response sent with `Connection: close`.

Pure, like the mail protocols' machines: the driver (protocols/httpd.py) reads the request
line and the header lines with the shared transport's bounds and feeds them here one by one,
reads the body whose length the machine asks for, and sends the response it makes. What to
answer for a well-formed request is the `answer` function the machine is given.
"""

from __future__ import annotations

import string
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from .session import Action, Reply

# Bounds, each refused with its own status. Client set-up requests are a few hundred octets;
# these leave room for long query strings and chatty clients, and no more.
MAX_REQUEST_LINE = 8192          # 414 URI Too Long
MAX_HEADER_LINES = 64            # 431 Request Header Fields Too Large
MAX_HEADER_OCTETS = 16 * 1024    # 431, all header lines together
MAX_BODY = 64 * 1024             # 413 Content Too Large

# RFC 9110 5.6.2: the characters of a header field's name.
TOKEN = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")

REASONS = {
    200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
    413: "Content Too Large", 414: "URI Too Long", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 501: "Not Implemented",
    503: "Service Unavailable", 505: "HTTP Version Not Supported",
}


@dataclass
class Request:
    method: str
    path: str                       # percent-decoded
    query: dict[str, str]           # each parameter's first value, percent-decoded
    headers: dict[str, str] = field(default_factory=dict)  # names lowercased
    body: bytes = b""


def response(status: int, body: bytes, content_type: str,
             headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A whole response; the session ends once it is sent."""
    lines = [f"HTTP/1.1 {status} {REASONS[status]}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close",
             *(f"{name}: {value}" for name, value in headers)]
    return Reply(("\r\n".join(lines) + "\r\n\r\n").encode() + body, Action.CLOSE)


def error(status: int, detail: str = "", headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """An error response whose short text body says what was wrong."""
    text = f"{status} {REASONS[status]}" + (f": {detail}" if detail else "") + "\n"
    return response(status, text.encode(), "text/plain; charset=utf-8", headers)


def refusal_head(status: int) -> str:
    """A response with no body, as a connection refusal (protocols/connection/driver.py
    Refusals: the final empty line is added there)."""
    return f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Length: 0\r\nConnection: close\r\n"


class HTTPMachine:
    """Reads one request: the request line, header lines up to the empty one, then asks for
    the body. `line()` answers None (send the next line), the body's length (read that many
    octets, then call `respond`), or a Reply (an error: send it, the session is over)."""

    user = ""  # no logins here; the session record asks every machine

    def __init__(self, answer: Callable[[Request], Reply]) -> None:
        self._answer = answer
        self.request: Request | None = None
        self._header_lines = 0
        self._header_octets = 0
        self._version = ""

    @staticmethod
    def greeting() -> bytes:
        return b""  # the client speaks first

    @staticmethod
    def idle_reply() -> bytes:
        return error(408).text

    def tls_started(self) -> None:
        raise AssertionError("HTTP sessions never start TLS")

    @property
    def line_limit(self) -> int:
        return MAX_REQUEST_LINE if self.request is None else MAX_HEADER_OCTETS

    def line_too_long(self) -> Reply:
        return error(414) if self.request is None else error(431)

    def line(self, line: bytes) -> Reply | int | None:
        if self.request is None:
            return self._request_line(line)
        if line:
            return self._header(line)
        return self._body_length()

    def respond(self, body: bytes) -> Reply:
        assert self.request is not None
        self.request.body = body
        return self._answer(self.request)

    def _request_line(self, line: bytes) -> Reply | None:
        if not line:
            # RFC 9112 2.2: empty lines before the request line are ignored, within the bound.
            return self._count_header_octets(2)
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith(b"/"):
            return error(400, "malformed request line")
        method, target, version = (part.decode("latin-1") for part in parts)
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            return error(505) if version.startswith("HTTP/") else error(400, "malformed request line")
        if not target.isascii() or not target.isprintable():
            return error(400, "the target must be printable ASCII")
        path, _, query = target.partition("?")
        parameters = urllib.parse.parse_qs(query, keep_blank_values=True)
        self._version = version
        self.request = Request(method, urllib.parse.unquote(path),
                               {name: values[0] for name, values in parameters.items()})
        return None

    def _header(self, line: bytes) -> Reply | None:
        assert self.request is not None
        self._header_lines += 1
        if self._header_lines > MAX_HEADER_LINES:
            return error(431, "too many header fields")
        too_many = self._count_header_octets(len(line) + 2)
        if too_many:
            return too_many
        name, colon, value = line.decode("latin-1").partition(":")
        # RFC 9112 5.1 and 5.2: no space before the colon, no obsolete line folding.
        if not colon or not name or not TOKEN.issuperset(name):
            return error(400, "malformed header field")
        headers, key, value = self.request.headers, name.lower(), value.strip(" \t")
        if key == "content-length" and key in headers and headers[key] != value:
            return error(400, "conflicting Content-Length")
        headers[key] = f"{headers[key]}, {value}" if key in headers and key != "content-length" else value
        return None

    def _count_header_octets(self, octets: int) -> Reply | None:
        self._header_octets += octets
        return error(431) if self._header_octets > MAX_HEADER_OCTETS else None

    def _body_length(self) -> Reply | int:
        assert self.request is not None
        headers = self.request.headers
        if self._version == "HTTP/1.1" and "host" not in headers:
            return error(400, "HTTP/1.1 needs a Host header")  # RFC 9112 3.2
        if "transfer-encoding" in headers:
            return error(501, "send the body with a Content-Length")
        length = headers.get("content-length")
        if length is None:
            return error(411) if self.request.method == "POST" else 0
        if not length.isdigit():
            return error(400, "bad Content-Length")
        # Many digits are too many octets; int() of thousands of digits is slow, or refused.
        if len(length) > len(str(MAX_BODY)) or int(length) > MAX_BODY:
            return error(413, f"the limit is {MAX_BODY} octets")
        return int(length)
