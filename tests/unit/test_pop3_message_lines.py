"""RETR/TOP bodies made while the file is read: the same octets whatever the chunking."""

from hypothesis import given, settings
from hypothesis import strategies as st

from mailforge.protocols.pop3d import MessageLines
from mailforge.store.pop3box import crlf_form


def whole(data: bytes, lines: int | None) -> bytes:
    """The reference: the whole message in memory, as RETR/TOP were made before streaming."""
    crlf = crlf_form(data)
    if lines is not None:
        crlf = top(crlf, lines)
    stuffed = crlf.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def top(crlf: bytes, lines: int) -> bytes:
    blank = (b"\r\n" + crlf).find(b"\r\n\r\n")
    if blank < 0:
        return crlf  # all header
    end = blank + 2
    for _ in range(lines):
        next_end = crlf.find(b"\r\n", end)
        if next_end < 0:
            return crlf
        end = next_end + 2
    return crlf[:end]


def streamed(data: bytes, lines: int | None, sizes: list[int]) -> bytes:
    stream, out, pos = MessageLines(lines), [], 0
    for size in sizes:
        if stream.done:
            break
        out.append(stream.feed(data[pos:pos + size]))
        pos += size
    if not stream.done:
        out.append(stream.feed(data[pos:]))
    out.append(stream.finish())
    return b"".join(out)


MESSAGE = b"Subject: x\n.hidden: header\n\n.dot line\nbody 1\r\n..two\nlast"


def test_retr_stuffs_dots_and_ends_lines_with_crlf():
    assert streamed(MESSAGE, None, [5, 5, 1000]) == (
        b"Subject: x\r\n..hidden: header\r\n\r\n..dot line\r\nbody 1\r\n...two\r\nlast\r\n.\r\n")


def test_top_sends_the_header_and_n_body_lines():
    assert streamed(MESSAGE, 1, [3] * 40) == b"Subject: x\r\n..hidden: header\r\n\r\n..dot line\r\n.\r\n"
    assert streamed(MESSAGE, 0, [1000]) == b"Subject: x\r\n..hidden: header\r\n\r\n.\r\n"


def test_an_empty_file_is_just_the_terminator():
    assert streamed(b"", None, []) == b".\r\n"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"")) |
       st.lists(st.sampled_from([b"a", b".", b"\n", b"\r\n", b"..", b"x y", b"\n\n"]),
                max_size=60).map(b"".join),
       st.none() | st.integers(0, 5),
       st.lists(st.integers(1, 40), max_size=30))
def test_any_chunking_gives_the_reference_octets(data, lines, sizes):
    assert streamed(data, lines, sizes) == whole(data, lines)
