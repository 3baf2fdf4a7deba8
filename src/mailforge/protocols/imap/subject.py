"""The base subject of RFC 5256 2.1, by which SORT (SUBJECT) orders and THREAD groups messages.

The steps are the RFC's, in its order; its grammar (case-insensitive):

    subj-refwd   = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
    subj-blob    = "[" *BLOBCHAR "]" *WSP
    subj-leader  = (*subj-blob subj-refwd) / WSP
    subj-trailer = "(fwd)" / WSP
    subj-fwd-hdr = "[fwd:"     subj-fwd-trl = "]"

The result is upper-cased, so that comparing two of them is the i;ascii-casemap comparison the
RFC asks for (and for non-ASCII text what Dovecot does: case folded as well).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .mime import decode_words

_WHITE_SPACE = re.compile(r"[ \t\r\n]+")
_TRAILER = re.compile(r"(?:\(FWD\)| )$")
_BLOB = r"\[[^\[\]]*\] *"
_LEADER = re.compile(rf"(?:(?:{_BLOB})*(?:RE|FWD?) *(?:{_BLOB})?:| )")
_LEADING_BLOB = re.compile(_BLOB)
_FWD_HEADER, _FWD_TRAILER = "[FWD:", "]"


class BaseSubject(NamedTuple):
    text: str
    # Whether the subject said it was a reply or a forward (a subj-refwd, a "(fwd)" trailer or
    # a [fwd: ...] wrapper was taken off): THREAD=REFERENCES puts such a message under one
    # with the same base subject that is no reply (RFC 5256 3.2 step 5).
    reply_or_forward: bool


def base_subject(raw: bytes | None) -> BaseSubject:
    """A Subject field's value (unfolded, encoded words and all) → its base subject."""
    if raw is None:
        return BaseSubject("", False)
    # (1) Encoded words decoded, white space runs made one space.
    text = _WHITE_SPACE.sub(" ", decode_words(raw)).upper()
    marked = False
    while True:
        # (2) Trailers off, as many as there are.
        while (trailer := _TRAILER.search(text)) is not None:
            marked |= trailer.group() != " "
            text = text[:trailer.start()]
        # (3)-(5) Leaders off, and a leading blob when something is left after it.
        while True:
            if (leader := _LEADER.match(text)) is not None:
                marked |= leader.group() != " "
                text = text[leader.end():]
                continue
            blob = _LEADING_BLOB.match(text)
            if blob is not None and blob.end() < len(text):
                text = text[blob.end():]
                continue
            break
        # (6) A [fwd: ...] wrapper off, and the steps again from (2).
        if text.startswith(_FWD_HEADER) and text.endswith(_FWD_TRAILER):
            text = text[len(_FWD_HEADER):-len(_FWD_TRAILER)]
            marked = True
            continue
        return BaseSubject(text, marked)
