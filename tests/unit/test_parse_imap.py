"""The incremental IMAP parser, fed whole and one byte at a time (STYLE 9), both implementations."""

import pytest

from mailforge.speedups.errors import (Command, FetchAttribute, Literal, Literal8, LiteralTooBig,
                                      ParseError)

STEPS = [None, 1, 2, 7]


def run(impl, data: bytes, step: int | None = None, **limits) -> list:
    """Everything the parser yields for `data`: commands, "+" for each continuation request,
    ("BAD", message, tag) for each error; feeding `step` bytes at a time."""
    parser = impl.parse.CommandParser(**limits)
    events, pending, pos = [], b"", 0
    step = step or len(data) or 1
    while pos < len(data) or pending:
        if not pending:
            pending, pos = data[pos:pos + step], pos + step
        try:
            command, used = parser.feed(pending)
        except impl.parse.ParseError as exc:
            events.append(("BAD", str(exc), exc.tag))
            pending = pending[exc.consumed:]
            continue
        pending = pending[used:]
        if command is not None:
            events.append(command)
        elif parser.wants_continuation:
            events.append("+")
    return events


CASES = [
    (b"a1 NOOP\r\n", [Command("a1", "NOOP", [])]),
    (b"a1 noop\n", [Command("a1", "NOOP", [])]),
    (b'A2 LOGIN "bob" "p\\"w\\\\d"\r\n', [Command("A2", "LOGIN", [b"bob", b'p"w\\d'])]),
    (b"A3 SELECT INBOX\r\nA4 CLOSE\r\n",
     [Command("A3", "SELECT", ["INBOX"]), Command("A4", "CLOSE", [])]),
    (b"t uid fetch 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.100>)\r\n",
     [Command("t", "UID FETCH", ["1:*", ["FLAGS", "BODY.PEEK[HEADER.FIELDS (From To)]<0.100>"]])]),
    (b't fetch 2 BODY[HEADER.FIELDS ("From" "Subject")]\r\n',
     [Command("t", "FETCH", ["2", 'BODY[HEADER.FIELDS ("From" "Subject")]'])]),
    (b"A5 APPEND box (\\Seen) {5}\r\nhello\r\n",
     ["+", Command("A5", "APPEND", ["box", ["\\Seen"], b"hello"])]),
    (b"A6 APPEND box {4+}\r\nx\r\ny {0}\r\n\r\n",
     ["+", Command("A6", "APPEND", ["box", b"x\r\ny", b""])]),
    (b"A7 SEARCH (OR (FROM {1+}\r\nx) (TO \"y\")) NIL\r\n",
     [Command("A7", "SEARCH", [["OR", ["FROM", b"x"], ["TO", b"y"]], "NIL"])]),
    (b"A8 LIST \"\" %\r\n", [Command("A8", "LIST", [b"", "%"])]),
    (b"A9 STORE 1 +FLAGS.SILENT (\\Deleted $Junk)\r\n",
     [Command("A9", "STORE", ["1", "+FLAGS.SILENT", ["\\Deleted", "$Junk"]])]),
    ("B1 CREATE \"Entwürfe\"\r\n".encode(), [Command("B1", "CREATE", ["Entwürfe".encode()])]),
    # "[" and "}" are ATOM-CHARs, "]" an ASTRING-CHAR (RFC 3501 9); imaptest's atoms script.
    # Only FETCH's items open sections with "[".
    (b"B2 SELECT !#$&'+,-.0123456789:;<=>?@^_`|[}\r\n",
     [Command("B2", "SELECT", ["!#$&'+,-.0123456789:;<=>?@^_`|[}"])]),
    (b"B3 LIST \"\" !#$&'+,-.0123456789:;<=>?@^_`|[}%*\r\n",
     [Command("B3", "LIST", [b"", "!#$&'+,-.0123456789:;<=>?@^_`|[}%*"])]),
    (b"B4 SELECT a[b c]\r\n", [Command("B4", "SELECT", ["a[b", "c]"])]),
    (b"B5 SELECT ~foo\r\n", [Command("B5", "SELECT", ["~foo"])]),
    # literal8 (RFC 3516 4.3): any octet, NUL and bare CR/LF too.
    (b"B6 APPEND box ~{4}\r\n\x00\xff\r\n\r\n",
     ["+", Command("B6", "APPEND", ["box", b"\x00\xff\r\n"])]),
    (b"B7 APPEND box ~{2+}\r\n\n\x00 ~{0+}\r\n\r\n",
     [Command("B7", "APPEND", ["box", b"\n\x00", b""])]),
]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("data,expected", CASES)
def test_commands(impl, data, expected, step):
    assert run(impl, data, step) == expected


