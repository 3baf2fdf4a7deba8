# cython: boundscheck=False, cdivision=True
"""Command tokenizing for SMTP, POP3 and IMAP: the compiled twin of mailforge.speedups.parse.

Same results and same ParseErrors as the twin for any input; the docstrings over there
say what each function does. The tokenizers scan the caller's buffer in place and copy only
the tokens they return.
"""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from libc.string cimport memchr, memcpy

from _bytes cimport (SP, TAB, CR, LF, find_byte, is_alpha, is_digit, ascii_upper,
                     upper_ascii_str, PyUnicode_DecodeASCII, PyBytes_FromStringAndSize,
                     PyBytes_AS_STRING)

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t *size) except NULL

from mailforge.speedups.errors import (Command, FetchAttribute, Literal, Literal8, LiteralTooBig,
                                       ParseError)
from mailforge.speedups.parse import (MAX_LINE, MAX_DEPTH, MAX_LITERAL, MAX_POP3_VERB, STAR,
                                      ATOM_CHARS, SECTION_ATOM_CHARS, SECTION_COMMANDS,
                                      TAG_CHARS, BRACKET_CHARS, check_unique_parameter)

__all__ = ["ParseError", "LiteralTooBig", "Command", "FetchAttribute", "split_command",
           "parse_path", "parse_pop3", "CommandParser", "parse_sequence_set",
           "parse_fetch_attributes", "STAR", "MAX_LINE", "MAX_DEPTH", "MAX_LITERAL",
           "MAX_POP3_VERB"]

cdef enum:
    MAX_LITERAL_DIGITS = 10

cdef unsigned long long MAX_NUMBER = 0xFFFFFFFF

# Character classes, filled from the twin's sets so the two cannot drift apart.
cdef bint ATOM[256]
cdef bint SECTION_ATOM[256]
cdef bint TAG[256]
cdef bint BRACKET[256]
cdef bint PARAM_SPACE[256]  # what bytes.split() splits on
for _c in range(256):
    ATOM[_c] = _c in ATOM_CHARS
    SECTION_ATOM[_c] = _c in SECTION_ATOM_CHARS
    TAG[_c] = _c in TAG_CHARS
    BRACKET[_c] = _c in BRACKET_CHARS
    PARAM_SPACE[_c] = _c in b" \t\n\r\x0b\x0c"

# Words the tokenizers return over and over, made once: a lookup of the packed upper-case
# bytes costs less than building a new str for every command.
cdef tuple KNOWN_WORDS = (
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT", "VRFY", "AUTH",
    "STARTTLS", "SIZE", "BODY", "SMTPUTF8", "NOTIFY", "ORCPT", "ENVID", "RET",
    "USER", "PASS", "STAT", "LIST", "RETR", "DELE", "UIDL", "TOP", "CAPA", "STLS",
    "LOGIN", "SELECT", "FETCH", "STORE", "SEARCH", "APPEND", "IDLE", "CLOSE", "EXAMINE",
    "UID", "COPY", "MOVE", "EXPUNGE", "LOGOUT", "NIL", "FLAGS")
cdef enum:
    MAX_KNOWN = 64
cdef Py_ssize_t N_KNOWN = len(KNOWN_WORDS)
assert N_KNOWN <= MAX_KNOWN and all(len(word) <= 8 for word in KNOWN_WORDS)
cdef unsigned long long KNOWN_KEYS[MAX_KNOWN]
for _i, _known in enumerate(KNOWN_WORDS):
    KNOWN_KEYS[_i] = 0
    for _c in _known.encode():
        KNOWN_KEYS[_i] = (KNOWN_KEYS[_i] << 8) | _c


cdef object _word(const unsigned char *p, Py_ssize_t n):
    """p[:n], ASCII, upper-cased as a str: a shared one for the usual words."""
    cdef unsigned long long key = 0
    cdef Py_ssize_t i
    if n <= 8:
        for i in range(n):
            key = (key << 8) | ascii_upper(p[i])
        for i in range(N_KNOWN):
            if KNOWN_KEYS[i] == key:
                return KNOWN_WORDS[i]
    return upper_ascii_str(p, n)


# --- SMTP -------------------------------------------------------------------------------------


