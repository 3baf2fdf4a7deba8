"""DATA decoding, fed whole and one byte at a time (STYLE 9)."""

import pytest
from hypothesis import given, strategies as st

from mailforge.speedups.dotstuff import DotUnstuffer


def decode(data: bytes, step: int | None = None) -> tuple[bytes, bytes, bool, bool]:
    """(message, bytes left after the end, done, bare_newline)."""
    reader = DotUnstuffer()
    out = []
    pos = 0
    step = step or len(data) or 1
    while pos < len(data) and not reader.done:
        chunk = data[pos:pos + step]
        body, used = reader.feed(chunk)
        out.append(body)
        pos += used
        assert used == len(chunk) or reader.done
    return b"".join(out), data[pos:], reader.done, reader.bare_newline


CASES = [
    (b"Subject: x\r\n\r\nhello\r\n.\r\n", b"Subject: x\r\n\r\nhello\r\n", b""),
    (b".\r\n", b"", b""),
    (b"..\r\n.\r\n", b".\r\n", b""),
    (b"a\r\n..b\r\n...\r\n.\r\nQUIT\r\n", b"a\r\n.b\r\n..\r\n", b"QUIT\r\n"),
    (b"a\r\n.\r\n.\r\n", b"a\r\n", b".\r\n"),
    (b"x.\r\n.x\r\n.\r\n", b"x.\r\n.x\r\n", b""),
]


@pytest.mark.parametrize("step", [None, 1, 2, 3, 5, 7])
@pytest.mark.parametrize("data,message,rest", CASES)
def test_decodes_whole_and_split(data, message, rest, step):
    body, left, done, bare = decode(data, step)
    assert (body, left, done, bare) == (message, rest, True, False)


@pytest.mark.parametrize("step", [None, 1, 3])
@pytest.mark.parametrize("smuggled", [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r"])
def test_smuggled_end_never_ends_data(smuggled, step):
    data = b"first\r\n" + smuggled + b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nsecond\r\n.\r\n"
    body, left, done, bare = decode(data, step)
    assert done and left == b"" and bare
    assert b"MAIL FROM" in body


def test_unfinished_data_is_not_done():
    body, left, done, _ = decode(b"abc\r\n.", 1)
    assert not done


@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b), max_size=20),
       st.integers(1, 9))
def test_round_trip_of_stuffed_lines(lines, step):
    message = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    body, left, done, bare = decode(stuffed + b".\r\n", step)
    assert (body, left, done, bare) == (message, b"", True, False)
