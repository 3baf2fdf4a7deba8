"""Command tokenizing for SMTP (RFC 5321 4.1), POP3 (RFC 1939 3) and IMAP (RFC 3501 9):
the pure-Python twin of the `_parse` extension. Both give the same results and raise the
same `ParseError`s for any input (tests/unit/test_speedups_property.py checks it).
"""

from __future__ import annotations

from .errors import Command, FetchAttribute, Literal, Literal8, LiteralTooBig, ParseError

__all__ = ["ParseError", "LiteralTooBig", "Command", "FetchAttribute", "split_command",
           "parse_path", "parse_pop3", "CommandParser", "parse_sequence_set",
           "parse_fetch_attributes", "STAR", "MAX_LINE", "MAX_DEPTH", "MAX_LITERAL",
           "MAX_POP3_VERB"]

# --- SMTP -------------------------------------------------------------------------------------


def split_command(line: bytes) -> tuple[str, bytes]:
    """b'MAIL FROM:<a@b>' → ('MAIL', b'FROM:<a@b>'); the verb upper-cased, ASCII only."""
    verb, _, arg = line.strip(b" \t").partition(b" ")
    if not verb or not verb.isalpha() or not verb.isascii():
        raise ParseError("bad command syntax")
    return verb.decode("ascii").upper(), arg.strip(b" \t")


def parse_path(arg: bytes, keyword: bytes) -> tuple[str, dict[str, str | None]]:
    """b'FROM:<a@b> SIZE=10 BODY=8BITMIME' → ('a@b', {'SIZE': '10', 'BODY': '8BITMIME'}).

    `keyword` is b'FROM' or b'TO'. Source routes (<@x,@y:a@b>) are accepted and dropped as
    RFC 5321 4.1.2 requires; the address itself is checked by the caller. A parameter
    keyword given twice, in any case, is a ParseError.
    """
    head, colon, rest = arg.partition(b":")
    if not colon or head.strip(b" ").upper() != keyword:
        raise ParseError(f"Syntax: {'MAIL FROM' if keyword == b'FROM' else 'RCPT TO'}:<address>")
    rest = rest.lstrip(b" ")
    if not rest.startswith(b"<"):
        raise ParseError("address must be enclosed in <>")
    close = _closing_bracket(rest)
    path, params = rest[1:close], rest[close + 1:]
    if params and not params.startswith(b" "):
        raise ParseError("bad syntax after address")
    if path.startswith(b"@"):
        route, sep, path = path.partition(b":")
        # A route is followed by a mailbox (Path = "<" [ A-d-l ":" ] Mailbox ">"): "<@a:>"
        # dropped to "" would turn a syntax error into the null reverse-path.
        if not sep or not path:
            raise ParseError("bad source route")
    try:
        address = path.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("address is not valid UTF-8") from None
    return address, _parse_params(params)


def _closing_bracket(rest: bytes) -> int:
    """Index of the '>' that closes the path, skipping any inside a quoted local part."""
    quoted = False
    index = 1
    while index < len(rest):
        char = rest[index]
        if char == 0x5C and quoted:  # backslash: the next octet is literal
            index += 2
            continue
        if char == 0x22:
            quoted = not quoted
        elif char == 0x3E and not quoted:
            return index
        index += 1
    raise ParseError("address is missing its closing >")


def _parse_params(text: bytes) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for token in text.split():
        key, eq, value = token.partition(b"=")
        if not key.isascii() or not key.replace(b"-", b"").isalnum():
            raise ParseError("bad parameter syntax")
        name = key.decode("ascii").upper()
        check_unique_parameter(params, name)
        try:
            params[name] = value.decode("utf-8") if eq else None
        except UnicodeDecodeError:
            raise ParseError("parameter value is not valid UTF-8") from None
    return params


# RFC 3461 4.3, 4.4 allow these once per MAIL or RCPT; a repeat is refused, as Sendmail does.
# Other keywords keep the last value, as Postfix does: Python's smtplib sends SIZE twice when
# its caller names SIZE too.
ONCE_ONLY_PARAMETERS = frozenset(("RET", "ENVID", "NOTIFY", "ORCPT"))