def split_command(bytes line):
    cdef const unsigned char *p = line
    cdef Py_ssize_t start = 0, end = len(line), verb_end, arg
    while start < end and (p[start] == SP or p[start] == TAB):
        start += 1
    while end > start and (p[end - 1] == SP or p[end - 1] == TAB):
        end -= 1
    verb_end = start
    while verb_end < end and p[verb_end] != SP:
        if not is_alpha(p[verb_end]):
            raise ParseError("bad command syntax")
        verb_end += 1
    if verb_end == start:
        raise ParseError("bad command syntax")
    arg = verb_end + 1 if verb_end < end else end
    while arg < end and (p[arg] == SP or p[arg] == TAB):
        arg += 1
    return _word(p + start, verb_end - start), line[arg:end]


def parse_path(bytes arg, bytes keyword):
    cdef const unsigned char *p = arg
    cdef Py_ssize_t n = len(arg), colon, head, head_end, rest, close, path, params
    colon = find_byte(p, 0, n, b':')
    if colon < 0 or not _keyword_matches(p, colon, keyword):
        raise ParseError(f"Syntax: {'MAIL FROM' if keyword == b'FROM' else 'RCPT TO'}:<address>")
    rest = colon + 1
    while rest < n and p[rest] == SP:
        rest += 1
    if rest == n or p[rest] != b'<':
        raise ParseError("address must be enclosed in <>")
    close = _closing_bracket(p, rest, n)
    path, params = rest + 1, close + 1
    if params < n and p[params] != SP:
        raise ParseError("bad syntax after address")
    if path < close and p[path] == b'@':
        path = find_byte(p, path, close, b':')
        # A route is followed by a mailbox (Path = "<" [ A-d-l ":" ] Mailbox ">"): "<@a:>"
        # dropped to "" would turn a syntax error into the null reverse-path.
        if path < 0 or path + 1 == close:
            raise ParseError("bad source route")
        path += 1
    try:
        address = p[path:close].decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("address is not valid UTF-8") from None
    return address, _parse_params(p, params, n)


cdef bint _keyword_matches(const unsigned char *p, Py_ssize_t colon, bytes keyword):
    cdef Py_ssize_t start = 0, end = colon, i
    cdef const unsigned char *k = keyword
    while start < end and p[start] == SP:
        start += 1
    while end > start and p[end - 1] == SP:
        end -= 1
    if end - start != len(keyword):
        return False
    for i in range(end - start):
        if ascii_upper(p[start + i]) != k[i]:
            return False
    return True


cdef Py_ssize_t _closing_bracket(const unsigned char *p, Py_ssize_t rest, Py_ssize_t n) except -1:
    cdef bint quoted = False
    cdef Py_ssize_t index = rest + 1
    cdef unsigned char char
    while index < n:
        char = p[index]
        if char == 0x5C and quoted:
            index += 2
            continue
        if char == 0x22:
            quoted = not quoted
        elif char == 0x3E and not quoted:
            return index
        index += 1
    raise ParseError("address is missing its closing >")


cdef dict _parse_params(const unsigned char *p, Py_ssize_t pos, Py_ssize_t n):
    cdef dict params = {}
    cdef Py_ssize_t start, eq, i
    cdef bint alnum
    while True:
        while pos < n and PARAM_SPACE[p[pos]]:
            pos += 1
        if pos == n:
            return params
        start, eq, alnum = pos, -1, False
        while pos < n and not PARAM_SPACE[p[pos]]:
            if eq < 0 and p[pos] == b'=':
                eq = pos
            pos += 1
        for i in range(start, pos if eq < 0 else eq):
            if is_alpha(p[i]) or is_digit(p[i]):
                alnum = True
            elif p[i] != b'-':
                raise ParseError("bad parameter syntax")
        if not alnum:
            raise ParseError("bad parameter syntax")
        name = _word(p + start, (pos if eq < 0 else eq) - start)
        check_unique_parameter(params, name)
        if eq < 0:
            params[name] = None
            continue
        try:
            params[name] = p[eq + 1:pos].decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("parameter value is not valid UTF-8") from None


# --- POP3 -------------------------------------------------------------------------------------