ERRORS = [
    (b"\r\n", "missing tag", None),
    (b"+x NOOP\r\n", "missing tag", None),
    (b"A1\r\n", "missing command", "A1"),
    (b"A1 UID\r\n", "missing command", "A1"),
    (b"A1 LOGIN \"bob\r\n", "unterminated quoted string", "A1"),
    (b"A1 LOGIN \"b\\ob\"\r\n", "bad escape in quoted string", "A1"),
    (b"A1 LOGIN \"b\rb\"\r\n", "bad character in quoted string", "A1"),
    (b"A1 FETCH 1 (FLAGS\r\n", "missing )", "A1"),
    (b"A1 FETCH 1 FLAGS)\r\n", "unexpected )", "A1"),
    (b"A1 FETCH 1 (FLAGS)(UID)\r\n", "missing space between arguments", "A1"),
    (b"A1 FETCH 1 BODY[TEXT\r\n", "missing ]", "A1"),
    (b"A1 APPEND x {5}y\r\n", "bad literal", "A1"),
    (b"A1 APPEND x {}\r\n", "bad literal", "A1"),
    (b"A1 APPEND x ~{5}y\r\n", "bad literal", "A1"),
    (b"A1 APPEND x ~{5\r\n", "bad literal", "A1"),
    (b"A1 APPEND x {99999}\r\n", "literal too big", "A1"),
    (b"A1 SELECT \x01\r\n", "unexpected character", "A1"),
    (b"A1 X " + b"(" * 20 + b")" * 20 + b"\r\n", "lists nested too deep", "A1"),
]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("data,message,tag", ERRORS)
def test_errors_then_next_command(impl, data, message, tag, step):
    events = run(impl, data + b"Z NOOP\r\n", step, max_literal=1000)
    assert events == [("BAD", message, tag), Command("Z", "NOOP", [])]


@pytest.mark.parametrize("step", STEPS)
def test_literals_are_told_from_quoted_strings(impl, step):
    """APPEND and CATENATE read a literal as a message and a quoted string as a date or URL."""
    data = b'A1 APPEND box "q" {1+}\r\nl ~{1+}\r\nb\r\n'
    [command] = run(impl, data, step)
    assert [type(arg) for arg in command.args[1:]] == [bytes, Literal, Literal8]


def test_literal_too_big_is_told_apart_by_class(impl):
    """The server answers it BAD [TOOBIG] with its limit, every other error as bad syntax."""
    parser = impl.parse.CommandParser(max_literal=1000)
    with pytest.raises(LiteralTooBig) as too_big:
        parser.feed(b"A1 APPEND x {1001}\r\nZ NOOP\r\n")
    assert (too_big.value.tag, too_big.value.consumed) == ("A1", 20)
    with pytest.raises(ParseError) as bad_literal:
        parser.feed(b"A2 APPEND x {}\r\n")
    assert type(bad_literal.value) is ParseError


@pytest.mark.parametrize("step", STEPS)
def test_non_synchronizing_literal_of_a_bad_command_is_skipped(impl, step):
    data = b"A1 FOO ) {8+}\r\nZ NOOP\r\n x {1+}\r\n)\r\nA2 NOOP\r\n"
    assert run(impl, data, step) == [("BAD", "unexpected )", "A1"), Command("A2", "NOOP", [])]