def check_unique_parameter(params: dict[str, str | None], name: str) -> None:
    if name in params and name in ONCE_ONLY_PARAMETERS:
        raise ParseError(f"Duplicate {name} parameter")


# --- POP3 -------------------------------------------------------------------------------------

# RFC 1939 3: keywords are three or four characters (RFC 2449's CAPA, STLS, AUTH... too).
MAX_POP3_VERB = 4


def parse_pop3(line: bytes) -> tuple[str, list[bytes]]:
    """b'TOP 1 10' → ('TOP', [b'1', b'10']); the line comes without its CRLF.

    Arguments are split on spaces, runs of them tolerated. PASS may hold spaces (RFC 1939 7):
    its handler takes the raw text after the verb instead of these arguments.
    """
    for char in line:
        if char < 0x20 or char == 0x7F:
            raise ParseError("bad character in command")
    verb, _, rest = line.partition(b" ")
    if not verb or len(verb) > MAX_POP3_VERB or not verb.isalpha():
        raise ParseError("bad command syntax")
    return verb.decode("ascii").upper(), [arg for arg in rest.split(b" ") if arg]


# --- IMAP -------------------------------------------------------------------------------------

# Dovecot's imap_max_line_length default: one line of a command, literals not counted.
MAX_LINE = 64 * 1024
# Parentheses deeper than any real SEARCH or APPEND needs; bounds the parser's stack.
MAX_DEPTH = 16
MAX_LITERAL = 64 * 1024 * 1024
# STAR stands for "*" (the highest number in use) in a parsed sequence set.
STAR = -1
_MAX_NUMBER = 0xFFFFFFFF  # nz-number is 32-bit (RFC 3501 9)
_MAX_LITERAL_DIGITS = 10

SP, LF, CR = 0x20, 0x0A, 0x0D
TILDE, OPEN_BRACE = 0x7E, 0x7B
# ATOM-CHAR (RFC 3501 9: "[" and "}" are ones), plus the list wildcards, "\\" and "]" that LIST
# patterns, flags and astrings (ASTRING-CHAR = ATOM-CHAR / "]") use.
ATOM_CHARS = frozenset(c for c in range(0x21, 0x7F) if c not in b'(){"')
# In the commands whose arguments hold fetch items, "[" opens a section that may hold spaces
# and parentheses (BODY[HEADER.FIELDS (From)]): there it ends the atom's first part.
SECTION_COMMANDS = frozenset(("FETCH", "UID FETCH"))
SECTION_ATOM_CHARS = ATOM_CHARS - {0x5B}
# Tag: ASTRING-CHAR except "+" (RFC 3501 9).
TAG_CHARS = frozenset(c for c in range(0x21, 0x7F) if c not in b'(){%*"\\+')
# Inside [ ]: a section, whose header names may be quoted strings (header-fld-name is an astring).
BRACKET_CHARS = frozenset(c for c in range(0x20, 0x7F) if c not in b'[{]')


