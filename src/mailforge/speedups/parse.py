"""SMTP command-line tokenizing (RFC 5321 4.1): pure-Python twin of the `_parse` extension."""

from __future__ import annotations


class ParseError(ValueError):
    """A command line that cannot be tokenized; the message is fit for a reply text."""


def split_command(line: bytes) -> tuple[str, bytes]:
    """b'MAIL FROM:<a@b>' → ('MAIL', b'FROM:<a@b>'); the verb upper-cased, ASCII only."""
    verb, _, arg = line.strip(b" \t").partition(b" ")
    if not verb or not verb.isalpha() or not verb.isascii():
        raise ParseError("bad command syntax")
    return verb.decode("ascii").upper(), arg.strip(b" \t")


def parse_path(arg: bytes, keyword: bytes) -> tuple[str, dict[str, str | None]]:
    """b'FROM:<a@b> SIZE=10 BODY=8BITMIME' → ('a@b', {'SIZE': '10', 'BODY': '8BITMIME'}).

    `keyword` is b'FROM' or b'TO'. Source routes (<@x,@y:a@b>) are accepted and dropped as
    RFC 5321 4.1.2 requires; the address itself is checked by the caller.
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
        if not sep:
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
        try:
            params[key.decode("ascii").upper()] = value.decode("utf-8") if eq else None
        except UnicodeDecodeError:
            raise ParseError("parameter value is not valid UTF-8") from None
    return params
