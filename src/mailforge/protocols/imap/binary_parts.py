"""APPEND's binary parts made safe to keep and to send (RFC 3516 4.3).

A client with BINARY may append parts in Content-Transfer-Encoding `binary`: raw octets, NUL,
bare CR and LF included. The store keeps line ends its own way and BODY[] goes to clients that
expect 7-bit or 8-bit text, so such raw octets would come back changed or break them. RFC 3516
4.3 lets the server change the encoding of binary data before storing it: every leaf part in
`binary` is stored in base64, and BINARY[part] decodes it back to the octets that were sent.
"""

from __future__ import annotations

import base64
import re

from .mime import CRLF, Part, parse_message

# A cheap test before any MIME parse: most messages never name the binary encoding.
_MENTIONS_BINARY = re.compile(rb"(?i)content-transfer-encoding[ \t]*:[ \t]*binary")
BASE64_FIELD = b"Content-Transfer-Encoding: base64\r\n"
# RFC 2045 6.8: encoded lines are at most 76 characters.
BASE64_LINE = 76 * 3 // 4


def without_binary_parts(data: bytes) -> bytes:
    """`data` with every leaf part in the binary encoding re-encoded as base64."""
    if not _MENTIONS_BINARY.search(data):
        return data
    edits: list[tuple[int, int, bytes]] = []
    for part in parse_message(data).walk():
        if _is_binary_leaf(part):
            edits += _as_base64(part)
    out, pos = [], 0
    for start, end, replacement in sorted(edits):
        out += [data[pos:start], replacement]
        pos = end
    out.append(data[pos:])
    return b"".join(out)


def _is_binary_leaf(part: Part) -> bool:
    return (not part.children and part.message is None
            and (part.encoding() or "").lower() == "binary")


def _as_base64(part: Part) -> list[tuple[int, int, bytes]]:
    """The edits that turn one part's header field and body into base64."""
    body = part.body()
    lines = (base64.b64encode(body[at:at + BASE64_LINE]) for at in range(0, len(body), BASE64_LINE))
    edits = [(start, end, BASE64_FIELD) for name, start, _, end in part.header.fields
             if name == "content-transfer-encoding"]
    edits.append((part.body_start, part.end, CRLF.join(lines)))
    return edits