class CommandParser:
    """Incremental IMAP command parser: feed it bytes as they arrive, get whole commands.

    `feed(data)` returns `(command, consumed)`: the command is None until one is complete,
    and then `consumed` says where it ended in `data` (the caller keeps the rest for the next
    feed). After a synchronizing literal's `{n}` line, `feed` stops with
    `wants_continuation` set: the server sends "+ ..." before the client sends the literal.
    `in_literal` says whether the parser is inside a literal's octets (the driver holds
    those, not a command line, to a minimum transfer rate).
    A bad command raises ParseError(consumed=, tag=); the parser then skips what is left
    of that command (its non-synchronizing literals too) on later feeds.
    """

    def __init__(self, max_literal: int = MAX_LITERAL, max_line: int = MAX_LINE,
                 max_depth: int = MAX_DEPTH) -> None:
        self.max_literal = max_literal
        self.max_line = max_line
        self.max_depth = max_depth
        self.wants_continuation = False
        self._line = bytearray()
        self._literal: bytearray | None = None
        self._literal_left = 0
        self._literal_binary = False  # the literal being read is a literal8 (~{n})
        self._skipping = False  # in the rest of a bad command
        self._discarding = False  # in a line that was too long, until its LF
        self._reset()

    @property
    def in_literal(self) -> bool:
        return self._literal is not None

    def _reset(self) -> None:
        self._tag: str | None = None
        self._name = ""
        self._sections = False  # "[" opens a section (SECTION_COMMANDS)
        self._stack: list[list] = [[]]
        self._need_sep = False

    def feed(self, data: bytes) -> tuple[Command | None, int]:
        self.wants_continuation = False
        pos, end = 0, len(data)
        while pos < end:
            if self._literal is not None:
                pos = self._take_literal(data, pos)
                continue
            if self._discarding:
                newline = data.find(b"\n", pos)
                pos = end if newline < 0 else newline + 1
                self._discarding = newline < 0
                continue
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline + 1
            if len(self._line) + stop - pos > self.max_line:
                self._discarding = newline < 0
                self._fail("line too long", stop)
            self._line += data[pos:stop]
            pos = stop
            if newline < 0:
                break
            segment = bytes(self._line)
            self._line.clear()
            command = self._end_of_line(segment, pos)
            if command is not None:
                return command, pos
            if self.wants_continuation:
                break
        return None, pos

    def _take_literal(self, data: bytes, pos: int) -> int:
        assert self._literal is not None
        take = min(self._literal_left, len(data) - pos)
        if not self._skipping:
            self._literal += data[pos:pos + take]
        self._literal_left -= take
        if not self._literal_left:
            if not self._skipping:
                kind = Literal8 if self._literal_binary else Literal
                self._stack[-1].append(kind(self._literal))
            self._literal = None
            self._need_sep = True
        return pos + take

    def _end_of_line(self, segment: bytes, consumed: int) -> Command | None:
        body = segment[:-2] if segment.endswith(b"\r\n") else segment[:-1]
        if self._skipping:
            self._skip_literal_tail(body)
            return None
        try:
            return self._tokenize(body)
        except ParseError as exc:
            tag = self._tag
            self._skip_literal_tail(body)
            self._reset()
            raise exc.located(consumed, tag) from None

    def _skip_literal_tail(self, body: bytes) -> None:
        """After an error: a line ending in {n+} is followed by n bytes that are not a command."""
        literal = _literal_tail(body)
        self._skipping = literal is not None and not literal[1]
        if self._skipping:
            self._literal, self._literal_left = bytearray(), literal[0]

    def _fail(self, message: str, consumed: int) -> None:
        tag = self._tag
        self._line.clear()
        self._reset()
        self._skipping = False
        raise ParseError(message, consumed, tag)

    def _tokenize(self, body: bytes) -> Command | None:
        pos = self._header(body) if self._tag is None else 0
        end = len(body)
        while pos < end:
            char = body[pos]
            if char == SP:
                self._need_sep = False
                pos += 1
            elif char == 0x29:  # )
                if len(self._stack) == 1:
                    raise ParseError("unexpected )")
                done = self._stack.pop()
                self._stack[-1].append(done)
                self._need_sep = True
                pos += 1
            elif self._need_sep:
                raise ParseError("missing space between arguments")
            elif char == 0x28:  # (
                if len(self._stack) > self.max_depth:
                    raise ParseError("lists nested too deep")
                self._stack.append([])
                pos += 1
            elif char == 0x22:  # "
                pos = self._quoted(body, pos)
            elif char == OPEN_BRACE:
                self._literal_header(body, pos, binary=False)
                return None
            elif char == TILDE and pos + 1 < end and body[pos + 1] == OPEN_BRACE:  # ~{n}
                self._literal_header(body, pos + 1, binary=True)
                return None
            else:
                pos = self._atom(body, pos)
        if len(self._stack) > 1:
            raise ParseError("missing )")
        command = Command(self._tag, self._name, self._stack[0])
        self._reset()
        return command

    def _header(self, body: bytes) -> int:
        pos = _scan(body, 0, TAG_CHARS)
        if pos == 0:
            raise ParseError("missing tag")
        self._tag = body[:pos].decode("ascii")
        name, pos = self._name_after_space(body, pos)
        if name == "UID":
            sub, pos = self._name_after_space(body, pos)
            name = "UID " + sub
        self._name = name
        self._sections = name in SECTION_COMMANDS
        self._need_sep = True
        return pos

    @staticmethod
    def _name_after_space(body: bytes, pos: int) -> tuple[str, int]:
        if pos >= len(body) or body[pos] != SP:
            raise ParseError("missing command")
        end = _scan(body, pos + 1, SECTION_ATOM_CHARS)
        if end == pos + 1:
            raise ParseError("missing command")
        return body[pos + 1:end].decode("ascii").upper(), end

    def _quoted(self, body: bytes, pos: int) -> int:
        out = bytearray()
        index = pos + 1
        while index < len(body):
            char = body[index]
            if char == 0x22:
                self._stack[-1].append(bytes(out))
                self._need_sep = True
                return index + 1
            if char == 0x5C:  # backslash: only " and \ may be escaped
                index += 1
                if index == len(body) or body[index] not in (0x22, 0x5C):
                    raise ParseError("bad escape in quoted string")
                char = body[index]
            elif char == 0 or char == CR:
                raise ParseError("bad character in quoted string")
            out.append(char)
            index += 1
        raise ParseError("unterminated quoted string")

    def _literal_header(self, body: bytes, pos: int, binary: bool) -> None:
        literal = _literal_tail(body)
        if literal is None or body.rfind(b"{") != pos:
            raise ParseError("bad literal")
        size, sync = literal
        if size > self.max_literal:
            raise LiteralTooBig("literal too big")
        self._literal, self._literal_left = bytearray(), size
        self._literal_binary = binary
        self.wants_continuation = sync

    def _atom(self, body: bytes, pos: int) -> int:
        if not self._sections:
            index = _scan(body, pos, ATOM_CHARS)
        else:
            end = len(body)
            index = _scan(body, pos, SECTION_ATOM_CHARS)
            while index < end and body[index] == 0x5B:  # [ ... ] and whatever follows it
                index = _scan(body, index + 1, BRACKET_CHARS)
                if index >= end or body[index] != 0x5D:
                    raise ParseError("missing ]")
                index = _scan(body, index + 1, SECTION_ATOM_CHARS)
        if index == pos:
            raise ParseError("unexpected character")
        self._stack[-1].append(body[pos:index].decode("ascii"))
        self._need_sep = True
        return index


