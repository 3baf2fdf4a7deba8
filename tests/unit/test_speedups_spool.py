"""DATA decoding, CRLF→LF and durable file IO, both implementations."""

import os

import pytest

from tests.unit.test_dotstuff import CASES


def decode(impl, data: bytes, step: int | None = None) -> tuple[bytes, bytes, bool, bool]:
    reader = impl.spool.DotUnstuffer()
    out, pos = [], 0
    step = step or len(data) or 1
    while pos < len(data) and not reader.done:
        chunk = data[pos:pos + step]
        body, used = reader.feed(chunk)
        out.append(body)
        pos += used
        assert used == len(chunk) or reader.done
    return b"".join(out), data[pos:], reader.done, reader.bare_newline


@pytest.mark.parametrize("step", [None, 1, 2, 3, 5])
@pytest.mark.parametrize("data,message,rest", CASES + [
    (b"..\r\n..\r\n...x\r\n.\r\n", b".\r\n.\r\n..x\r\n", b""),
    (b"a\r\n.\rb\r\n.\r\n", None, b""),
])
def test_unstuffs_whole_and_split(impl, data, message, rest, step):
    body, left, done, bare = decode(impl, data, step)
    assert done and left == rest
    if message is None:
        assert bare
    else:
        assert (body, bare) == (message, False)


@pytest.mark.parametrize("smuggled", [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n",
                                      b"\r\n.\r"])
def test_smuggled_end_is_flagged(impl, smuggled):
    body, left, done, bare = decode(impl, b"a\r\n" + smuggled + b"MAIL\r\n.\r\n", 2)
    assert done and bare and left == b"" and b"MAIL" in body


def test_unchanged_chunk_is_not_copied():
    ext = pytest.importorskip("mailforge.speedups._spool")
    chunk = b"Subject: x\r\n\r\nbody\r\n" * 10
    assert ext.DotUnstuffer().feed(chunk)[0] is chunk


@pytest.mark.parametrize("chunks,expected", [
    ([b"a\r\nb\r\n"], b"a\nb\n"), ([b"a\r", b"\nb"], b"a\nb"), ([b"a\r", b"b"], b"a\rb"),
    ([b"a\r"], b"a\r"), ([b"\r", b"\r", b"\n"], b"\r\n"), ([b"", b"x\r\r\n"], b"x\r\n"),
])
def test_crlf_to_lf(impl, chunks, expected):
    converter = impl.spool.CrlfToLf()
    assert b"".join(converter.feed(c) for c in chunks) + converter.flush() == expected


CRLF_SAMPLES = [
    b"Subject: hi\r\n\r\nline 1\r\nline 2\r\n",
    b"lone\rCR kept\r\n\r\r\nends with CR\r",
    b"\r\n\r\n",
    b"no line end at all",
    b"\n bare LF stays \n",
]


def expected(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def crlf_to_lf(impl, chunks) -> list[bytes]:
    converter = impl.spool.CrlfToLf()
    return [converter.feed(chunk) for chunk in chunks] + [converter.flush()]


@pytest.mark.parametrize("data", CRLF_SAMPLES)
def test_crlf_to_lf_whole(impl, data):
    assert b"".join(crlf_to_lf(impl, [data])) == expected(data)


@pytest.mark.parametrize("data", CRLF_SAMPLES)
def test_crlf_to_lf_split_at_every_position(impl, data):
    for cut in range(len(data) + 1):
        assert b"".join(crlf_to_lf(impl, [data[:cut], data[cut:]])) == expected(data), cut


@pytest.mark.parametrize("data", CRLF_SAMPLES)
def test_crlf_to_lf_byte_by_byte(impl, data):
    chunks = [data[i:i + 1] for i in range(len(data))]
    assert b"".join(crlf_to_lf(impl, chunks)) == expected(data)


def test_write_all(impl, tmp_path):
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        impl.spool.write_all(fd, b"abc" * 100000)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"abc" * 100000
    with pytest.raises(OSError):
        impl.spool.write_all(fd, b"x")
