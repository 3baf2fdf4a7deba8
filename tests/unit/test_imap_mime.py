"""The bounded MIME scanner: structure, offsets, parameters and its bounds."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailforge.protocols.imap import mime
from mailforge.protocols.imap.mime import find_part, parse_message

from .imap_messages import ALTERNATIVE, MALFORMED, MIXED, NESTED, PLAIN, UNCLOSED, crlf


def shape(part):
    """type/subtype with children or the embedded message, for compact assertions."""
    name = f"{part.media_type}/{part.subtype}".lower()
    if part.children:
        return (name, [shape(child) for child in part.children])
    if part.message is not None:
        return (name, shape(part.message))
    return name


def test_plain_message_is_one_text_part():
    root = parse_message(PLAIN)
    assert shape(root) == "text/plain"
    assert root.params == [("CHARSET", "US-ASCII")]
    assert root.body() == b"Hello all,\r\nthe minutes are attached below.\r\n"
    assert root.mime_header().endswith(b"cac.washington.edu>\r\n\r\n")
    assert root.lines() == 2
    assert root.header.get("cc") == "minutes@CNRI.Reston.VA.US, John Klensin <KLENSIN@MIT.EDU>"
    assert find_part(root, [1]) is root
    assert find_part(root, [2]) is None


def test_alternative_offsets_slice_the_original_bytes():
    root = parse_message(ALTERNATIVE)
    assert shape(root) == ("multipart/alternative", ["text/plain", "text/html"])
    text, html = root.children
    assert text.body() == b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln, die Zugverbindung ist gebucht."
    assert text.mime_header() == (b"Content-Type: text/plain; charset=UTF-8; format=flowed\r\n"
                                  b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
    assert ALTERNATIVE[text.start:text.end] == text.mime_header() + text.body()
    assert text.params == [("charset", "UTF-8"), ("format", "flowed")]
    assert text.encoding() == "quoted-printable"
    assert mime.decoded_body(text).decode() == "Grüße aus Köln, die Zugverbindung ist gebucht."
    # The CRLF before the delimiter belongs to the delimiter, so html's own blank line stays.
    assert html.body().endswith(b"</html>\r\n")
    assert root.param("BOUNDARY") == "------------alt42"


def test_mixed_with_attachments():
    root = parse_message(MIXED)
    assert shape(root) == ("multipart/mixed", [
        ("multipart/alternative", ["text/plain", "text/html"]),
        "application/pdf", "image/png"])
    pdf = find_part(root, [2])
    assert pdf.params == [("name*", "UTF-8''Bericht%20Q1%E2%80%93final.pdf")]
    assert mime.decoded_body(pdf) == b"%PDF-1.4\n%%EOF\n"
    assert find_part(root, [1, 2]).body() == b"<p>See the report attached.</p>"
    assert find_part(root, [1, 1, 1]) is find_part(root, [1, 1])  # a leaf's part 1 is itself
    assert find_part(root, [3, 2]) is None
    assert find_part(root, [4]) is None


def test_shallow_parse_reads_only_the_message_header():
    top = parse_message(MIXED, shallow=True)
    assert (top.media_type, top.children, top.message) == ("multipart", [], None)
    assert top.header.get("subject") == "Quarterly report"
    assert top.body() == parse_message(MIXED).body()


def test_nested_message_rfc822():
    root = parse_message(NESTED)
    assert shape(root) == ("multipart/mixed", [
        "text/plain", ("message/rfc822", ("multipart/alternative", ["text/plain", "text/html"]))])
    forwarded = find_part(root, [2])
    assert forwarded.message.header.get("subject") == "Quarterly report"
    assert forwarded.body().startswith(b"From: Anna Smith")
    assert forwarded.body().endswith(b"--b2--\r\n")
    assert find_part(root, [2, 1]).body() == b"Plain inner."
    assert find_part(root, [2, 2]).body() == b"<b>HTML inner.</b>"
    assert [part.subtype for part in root.walk()] == [
        "mixed", "plain", "rfc822", "alternative", "plain", "html"]


def test_malformed_header_is_read_as_far_as_it_goes():
    root = parse_message(MALFORMED)
    assert [name for name, *_ in root.header.fields] == ["from", "subject", "content-type"]
    assert root.header.get("subject") == "caf\xc3\xa9 \xff"
    # "text" alone is no media type: RFC 2045 5.2's default applies.
    assert (root.media_type, root.subtype) == ("TEXT", "PLAIN")
    assert root.body() == b"no final line end"
    assert root.lines() == 1


def test_unclosed_multipart_runs_to_the_end():
    root = parse_message(UNCLOSED)
    assert [child.body() for child in root.children] == [b"first", b"second, to the end\r\n"]


def test_header_without_body_and_empty_header():
    root = parse_message(b"Subject: only a header")
    assert root.header.get("subject") == "only a header"
    assert root.body() == b""
    root = parse_message(b"\r\nbody only\r\n")
    assert root.header.fields == [] and root.body() == b"body only\r\n"
    assert parse_message(b"").body() == b""


def test_boundary_that_starts_another_boundary_is_not_a_delimiter():
    message = crlf("""\