@pytest.mark.parametrize("step", STEPS)
def test_line_too_long_is_discarded(impl, step):
    data = b"A1 SELECT " + b"x" * 200 + b"\r\nA2 NOOP\r\n"
    events = run(impl, data, step, max_line=64)
    assert events[0][:2] == ("BAD", "line too long")
    assert events[1:] == [Command("A2", "NOOP", [])]


def test_consumed_stops_after_each_command(impl):
    parser = impl.parse.CommandParser()
    command, used = parser.feed(b"a NOOP\r\nb NOOP\r\n")
    assert (command, used) == (Command("a", "NOOP", []), 8)


def test_continuation_stops_the_feed(impl):
    parser = impl.parse.CommandParser()
    command, used = parser.feed(b"a APPEND x {2}\r\nhi\r\n")
    assert (command, used, parser.wants_continuation) == (None, 16, True)
    assert parser.feed(b"hi\r\n") == (Command("a", "APPEND", ["x", b"hi"]), 4)
    assert not parser.wants_continuation


@pytest.mark.parametrize("text,expected", [
    ("1", [(1, 1)]), ("1:3,5,7:*", [(1, 3), (5, 5), (7, -1)]), ("*", [(-1, -1)]),
    ("4294967295:2", [(4294967295, 2)]),
])
def test_sequence_sets(impl, text, expected):
    assert impl.parse.parse_sequence_set(text) == expected
    assert impl.parse.STAR == -1


@pytest.mark.parametrize("text", ["", "0", "01", "1,", ",1", "1:", "1::2", "a", "4294967296",
                                  "1.5", "*5", "1:2:3", "١"])
def test_bad_sequence_sets(impl, text):
    with pytest.raises(impl.parse.ParseError, match="bad sequence set"):
        impl.parse.parse_sequence_set(text)


@pytest.mark.parametrize("arg,expected", [
    ("fast", [FetchAttribute("FLAGS"), FetchAttribute("INTERNALDATE"),
              FetchAttribute("RFC822.SIZE")]),
    ("UID", [FetchAttribute("UID")]),
    (["FLAGS", "body[]"], [FetchAttribute("FLAGS"), FetchAttribute("BODY", False, "")]),
    ("BODY.PEEK[HEADER.FIELDS (From To)]<0.100>",
     [FetchAttribute("BODY", True, "HEADER.FIELDS", ("From", "To"), (0, 100))]),
    ("BODY[1.2.mime]", [FetchAttribute("BODY", False, "1.2.MIME")]),
    ('BODY.PEEK[HEADER.FIELDS ("From" To "X-Spam")]',
     [FetchAttribute("BODY", True, "HEADER.FIELDS", ("From", "To", "X-Spam"))]),
    ("BODY[2.HEADER.FIELDS.NOT (X)]",
     [FetchAttribute("BODY", False, "2.HEADER.FIELDS.NOT", ("X",))]),
    ("BINARY.PEEK[1.2]<5.10>", [FetchAttribute("BINARY", True, "1.2", (), (5, 10))]),
    ("BINARY.SIZE[1]", [FetchAttribute("BINARY.SIZE", False, "1")]),
])
def test_fetch_attributes(impl, arg, expected):
    assert impl.parse.parse_fetch_attributes(arg) == expected


@pytest.mark.parametrize("arg", ["ENVELOPEX", "BODY.PEEK", "BODY[MIME]", "BODY[HEADER.FIELDS]",
                                 "BODY[TEXT (a)]", "BODY[HEADER.FIELDS ()]", "BODY[1]<1.0>",
                                 "BODY[1]<1>", "BINARY[TEXT]", "BINARY.SIZE[1]<0.1>", "BODY[0]",
                                 ["ALL"], [], [b"FLAGS"], b"FLAGS", "RFC822[1]", "BODY[1",
                                 'BODY[HEADER.FIELDS ("")]', 'BODY[HEADER.FIELDS ("From)]',
                                 'BODY[HEADER.FIELDS ("a"b")]', 'BODY[HEADER.FIELDS ("a\\b")]'])
def test_bad_fetch_attributes(impl, arg):
    with pytest.raises(impl.parse.ParseError):
        impl.parse.parse_fetch_attributes(arg)
