"""A bounded MIME structure scanner over a message's CRLF bytes (RFC 5322, 2045, 2046, 2231).

Every part keeps offsets into the original bytes, so any FETCH section is a slice of them and
nothing is copied until it is sent. The scanner never raises on malformed input and never
grows without bound: past `MAX_DEPTH` nested containers, `MAX_PARTS` parts in all, or
`MAX_HEADER` octets of one header block, the rest is kept as an opaque leaf
(application/octet-stream) whose bytes are still there to fetch.

Header values are handled as Latin-1 text so that `.encode("latin-1")` gives back the exact
octets for BODYSTRUCTURE and ENVELOPE, whatever 8-bit bytes a sender put in them.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# Deeper nesting than this is either an attack or a mail loop's quoting; Dovecot stops near here.
MAX_DEPTH = 20
# Parts in one message; a real message with a thousand attachments is already absurd.
MAX_PARTS = 1000
# Octets of one header block read as fields (the block itself may be longer; the rest is ignored).
MAX_HEADER = 256 * 1024
# RFC 2231 continuations of one parameter: name*0 to name*99.
MAX_CONTINUATION_DIGITS = 2

CRLF = b"\r\n"
# One header line and its folds: a field (RFC 5322 2.2: name of printable ASCII but the colon,
# the colon, the rest of the line) or a line that is no field; bare CR and LF stay inside it.
_REST = rb"[^\r]*(?:\r(?!\n)[^\r]*)*"
_FIELD = re.compile(rb"(?:([\x21-\x39\x3b-\x7e]+)[ \t]*(:))?" + _REST
                    + rb"(?:\r\n[ \t]" + _REST + rb")*(?:\r\n|\Z)")
TSPECIALS = '()<>@,;:\\"/[]?='
_PLAIN_ENCODINGS = frozenset(("7bit", "8bit", "binary"))
_NOT_BASE64 = bytes(sorted(set(range(256)) - set(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")))


class UnknownEncoding(ValueError):
    """A Content-Transfer-Encoding we cannot decode (IMAP BINARY answers NO [UNKNOWN-CTE])."""


class Header:
    """One header block: its fields as offsets into the message (name, value start, end)."""

    __slots__ = ("data", "end", "fields", "start")

    def __init__(self, data: bytes, start: int, end: int, fields_end: int) -> None:
        self.data = data
        self.start = start
        self.end = end  # just past the blank line that ends the block, when it has one
        self.fields: list[tuple[str, int, int, int]] = []
        for line in _FIELD.finditer(data, start, min(fields_end, start + MAX_HEADER)):
            if line.group(1) is not None:  # lines that are no field are skipped, with their folds
                self.fields.append((line.group(1).decode("ascii").lower(), line.start(),
                                    line.end(2), line.end()))

    def values(self, name: str) -> list[bytes]:
        """Every value of a field, unfolded and trimmed, in header order."""
        return [self.data[value:end].replace(CRLF, b"").strip(b" \t")
                for field_name, _, value, end in self.fields if field_name == name]

    def get(self, name: str) -> str | None:
        """The first value of a field as Latin-1 text (exact octets), or None."""
        for field_name, _, value, end in self.fields:
            if field_name == name:
                return self.data[value:end].replace(CRLF, b"").strip(b" \t").decode("latin-1")
        return None

    @staticmethod
    def wanted(names: Iterable[str]) -> frozenset[str]:
        """A FETCH's field names as pick() takes them."""
        return frozenset(name.lower() for name in names)

    def pick(self, wanted: frozenset[str], exclude: bool = False) -> bytes:
        """The fields named in `wanted` (see wanted()), or all but those with `exclude`, as
        sent, then the blank line: BODY[HEADER.FIELDS (...)] and BODY[HEADER.FIELDS.NOT (...)]."""
        data = self.data
        chunks = [data[start:end] if data.endswith(CRLF, start, end) else data[start:end] + CRLF
                  for name, start, _, end in self.fields if (name in wanted) != exclude]
        chunks.append(CRLF)
        return b"".join(chunks)


