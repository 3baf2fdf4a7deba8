"""BODY and BODYSTRUCTURE (RFC 3501 7.4.2) of a parsed message.

BODY is the basic form; BODYSTRUCTURE adds the extension data (MD5, disposition, language,
location) that clients such as Thunderbird use to show attachments without fetching them.
"""

from __future__ import annotations

from .envelope import envelope
from .mime import Part, parse_parameters, tokenize
from .wire import NIL, nlist, nstring, plist, string


def body_structure(part: Part, extended: bool) -> bytes:
    if part.children:
        return _multipart(part, extended)
    fields = [_string(part.media_type), _string(part.subtype), _params(part.params),
              _field(part, "content-id"), _field(part, "content-description"),
              _string(part.encoding() or "7BIT"), b"%d" % part.size]
    if part.message is not None:
        fields += [envelope(part.message.header), body_structure(part.message, extended),
                   b"%d" % part.lines()]
    elif part.is_text:
        fields.append(b"%d" % part.lines())
    if extended:
        fields += [_field(part, "content-md5"), *_extension(part)]
    return plist(fields)


def _multipart(part: Part, extended: bool) -> bytes:
    children = b"".join(body_structure(child, extended) for child in part.children)
    fields = [children, _string(part.subtype)]
    if extended:
        fields += [_params(part.params), *_extension(part)]
    return plist(fields)


def _extension(part: Part) -> list[bytes]:
    """body-fld-dsp SP body-fld-lang SP body-fld-loc."""
    return [_disposition(part), _language(part), _field(part, "content-location")]


def _disposition(part: Part) -> bytes:
    value = part.header.get("content-disposition")
    tokens = tokenize(value) if value else []
    if not tokens or tokens[0][0] != "atom":
        return NIL
    return plist([_string(tokens[0][1]), _params(parse_parameters(tokens[1:]))])


def _language(part: Part) -> bytes:
    value = part.header.get("content-language")
    tags = [text for kind, text in tokenize(value) if kind == "atom"] if value else []
    if len(tags) == 1:
        return _string(tags[0])
    return nlist(_string(tag) for tag in tags)


def _params(params: list[tuple[str, str]]) -> bytes:
    return nlist(item for name, value in params for item in (_string(name), _string(value)))


def _field(part: Part, name: str) -> bytes:
    value = part.header.get(name)
    return nstring(None if value is None else value.encode("latin-1"))


def _string(text: str) -> bytes:
    return string(text.encode("latin-1"))