def _scan(body: bytes, pos: int, chars: frozenset[int]) -> int:
    end = len(body)
    while pos < end and body[pos] in chars:
        pos += 1
    return pos


def _literal_tail(body: bytes) -> tuple[int, bool] | None:
    """(size, synchronizing) if the line ends in {n} or {n+}."""
    if not body.endswith(b"}"):
        return None
    start = body.rfind(b"{")
    if start < 0:
        return None
    inner = body[start + 1:-1]
    sync = not inner.endswith(b"+")
    digits = inner if sync else inner[:-1]
    if not digits or len(digits) > _MAX_LITERAL_DIGITS or not digits.isdigit():
        return None
    return int(digits), sync


def parse_sequence_set(text: str) -> list[tuple[int, int]]:
    """'1:3,5,7:*' → [(1, 3), (5, 5), (7, STAR)], ranges as written (RFC 3501 9 sequence-set)."""
    ranges = []
    for item in text.split(","):
        low, colon, high = item.partition(":")
        first = _seq_number(low)
        ranges.append((first, _seq_number(high) if colon else first))
    return ranges


def _seq_number(text: str) -> int:
    if text == "*":
        return STAR
    if not text or not text.isascii() or not text.isdigit() or text[0] == "0" or len(text) > 10:
        raise ParseError("bad sequence set")
    number = int(text)
    if number > _MAX_NUMBER:
        raise ParseError("bad sequence set")
    return number


# RFC 3501 6.4.5: the macros, which stand alone, never inside a list.
_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE = frozenset(("ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER",
                     "RFC822.SIZE", "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID"))