@dataclass(eq=False, slots=True)
class Part:
    """A MIME entity: its header block [start, body_start) and its body [body_start, end)."""

    header: Header
    start: int
    body_start: int
    end: int
    media_type: str = "TEXT"  # as the sender wrote it; compare with .lower()
    subtype: str = "PLAIN"
    params: list[tuple[str, str]] = field(default_factory=list)
    children: list[Part] = field(default_factory=list)  # multipart/*: its parts
    message: Part | None = None                        # message/rfc822: the embedded message

    @property
    def data(self) -> bytes:
        return self.header.data

    @property
    def is_multipart(self) -> bool:
        return bool(self.children)

    @property
    def is_text(self) -> bool:
        return self.media_type.lower() == "text"

    @property
    def size(self) -> int:
        return self.end - self.body_start

    def lines(self) -> int:
        """Text lines in the body, a last line without CRLF included."""
        count = self.data.count(b"\n", self.body_start, self.end)
        if self.end > self.body_start and self.data[self.end - 1] != 0x0A:
            count += 1
        return count

    def param(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.params if key.lower() == name), None)

    def encoding(self) -> str | None:
        """Content-Transfer-Encoding as written, or None when absent."""
        value = self.header.get("content-transfer-encoding")
        if value is None:
            return None
        tokens = [text for kind, text in tokenize(value) if kind != "special"]
        return tokens[0] if tokens else None

    def mime_header(self) -> bytes:
        return self.data[self.start:self.body_start]

    def body(self) -> bytes:
        return self.data[self.body_start:self.end]

    def walk(self) -> Iterator[Part]:
        """This part and every part inside it, embedded messages included, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()
        if self.message is not None:
            yield from self.message.walk()


def parse_message(data: bytes, shallow: bool = False) -> Part:
    """The structure of a whole message (never raises; see the module's bounds). `shallow`
    reads only the message's own header: enough for ENVELOPE, HEADER and TEXT, and what
    header-only FETCHes of a whole mailbox need, without scanning any body."""
    return _Scanner(data, expand=not shallow).part(0, len(data), 0, digest=False)


class ParsedOnDemand:
    """A message whose structure is parsed once, and only when something asks: `root` is the
    whole tree, `top` the message's own header and body (the tree when already known, else a
    shallow parse that scans no body). Subclasses provide `data`."""

    __slots__ = ("_root", "_top")
    data: bytes

    def __init__(self) -> None:
        self._root: Part | None = None
        self._top: Part | None = None

    @property
    def root(self) -> Part:
        if self._root is None:
            self._root = parse_message(self.data)
        return self._root

    @property
    def top(self) -> Part:
        if self._root is not None:
            return self._root
        if self._top is None:
            self._top = parse_message(self.data, shallow=True)
        return self._top


def read_header(data: bytes, start: int, end: int) -> Header:
    """The header block at `start`: up to and including the first blank line, else to `end`."""
    if data.startswith(CRLF, start, end):
        return Header(data, start, start + 2, start)
    blank = data.find(b"\r\n\r\n", start, end)
    if blank < 0:
        return Header(data, start, end, end)
    return Header(data, start, blank + 4, blank + 2)


def find_part(root: Part, numbers: Iterable[int]) -> Part | None:
    """The part a section's numbers name (RFC 3501 6.4.5), or None when there is none.

    Part 1 of a message that is not multipart is its body; numbers after a message/rfc822 part
    go into the embedded message; a leaf's part 1 is itself, as Dovecot and Cyrus allow.
    """
    part: Part | None = None
    for number in numbers:
        if part is None:
            part = _into_message(root, number)
        elif part.children:
            part = part.children[number - 1] if number <= len(part.children) else None
        elif part.message is not None:
            part = _into_message(part.message, number)
        elif number != 1:
            part = None
        if part is None:
            return None
    return part if part is not None else root


def _into_message(message: Part, number: int) -> Part | None:
    if message.children:
        return message.children[number - 1] if number <= len(message.children) else None
    return message if number == 1 else None


def decoded_body(part: Part) -> bytes:
    """The body with its Content-Transfer-Encoding undone (RFC 3516 BINARY; SEARCH BODY)."""
    encoding = (part.encoding() or "7bit").lower()
    body = part.body()
    if encoding in _PLAIN_ENCODINGS:
        return body
    if encoding == "base64":
        return binascii.a2b_base64(_base64_chars(body))
    if encoding == "quoted-printable":
        return _decode_quoted_printable(body)
    raise UnknownEncoding(f"unknown Content-Transfer-Encoding {encoding!r}")


def _decode_quoted_printable(body: bytes) -> bytes:
    """RFC 2045 6.7: whitespace at a line's end was added in transport and goes (rule 3), a
    trailing "=" is a soft line break, even with such whitespace after it (rule 5); the line
    ends that remain are CRLF."""
    lines = body.split(b"\n")
    out = []
    for index, line in enumerate(lines):
        line = line.rstrip(b" \t\r")
        if line.endswith(b"="):
            out.append(binascii.a2b_qp(line[:-1]))
        else:
            out.append(binascii.a2b_qp(line) + (CRLF if index < len(lines) - 1 else b""))
    return b"".join(out)


def _base64_chars(data: bytes) -> bytes:
    """Base64 as mail readers take it: stray octets dropped, a broken tail cut, padding fixed."""
    chars = data.translate(None, _NOT_BASE64)
    chars = chars[:len(chars) - (len(chars) % 4 == 1)]
    return chars + b"=" * (-len(chars) % 4)


def decode_text(data: bytes, charset: str | None) -> str:
    """Octets in a declared charset as text; an unknown charset or bad octets never raise (UTF-8,
    what undeclared 8-bit mail nearly always is, stands in for an unknown charset)."""
    try:
        return data.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError):  # no such codec, a bytes-to-bytes one, or IDNA's errors
        return data.decode("utf-8", "replace")


# RFC 2047 2: =?charset?encoding?text?= (with RFC 2231 5's optional *language after the charset).
_ENCODED_WORD = re.compile(rb"=\?([^?*\s]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(rb"[ \t\r\n]*")


def decode_words(value: bytes) -> str:
    """An unstructured header value with its RFC 2047 encoded words decoded (white space between
    two encoded words dropped, 6.2); raw 8-bit read as UTF-8. Never raises."""
    out: list[str] = []
    pos = 0
    for word in _ENCODED_WORD.finditer(value):
        gap = value[pos:word.start()]
        if not (pos and _BETWEEN_WORDS.fullmatch(gap)):
            out.append(gap.decode("utf-8", "replace"))
        charset, encoding, text = word.groups()
        if encoding in b"bB":
            raw = binascii.a2b_base64(_base64_chars(text))
        else:
            raw = binascii.a2b_qp(text, header=True)
        out.append(decode_text(raw, charset.decode("ascii", "replace")))
        pos = word.end()
    out.append(value[pos:].decode("utf-8", "replace"))
    return "".join(out)


# --- structured header values (RFC 2045 5.1, RFC 822 3.3 with comments) -----------------------


def token_pattern(specials: str) -> re.Pattern[str]:
    """A grammar for `tokenize`: folding white space, a quoted string (closed or not), the start
    of a comment, one special, or an atom of anything else; every character matches one."""
    escaped = re.escape(specials)
    return re.compile(rf'[ \t\r\n]+|"((?:[^"\\]|\\.)*)"?|(\()|([{escaped}])'
                      rf'|([^{escaped} \t\r\n"(]+)', re.DOTALL)


MIME_TOKENS = token_pattern(TSPECIALS)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def tokenize(value: str, grammar: re.Pattern[str] = MIME_TOKENS,
             comments: bool = False) -> list[tuple[str, str]]:
    """('atom'|'quoted'|'special'|'comment', text) tokens of a structured header value, folding
    white space dropped and comments too unless asked for. Never raises: an unterminated quoted
    string or comment ends at the value's end."""
    tokens: list[tuple[str, str]] = []
    pos, end = 0, len(value)
    while pos < end:
        match = grammar.match(value, pos)
        if match is None:  # not with token_pattern's grammars, which match any character
            break
        quoted, comment, special, atom = match.groups()
        if comment:
            start, pos = pos, _skip_comment(value, pos)
            if comments:
                tokens.append(("comment", value[start + 1:pos].removesuffix(")")))
            continue
        pos = match.end()
        if atom is not None:
            tokens.append(("atom", atom))
        elif special is not None:
            tokens.append(("special", special))
        elif quoted is not None:
            if "\\" in quoted:
                quoted = _QUOTED_PAIR.sub(r"\1", quoted)
            tokens.append(("quoted", quoted.replace("\r", "").replace("\n", "")))
    return tokens


