"""Base-subject extraction (RFC 5256 2.1): every step, nested, and the reply/forward mark that
THREAD=REFERENCES groups by."""

import pytest

from mailforge.protocols.imap.subject import base_subject


@pytest.mark.parametrize("raw, base, marked", [
    (b"Hello", "HELLO", False),
    (b"Re: Hello", "HELLO", True),
    (b"RE:Hello", "HELLO", True),
    (b"re : hello", "HELLO", True),          # *WSP before the colon
    (b"Fw: Hello", "HELLO", True),
    (b"FWD:   Hello", "HELLO", True),
    (b"Re: Re: re: Hello", "HELLO", True),
    (b"Re[2]: Hello", "HELLO", True),        # a blob inside subj-refwd
    (b"Re: [list] Hello", "HELLO", True),    # a blob left alone, then removed (step 4)
    (b"[list] Re: Hello", "HELLO", True),    # *subj-blob subj-refwd
    (b"[list] Hello", "HELLO", False),
    (b"[list]", "[LIST]", False),            # removing the blob would leave nothing
    (b"[a][b]  [c]", "[C]", False),
    (b"Hello (fwd)", "HELLO", True),
    (b"Hello (FWD)  (fwd) ", "HELLO", True),
    (b"Hello(fwd)x", "HELLO(FWD)X", False),  # only at the end
    (b"[Fwd: Hello]", "HELLO", True),
    (b"Re: [fwd: [fwd: re: [fwd: babylon]]]", "BABYLON", True),
    (b"[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "B", True),
    (b"[fwd: Hello] tail", "TAIL", False),    # a blob like any other when not the whole
    (b"Re: [FWD: c]", "C", True),
    (b"Ad: Re: Ad: Re: Ad: x", "AD: RE: AD: RE: AD: X", False),  # only re, fw and fwd
    (b"Rex: Hello", "REX: HELLO", False),
    (b"  Hello\t \r\n  world  ", "HELLO WORLD", False),  # white space packed, ends trimmed
    (b"=?iso-8859-1?q?RE:_C?=", "C", True),              # decoded before anything else
    (b"=?us-ascii?b?UmU6IGM=?=", "C", True),
    (b"=?iso-8859-1?q?_?=", "", False),
    (b"", "", False),
    (None, "", False),
    (b"Re:", "", True),
    (b"=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "GRÜSSE", False),
])
def test_base_subject(raw, base, marked):
    assert base_subject(raw) == (base, marked)