_SECTIONED = frozenset(("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"))
_SECTION_TEXTS = frozenset(("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"))


def parse_fetch_attributes(arg: str | bytes | list) -> list[FetchAttribute]:
    """FETCH's data items: a macro, one item, or a list of items (RFC 3501 6.4.5, 3516)."""
    if isinstance(arg, str):
        macro = _MACROS.get(arg.upper())
        if macro is not None:
            return [FetchAttribute(name) for name in macro]
        return [_fetch_attribute(arg)]
    if not isinstance(arg, list) or not arg:
        raise ParseError("bad fetch attribute list")
    items = []
    for item in arg:
        if not isinstance(item, str):
            raise ParseError("bad fetch attribute list")
        items.append(_fetch_attribute(item))
    return items


def _fetch_attribute(text: str) -> FetchAttribute:
    head, bracket, rest = text.partition("[")
    name = head.upper()
    if not bracket:
        if name not in _SIMPLE:
            raise ParseError("unknown fetch attribute")
        return FetchAttribute(name)
    if name not in _SECTIONED:
        raise ParseError("unknown fetch attribute")
    section, closed, tail = rest.partition("]")
    if not closed:
        raise ParseError("bad section")
    peek = name.endswith(".PEEK")
    base = name[:-5] if peek else name
    if base == "BODY":
        section_name, fields = _body_section(section)
    else:
        section_name, fields = _binary_section(section), ()
    partial = _partial(tail) if tail else None
    if partial is not None and base == "BINARY.SIZE":
        raise ParseError("bad partial")
    return FetchAttribute(base, peek, section_name, fields, partial)


def _body_section(section: str) -> tuple[str, tuple[str, ...]]:
    """'1.2.HEADER.FIELDS (From To)' → ('1.2.HEADER.FIELDS', ('From', 'To'))."""
    spec, space, field_list = section.partition(" ")
    parts = spec.split(".")
    count = 0
    while count < len(parts) and parts[count].isdigit():
        _section_number(parts[count])
        count += 1
    text = ".".join(parts[count:]).upper()
    if text and (text not in _SECTION_TEXTS or (text == "MIME" and not count)):
        raise ParseError("bad section")
    wants_fields = text.startswith("HEADER.FIELDS")
    if wants_fields != bool(space):
        raise ParseError("bad section")
    numbers = ".".join(parts[:count])
    name = numbers + "." + text if numbers and text else numbers or text
    return name, _header_list(field_list) if wants_fields else ()


def _binary_section(section: str) -> str:
    if section:
        for part in section.split("."):
            _section_number(part)
    return section


def _section_number(text: str) -> None:
    if not text.isascii() or not text.isdigit() or text[0] == "0" or len(text) > 10:
        raise ParseError("bad section")


def _header_list(text: str) -> tuple[str, ...]:
    """'(From "To")' → ('From', 'To'): header names as atoms or quoted strings (RFC 3501 9
    header-fld-name is an astring); a quoted one may not hold a quote or backslash."""
    if not (text.startswith("(") and text.endswith(")")):
        raise ParseError("bad section")
    fields = tuple(_field_name(name) for name in text[1:-1].split(" "))
    if not all(fields) or any(c in '()"\\' for f in fields for c in f):
        raise ParseError("bad section")
    return fields


def _field_name(token: str) -> str:
    if token.startswith('"'):
        if len(token) < 2 or not token.endswith('"'):
            raise ParseError("bad section")
        return token[1:-1]
    return token


def _partial(text: str) -> tuple[int, int]:
    """'<0.100>' → (0, 100)."""
    if not (text.startswith("<") and text.endswith(">")):
        raise ParseError("bad partial")
    start, dot, count = text[1:-1].partition(".")
    for number in (start, count):
        if not number.isascii() or not number.isdigit() or len(number) > 10:
            raise ParseError("bad partial")
    first, size = int(start), int(count)
    if not dot or size == 0 or first > _MAX_NUMBER or size > _MAX_NUMBER:
        raise ParseError("bad partial")
    return first, size