def _skip_comment(value: str, pos: int) -> int:
    depth = 0
    while pos < len(value):
        char = value[pos]
        if char == "\\":
            pos += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return pos


def parse_parameters(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`; name=value` pairs after a media type or disposition, RFC 2231 continuations joined.
    A malformed parameter is skipped up to the next `;`."""
    params: list[tuple[str, str]] = []
    index = 0
    while index < len(tokens):
        window = tokens[index + 1:index + 4]
        if (tokens[index] == ("special", ";") and len(window) == 3 and window[0][0] == "atom"
                and window[1] == ("special", "=") and window[2][0] in ("atom", "quoted")):
            params.append((window[0][1], window[2][1]))
            index += 4
        else:
            index += 1
    return _join_continuations(params)


def _join_continuations(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """RFC 2231 3-4: `name*0*=utf-8''a%20; name*1*=b` → `name*=utf-8''a%20b` (still encoded, as
    Dovecot sends it); plain sections `name*0=a; name*1=b` → `name=ab`."""
    entries: list[tuple[str, str | list[tuple[int, str, bool]]]] = []
    sections: dict[str, list[tuple[int, str, bool]]] = {}
    for name, value in params:
        base, star, rest = name.partition("*")
        number = rest.removesuffix("*")
        if star and number.isdigit() and len(number) <= MAX_CONTINUATION_DIGITS:
            pieces = sections.get(base.lower())
            if pieces is None:
                pieces = sections[base.lower()] = []
                entries.append((base, pieces))
            pieces.append((int(number), value, rest.endswith("*")))
        else:
            entries.append((name, value))
    return [(name, value) if isinstance(value, str) else _joined(name, value)
            for name, value in entries]


def _joined(name: str, pieces: list[tuple[int, str, bool]]) -> tuple[str, str]:
    pieces.sort()
    extended = pieces[0][2]
    return (name + "*" if extended else name), "".join(piece for _, piece, _ in pieces)


def parse_media_type(value: str | None, default: tuple[str, str]) -> tuple[str, str,
                                                                           list[tuple[str, str]]]:
    """Content-Type → (type, subtype, parameters); RFC 2045 5.2's default when it is absent or
    unreadable."""
    if value is not None:
        tokens = tokenize(value)
        if (len(tokens) >= 3 and tokens[0][0] == "atom" and tokens[1] == ("special", "/")
                and tokens[2][0] == "atom"):
            return tokens[0][1], tokens[2][1], parse_parameters(tokens[3:])
    if default == ("TEXT", "PLAIN"):
        return "TEXT", "PLAIN", [("CHARSET", "US-ASCII")]
    return default[0], default[1], []


class _Scanner:
    """One parse: the message's bytes and how many parts are left to hand out."""

    def __init__(self, data: bytes, expand: bool) -> None:
        self.data = data
        self.expand = expand
        self.parts_left = MAX_PARTS

    def part(self, start: int, end: int, depth: int, digest: bool) -> Part:
        self.parts_left -= 1
        header = read_header(self.data, start, end)
        body_start = header.end
        default = ("MESSAGE", "RFC822") if digest else ("TEXT", "PLAIN")
        media_type, subtype, params = parse_media_type(header.get("content-type"), default)
        part = Part(header, start, body_start, end, media_type, subtype, params)
        if not self.expand:
            return part
        kind = media_type.lower()
        expandable = depth < MAX_DEPTH and self.parts_left > 0
        if kind == "multipart":
            if expandable:
                part.children = self._children(part, depth, subtype.lower() == "digest")
            if not part.children:
                _make_opaque(part)
        elif kind == "message" and subtype.lower() == "rfc822":
            if expandable and (part.encoding() or "7bit").lower() in _PLAIN_ENCODINGS:
                part.message = self.part(body_start, end, depth + 1, digest=False)
            else:
                _make_opaque(part)
        return part

    def _children(self, parent: Part, depth: int, digest: bool) -> list[Part]:
        boundary = parent.param("boundary")
        if not boundary:
            return []
        try:
            delimiter = b"--" + boundary.encode("latin-1")
        except UnicodeEncodeError:
            return []
        children: list[Part] = []
        spans = _spans(self.data, parent.body_start, parent.end, delimiter)
        for start, end in spans:
            if self.parts_left <= 0:
                # Out of parts: the rest of this body, delimiters and all, is one opaque leaf.
                leaf = Part(Header(self.data, start, start, start), start, start, parent.end)
                _make_opaque(leaf)
                children.append(leaf)
                break
            children.append(self.part(start, end, depth + 1, digest))
        return children


def _make_opaque(part: Part) -> None:
    part.media_type, part.subtype, part.params = "APPLICATION", "OCTET-STREAM", []
    part.children, part.message = [], None


def _spans(data: bytes, start: int, end: int, delimiter: bytes) -> Iterator[tuple[int, int]]:
    """[start, end) of each body part between delimiter lines (RFC 2046 5.1.1): the CRLF
    before a delimiter belongs to it; the preamble and the epilogue are no part."""
    opened: int | None = None  # where the current part begins
    search = start
    at_start = True
    while True:
        if at_start and data.startswith(delimiter, start, end):
            line_start, after = start, start + len(delimiter)
        else:
            found = data.find(CRLF + delimiter, search, end)
            if found < 0:
                break
            line_start, after = found, found + 2 + len(delimiter)
        at_start = False
        closing = data.startswith(b"--", after, end)
        tail = after + 2 if closing else after
        while tail < end and data[tail] in (0x20, 0x09):
            tail += 1
        if tail < end and not data.startswith(CRLF, tail, end):
            search = line_start + 1  # a longer boundary that starts with ours: not a delimiter
            continue
        if opened is not None:
            yield opened, line_start
        if closing:
            return
        opened = search = min(tail + 2, end)
    if opened is not None:
        yield opened, end