def parse_pop3(bytes line):
    cdef const unsigned char *p = line
    cdef Py_ssize_t n = len(line), i, verb_end, start
    for i in range(n):
        if p[i] < 0x20 or p[i] == 0x7F:
            raise ParseError("bad character in command")
    verb_end = find_byte(p, 0, n, SP)
    if verb_end < 0:
        verb_end = n
    if verb_end == 0 or verb_end > MAX_POP3_VERB:
        raise ParseError("bad command syntax")
    for i in range(verb_end):
        if not is_alpha(p[i]):
            raise ParseError("bad command syntax")
    cdef list args = []
    i = verb_end + 1
    while i < n:
        while i < n and p[i] == SP:
            i += 1
        start = i
        while i < n and p[i] != SP:
            i += 1
        if i > start:
            args.append(p[start:i])
    return _word(p, verb_end), args


# --- IMAP -------------------------------------------------------------------------------------


cdef class CommandParser:

    def __init__(self, Py_ssize_t max_literal=MAX_LITERAL, Py_ssize_t max_line=MAX_LINE,
                 Py_ssize_t max_depth=MAX_DEPTH):
        self.max_literal = max_literal
        self.max_line = max_line
        self.max_depth = max_depth
        self.wants_continuation = False
        self._line = bytearray()
        self._literal = None
        self._literal_left = 0
        self._literal_binary = False
        self._skipping = False
        self._discarding = False
        self._reset()

    @property
    def in_literal(self):
        return self._literal is not None

    cdef void _reset(self):
        self._tag = None
        self._name = ""
        self._sections = False
        self._stack = [[]]
        self._need_sep = False

    def feed(self, data):
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._feed(<const unsigned char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef object _feed(self, const unsigned char *p, Py_ssize_t end):
        cdef Py_ssize_t pos = 0, newline, stop, held
        self.wants_continuation = False
        while pos < end:
            if self._literal is not None:
                pos = self._take_literal(p, pos, end)
                continue
            newline = find_byte(p, pos, end, LF)
            if self._discarding:
                pos = end if newline < 0 else newline + 1
                self._discarding = newline < 0
                continue
            stop = end if newline < 0 else newline + 1
            held = PyByteArray_GET_SIZE(self._line)
            if held + stop - pos > self.max_line:
                self._discarding = newline < 0
                self._fail("line too long", stop)
            if newline < 0:
                self._line.extend(p[pos:stop])
                return None, stop
            if held:  # the line began in an earlier feed
                self._line.extend(p[pos:stop])
                segment = bytes(self._line)
                self._line.clear()
                command = self._end_of_line(segment, len(segment), stop)
            else:  # the usual case: a whole line in this chunk, tokenized in place
                command = self._end_of_line(p + pos, stop - pos, stop)
            pos = stop
            if command is not None:
                return command, pos
            if self.wants_continuation:
                break
        return None, pos

    cdef Py_ssize_t _take_literal(self, const unsigned char *p, Py_ssize_t pos,
                                  Py_ssize_t end) except -1:
        cdef Py_ssize_t take = min(self._literal_left, end - pos), have
        if not self._skipping and take:
            have = PyByteArray_GET_SIZE(self._literal)
            PyByteArray_Resize(self._literal, have + take)
            memcpy(PyByteArray_AS_STRING(self._literal) + have, p + pos, take)
        self._literal_left -= take
        if not self._literal_left:
            if not self._skipping:
                kind = Literal8 if self._literal_binary else Literal
                (<list>self._stack[-1]).append(kind(self._literal))
            self._literal = None
            self._need_sep = True
        return pos + take

    cdef object _end_of_line(self, const unsigned char *body, Py_ssize_t n, Py_ssize_t consumed):
        n -= 2 if n >= 2 and body[n - 2] == CR else 1
        if self._skipping:
            self._skip_literal_tail(body, n)
            return None
        try:
            return self._tokenize(body, n)
        except ParseError as exc:
            tag = self._tag
            self._skip_literal_tail(body, n)
            self._reset()
            raise exc.located(consumed, tag) from None

    cdef int _skip_literal_tail(self, const unsigned char *body, Py_ssize_t n) except -1:
        cdef Py_ssize_t size
        cdef bint sync
        self._skipping = _literal_tail(body, n, &size, &sync) and not sync
        if self._skipping:
            self._literal, self._literal_left = bytearray(), size
        return 0

    def _fail(self, str message, Py_ssize_t consumed):
        tag = self._tag
        self._line.clear()
        self._reset()
        self._skipping = False
        raise ParseError(message, consumed, tag)

    cdef object _tokenize(self, const unsigned char *body, Py_ssize_t n):
        cdef Py_ssize_t pos = self._header(body, n) if self._tag is None else 0
        cdef unsigned char char
        while pos < n:
            char = body[pos]
            if char == SP:
                self._need_sep = False
                pos += 1
            elif char == 0x29:  # )
                if len(self._stack) == 1:
                    raise ParseError("unexpected )")
                done = self._stack.pop()
                (<list>self._stack[-1]).append(done)
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
                pos = self._quoted(body, n, pos)
            elif char == 0x7B:  # {
                self._literal_header(body, n, pos, False)
                return None
            elif char == 0x7E and pos + 1 < n and body[pos + 1] == 0x7B:  # ~{n}
                self._literal_header(body, n, pos + 1, True)
                return None
            else:
                pos = self._atom(body, n, pos)
        if len(self._stack) > 1:
            raise ParseError("missing )")
        command = Command(self._tag, self._name, self._stack[0])
        self._reset()
        return command

    cdef Py_ssize_t _header(self, const unsigned char *body, Py_ssize_t n) except -1:
        cdef Py_ssize_t pos = _scan(body, 0, n, TAG)
        if pos == 0:
            raise ParseError("missing tag")
        self._tag = PyUnicode_DecodeASCII(<const char *>body, pos, NULL)
        name, pos = _name_after_space(body, n, pos)
        if name == "UID":
            sub, pos = _name_after_space(body, n, pos)
            name = "UID " + sub
        self._name = name
        self._sections = name in SECTION_COMMANDS
        self._need_sep = True
        return pos

    cdef Py_ssize_t _quoted(self, const unsigned char *body, Py_ssize_t n,
                            Py_ssize_t pos) except -1:
        cdef Py_ssize_t index = pos + 1, start = pos + 1, size = 0
        cdef unsigned char char
        cdef bint escaped = False
        while index < n:  # first pass: validate, find the end and the unescaped size
            char = body[index]
            if char == 0x22:
                break
            if char == 0x5C:
                index += 1
                if index == n or (body[index] != 0x22 and body[index] != 0x5C):
                    raise ParseError("bad escape in quoted string")
                escaped = True
            elif char == 0 or char == CR:
                raise ParseError("bad character in quoted string")
            size += 1
            index += 1
        else:
            raise ParseError("unterminated quoted string")
        if not escaped:
            value = PyBytes_FromStringAndSize(<const char *>body + start, size)
        else:
            value = _unescape(body + start, index - start, size)
        (<list>self._stack[-1]).append(value)
        self._need_sep = True
        return index + 1

    cdef int _literal_header(self, const unsigned char *body, Py_ssize_t n,
                             Py_ssize_t pos, bint binary) except -1:
        cdef Py_ssize_t size
        cdef bint sync
        if not _literal_tail(body, n, &size, &sync) or _rfind_brace(body, n) != pos:
            raise ParseError("bad literal")
        if size > self.max_literal:
            raise LiteralTooBig("literal too big")
        self._literal, self._literal_left = bytearray(), size
        self._literal_binary = binary
        self.wants_continuation = sync
        return 0

    cdef Py_ssize_t _atom(self, const unsigned char *body, Py_ssize_t n,
                          Py_ssize_t pos) except -1:
        cdef Py_ssize_t index
        if not self._sections:
            index = _scan(body, pos, n, ATOM)
        else:
            index = _scan(body, pos, n, SECTION_ATOM)
            while index < n and body[index] == 0x5B:  # [ ... ] and whatever follows it
                index = _scan(body, index + 1, n, BRACKET)
                if index >= n or body[index] != 0x5D:
                    raise ParseError("missing ]")
                index = _scan(body, index + 1, n, SECTION_ATOM)
        if index == pos:
            raise ParseError("unexpected character")
        (<list>self._stack[-1]).append(
            PyUnicode_DecodeASCII(<const char *>body + pos, index - pos, NULL))
        self._need_sep = True
        return index


cdef inline Py_ssize_t _scan(const unsigned char *body, Py_ssize_t pos, Py_ssize_t n,
                             bint *chars) noexcept nogil:
    while pos < n and chars[body[pos]]:
        pos += 1
    return pos


cdef tuple _name_after_space(const unsigned char *body, Py_ssize_t n, Py_ssize_t pos):
    if pos >= n or body[pos] != SP:
        raise ParseError("missing command")
    cdef Py_ssize_t end = _scan(body, pos + 1, n, SECTION_ATOM)
    if end == pos + 1:
        raise ParseError("missing command")
    return _word(body + pos + 1, end - pos - 1), end


cdef bytes _unescape(const unsigned char *p, Py_ssize_t n, Py_ssize_t size):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
    cdef Py_ssize_t i = 0
    while i < n:
        if p[i] == 0x5C:
            i += 1
        dst[0] = p[i]
        dst += 1
        i += 1
    return out


cdef Py_ssize_t _rfind_brace(const unsigned char *body, Py_ssize_t n) noexcept nogil:
    while n > 0:
        n -= 1
        if body[n] == 0x7B:
            return n
    return -1


cdef bint _literal_tail(const unsigned char *body, Py_ssize_t n, Py_ssize_t *size,
                        bint *sync) noexcept nogil:
    """True, with size and sync set, if the line ends in {n} or {n+}."""
    if n == 0 or body[n - 1] != 0x7D:
        return False
    cdef Py_ssize_t start = _rfind_brace(body, n), last = n - 1, i
    if start < 0:
        return False
    sync[0] = not (last > start + 1 and body[last - 1] == 0x2B)
    if not sync[0]:
        last -= 1
    if last == start + 1 or last - start - 1 > MAX_LITERAL_DIGITS:
        return False
    size[0] = 0
    for i in range(start + 1, last):
        if not is_digit(body[i]):
            return False
        size[0] = size[0] * 10 + body[i] - 0x30
    return True


def parse_sequence_set(str text):
    cdef Py_ssize_t n, pos = 0
    cdef const unsigned char *p = <const unsigned char *>PyUnicode_AsUTF8AndSize(text, &n)
    cdef list ranges = []
    cdef long long first, second
    while True:
        first = _seq_number(p, &pos, n)
        second = first
        if pos < n and p[pos] == b':':
            pos += 1
            second = _seq_number(p, &pos, n)
        ranges.append((first, second))
        if pos == n:
            return ranges
        if p[pos] != b',':
            raise ParseError("bad sequence set")
        pos += 1


cdef long long _seq_number(const unsigned char *p, Py_ssize_t *pos, Py_ssize_t n) except -2:
    cdef Py_ssize_t start = pos[0], i = pos[0]
    cdef unsigned long long number = 0
    if i < n and p[i] == b'*':
        pos[0] = i + 1
        return STAR
    while i < n and is_digit(p[i]) and i - start <= 10:
        number = number * 10 + p[i] - 0x30
        i += 1
    if i == start or p[start] == b'0' or i - start > 10 or number > MAX_NUMBER:
        raise ParseError("bad sequence set")
    pos[0] = i
    return number


# --- FETCH data items: the twin's code, compiled ------------------------------------------------

_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE = frozenset(("ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER",
                     "RFC822.SIZE", "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID"))
_SECTIONED = frozenset(("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"))
_SECTION_TEXTS = frozenset(("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"))


def parse_fetch_attributes(arg):
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


cdef _fetch_attribute(str text):
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


cdef tuple _body_section(str section):
    spec, space, field_list = section.partition(" ")
    parts = spec.split(".")
    cdef Py_ssize_t count = 0
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


cdef str _binary_section(str section):
    if section:
        for part in section.split("."):
            _section_number(part)
    return section


cdef int _section_number(str text) except -1:
    if not text.isascii() or not text.isdigit() or text[0] == "0" or len(text) > 10:
        raise ParseError("bad section")
    return 0


cdef tuple _header_list(str text):
    if not (text.startswith("(") and text.endswith(")")):
        raise ParseError("bad section")
    fields = tuple([_field_name(name) for name in text[1:-1].split(" ")])
    if not all(fields) or any(c in '()"\\' for f in fields for c in f):
        raise ParseError("bad section")
    return fields


cdef str _field_name(str token):
    if token.startswith('"'):
        if len(token) < 2 or not token.endswith('"'):
            raise ParseError("bad section")
        return token[1:-1]
    return token


cdef tuple _partial(str text):
    if not (text.startswith("<") and text.endswith(">")):
        raise ParseError("bad partial")
    start, dot, count = text[1:-1].partition(".")
    for number in (start, count):
        if not number.isascii() or not number.isdigit() or len(number) > 10:
            raise ParseError("bad partial")
    first, size = int(start), int(count)
    if not dot or size == 0 or first > MAX_NUMBER or size > MAX_NUMBER:
        raise ParseError("bad partial")
    return first, size