Content-Type: multipart/mixed; boundary=ab

--ab
Content-Type: multipart/mixed; boundary=abc

--abc
Content-Type: text/plain

deep
--abc--
--ab--
""")
    root = parse_message(message)
    assert shape(root) == ("multipart/mixed", [("multipart/mixed", ["text/plain"])])
    assert find_part(root, [1, 1]).body() == b"deep"


def test_multipart_digest_defaults_to_message_rfc822():
    message = crlf("""\
Content-Type: multipart/digest; boundary=d

--d

Subject: one

first
--d--
""")
    root = parse_message(message)
    assert shape(root) == ("multipart/digest", [("message/rfc822", "text/plain")])


@pytest.mark.parametrize("content_type", [
    "multipart/mixed", "multipart/mixed; boundary=\"\"", "multipart/mixed; boundary=nowhere"])
def test_multipart_without_parts_is_an_opaque_leaf(content_type):
    root = parse_message(crlf(f"Content-Type: {content_type}\n\nno delimiters here\n"))
    assert shape(root) == "application/octet-stream"
    assert root.body() == b"no delimiters here\r\n"


def test_base64_message_rfc822_is_opaque():
    root = parse_message(crlf("Content-Type: message/rfc822\nContent-Transfer-Encoding: base64"
                              "\n\nU3ViamVjdDogeA0KDQp4\n"))
    assert shape(root) == "application/octet-stream"


def test_header_fields_selection_keeps_the_sent_bytes():
    root = parse_message(PLAIN)
    # Field names come in lower case (the FETCH names them in any case).
    assert root.header.pick(frozenset(["cc", "subject"])) == (
        b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
        b"cc: minutes@CNRI.Reston.VA.US,\r\n John Klensin <KLENSIN@MIT.EDU>\r\n\r\n")
    rest = root.header.pick(frozenset(["return-path", "date", "from", "subject", "to", "cc"]),
                            exclude=True)
    assert rest == b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n\r\n"
    assert root.header.pick(frozenset(["x-none"])) == b"\r\n"
    # A last field without CRLF still ends in one.
    assert parse_message(b"A: 1\r\nB: 2").header.pick(frozenset(["b"])) == b"B: 2\r\n\r\n"


@pytest.mark.parametrize("value, expected", [
    ('text/plain; charset="utf-8" (comment); format=flowed',
     ("text", "plain", [("charset", "utf-8"), ("format", "flowed")])),
    ("TEXT/HTML;CHARSET=ISO-8859-1", ("TEXT", "HTML", [("CHARSET", "ISO-8859-1")])),
    (('application/x-stuff; title*0*=us-ascii\'en\'This%20is%20;title*1*=%2A%2A%2Afun%2A%2A%2A;'
     ' title*2="isn\'t it!"'),
     ("application", "x-stuff", [("title*", ("us-ascii'en'This%20is%20%2A%2A%2Afun%2A%2A%2A"
                                             "isn't it!"))])),
    ("message/external-body; access-type=URL; URL*0=\"ftp://\"; URL*1=\"cs.utk.edu/pub\"",
     ("message", "external-body", [("access-type", "URL"), ("URL", "ftp://cs.utk.edu/pub")])),
    ("text/plain; broken; =x; charset=utf-8; name=\"unterminated",
     ("text", "plain", [("charset", "utf-8"), ("name", "unterminated")])),
    ("/plain", ("TEXT", "PLAIN", [("CHARSET", "US-ASCII")])),
    ("text/plain;\x01\x00 charset=\x7f\x02 ; a=\"\\", ("text", "plain", [("a", "")])),
    ('text/plain; a="x\\"y\r\n z"; b=(c)d', ("text", "plain", [("a", 'x"y z'), ("b", "d")])),
    ("(only a comment", ("TEXT", "PLAIN", [("CHARSET", "US-ASCII")])),
])
def test_media_type_parsing(value, expected):
    assert mime.parse_media_type(value, ("TEXT", "PLAIN")) == expected


def test_decoding_is_lenient():
    part = parse_message(crlf("Content-Transfer-Encoding: base64\n\naGVs!bG8g\nd29y*bGQ\n"))
    assert mime.decoded_body(part) == b"hello world"
    part = parse_message(crlf("Content-Transfer-Encoding: BASE64\n\naGVsbG8gd\n"))
    assert mime.decoded_body(part) == b"hello "
    part = parse_message(crlf("Content-Transfer-Encoding: x-uuencode\n\nbegin 644 a\n"))
    with pytest.raises(mime.UnknownEncoding):
        mime.decoded_body(part)


def nested_multiparts(depth):
    head = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(depth))
    tail = "".join(f"\n--b{i}--" for i in reversed(range(depth)))
    return crlf(head + "Content-Type: text/plain\n\ncore" + tail + "\n")


def test_depth_bound_makes_an_opaque_leaf():
    root = parse_message(nested_multiparts(mime.MAX_DEPTH + 5))
    depth, part = 0, root
    while part.children:
        part, depth = part.children[0], depth + 1
    assert depth == mime.MAX_DEPTH
    assert shape(part) == "application/octet-stream"
    assert part.body().startswith(b"--b20\r\n")


def test_depth_inside_the_bound_is_kept():
    root = parse_message(nested_multiparts(mime.MAX_DEPTH))
    assert find_part(root, [1] * mime.MAX_DEPTH).body() == b"core"


def test_message_rfc822_nesting_is_bounded():
    message = b"Subject: core\r\n\r\ncore\r\n"
    for _ in range(mime.MAX_DEPTH * 3):
        message = b"Content-Type: message/rfc822\r\n\r\n" + message
    root = parse_message(message)
    assert sum(1 for _ in root.walk()) == mime.MAX_DEPTH + 1


def test_part_count_bound_keeps_the_rest_as_one_leaf():
    count = mime.MAX_PARTS + 50
    body = "".join(f"--p\nContent-Type: text/plain\n\npart {i}\n" for i in range(count))
    root = parse_message(crlf(f"Content-Type: multipart/mixed; boundary=p\n\n{body}--p--\n"))
    assert len(root.children) == mime.MAX_PARTS
    last = root.children[-1]
    assert shape(last) == "application/octet-stream"
    assert last.body().endswith(f"part {count - 1}\r\n--p--\r\n".encode())
    assert sum(1 for _ in root.walk()) == mime.MAX_PARTS + 1


def test_huge_header_reads_only_the_bound():
    filler = b"X-Filler: " + b"y" * 1000 + b"\r\n"
    header = filler * (mime.MAX_HEADER // len(filler) + 10) + b"Subject: late\r\n"
    root = parse_message(header + b"\r\nbody")
    assert root.header.get("subject") is None
    assert root.body() == b"body"
    assert len(root.header.fields) <= mime.MAX_HEADER // len(filler) + 1


mime_noise = st.lists(st.sampled_from([
    b"\r\n", b"--a", b"--a--", b"--b", b"Content-Type: multipart/mixed; boundary=a\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain\r\n", b"Content-Transfer-Encoding: base64\r\n", b" folded",
    b"x", b"\xff", b":", b";", b'"', b"(", b"*0*=", b"\n",
]), max_size=60).map(b"".join)


@settings(max_examples=300)
@given(mime_noise | st.binary(max_size=300))
def test_any_bytes_parse_without_error_and_offsets_stay_inside(data):
    root = parse_message(data)
    parts = list(root.walk())
    assert len(parts) <= mime.MAX_PARTS + 1
    for part in parts:
        assert 0 <= part.start <= part.body_start <= part.end <= len(data)
        assert part.lines() >= 0
        try:
            mime.decoded_body(part)
        except mime.UnknownEncoding:
            pass


structured = st.text(alphabet=st.sampled_from(
    list('()<>@,;:\\"/[]?=*\' \t\r\n') + ["\x00", "\x01", "\x7f", "é", "a", "Z", "0", "%"]),
    max_size=60) | st.text(max_size=60)


@settings(max_examples=500)
@given(structured)
def test_structured_values_always_tokenize(value):
    tokens = mime.tokenize(value, comments=True)
    assert all(kind in ("atom", "quoted", "special", "comment") for kind, _ in tokens)
    media_type, subtype, params = mime.parse_media_type(value, ("TEXT", "PLAIN"))
    assert media_type and subtype and all(isinstance(v, str) for _, v in params)


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_encoded_words_always_decode(value):
    assert isinstance(mime.decode_words(value), str)
    assert isinstance(mime.decode_words(b"=?utf-8?b?" + value + b"?= =?x?q?" + value + b"?="), str)
