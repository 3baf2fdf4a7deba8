"""SMTP and POP3 command tokenizing, both implementations."""

import pytest


@pytest.mark.parametrize("line,expected", [
    (b"MAIL FROM:<a@b>", ("MAIL", b"FROM:<a@b>")),
    (b"  ehlo   client.example  ", ("EHLO", b"client.example")),
    (b"QUIT", ("QUIT", b"")),
    (b"rcpt\tTO:<x@y>", None),
    (b"", None),
    (b"M4IL FROM:<a@b>", None),
    (b"D\xc3\xa4TA", None),
])
def test_split_command(impl, line, expected):
    if expected is None:
        with pytest.raises(impl.parse.ParseError, match="bad command syntax"):
            impl.parse.split_command(line)
    else:
        assert impl.parse.split_command(line) == expected


@pytest.mark.parametrize("arg,keyword,expected", [
    (b"FROM:<a@b>", b"FROM", ("a@b", {})),
    (b"from: <a@b> SIZE=10 BODY=8BITMIME smtputf8", b"FROM",
     ("a@b", {"SIZE": "10", "BODY": "8BITMIME", "SMTPUTF8": None})),
    (b"TO:<@r1,@r2:user@host>", b"TO", ("user@host", {})),
    (b"FROM:<>", b"FROM", ("", {})),
    (b'TO:<"a>b"@host> NOTIFY=NEVER', b"TO", ('"a>b"@host', {"NOTIFY": "NEVER"})),
    ("TO:<jöran@exämple.test>".encode(), b"TO", ("jöran@exämple.test", {})),
    (b"FROM:<a@b> X-KEY=v=w", b"FROM", ("a@b", {"X-KEY": "v=w"})),
])
def test_parse_path(impl, arg, keyword, expected):
    assert impl.parse.parse_path(arg, keyword) == expected


@pytest.mark.parametrize("arg,keyword,message", [
    (b"FROM <a@b>", b"FROM", "Syntax: MAIL FROM:<address>"),
    (b"TO:<a@b>", b"FROM", "Syntax: MAIL FROM:<address>"),
    (b"FROM:<a@b>", b"TO", "Syntax: RCPT TO:<address>"),
    (b"FROM:a@b", b"FROM", "address must be enclosed in <>"),
    (b"FROM:<a@b", b"FROM", "address is missing its closing >"),
    (b"FROM:<a@b>SIZE=1", b"FROM", "bad syntax after address"),
    (b"TO:<@r1user@host>", b"TO", "bad source route"),
    (b"FROM:<@r1:>", b"FROM", "bad source route"),
    (b"FROM:<@r1,@r2:> SIZE=1", b"FROM", "bad source route"),
    (b"FROM:<\xff@b>", b"FROM", "address is not valid UTF-8"),
    (b"FROM:<a@b> =1", b"FROM", "bad parameter syntax"),
    (b"FROM:<a@b> --", b"FROM", "bad parameter syntax"),
    (b"FROM:<a@b> K=\xff", b"FROM", "parameter value is not valid UTF-8"),
    (b"FROM:<a@b> RET=FULL RET=HDRS", b"FROM", "Duplicate RET parameter"),
    (b"FROM:<a@b> envid=x SIZE=1 ENVID=y", b"FROM", "Duplicate ENVID parameter"),
    (b"TO:<x@y> NOTIFY=NEVER Notify=SUCCESS", b"TO", "Duplicate NOTIFY parameter"),
    (b"TO:<x@y> ORCPT=rfc822;a@b ORCPT=\xff", b"TO", "Duplicate ORCPT parameter"),
])
def test_parse_path_errors(impl, arg, keyword, message):
    with pytest.raises(impl.parse.ParseError) as caught:
        impl.parse.parse_path(arg, keyword)
    assert str(caught.value) == message


@pytest.mark.parametrize("line,expected", [
    (b"USER bob", ("USER", [b"bob"])),
    (b"top 1  10", ("TOP", [b"1", b"10"])),
    (b"STAT", ("STAT", [])),
    (b"USER j\xc3\xb6", ("USER", [b"j\xc3\xb6"])),
])
def test_parse_pop3(impl, line, expected):
    assert impl.parse.parse_pop3(line) == expected


@pytest.mark.parametrize("line,message", [
    (b"", "bad command syntax"), (b"RETRX 1", "bad command syntax"),
    (b"US3R x", "bad command syntax"), (b"USER a\0b", "bad character in command"),
    (b" USER", "bad command syntax"),
])
def test_parse_pop3_errors(impl, line, message):
    with pytest.raises(impl.parse.ParseError, match=message):
        impl.parse.parse_pop3(line)


def test_one_parse_error_class_for_both(impl):
    from mailforge.speedups import ParseError
    from mailforge.speedups.parse import ParseError as twin_error
    assert impl.parse.ParseError is ParseError is twin_error
