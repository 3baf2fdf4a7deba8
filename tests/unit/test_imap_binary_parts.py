"""APPEND's binary parts stored as base64 (RFC 3516 4.3); everything else left as sent."""

from mailforge.protocols.imap.binary_parts import without_binary_parts
from mailforge.protocols.imap.fetch import section_content
from mailforge.protocols.imap.mime import decoded_body, find_part, parse_message

RAW = bytes(range(256)) * 2
MULTIPART = (b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
             b"Content-Type: text/plain\r\n\r\nhello\r\n--b\r\n"
             b"Content-Type: application/octet-stream\r\ncontent-transfer-encoding: BINARY\r\n\r\n"
             + RAW + b"\r\n--b--\r\n")


def test_binary_part_becomes_base64_and_decodes_to_the_same_octets():
    stored = without_binary_parts(MULTIPART)
    root = parse_message(stored)
    part = find_part(root, [2])
    assert part.encoding() == "base64"
    assert decoded_body(part) == RAW
    assert max(len(line) for line in part.body().split(b"\r\n")) <= 76
    assert all(byte < 0x80 and byte != 0 for byte in part.body())
    assert section_content(root, "1") == b"hello"


def test_messages_without_binary_parts_are_untouched():
    data = b"Subject: binary\r\nContent-Transfer-Encoding: 8bit\r\n\r\nbinary \xe4\r\n"
    assert without_binary_parts(data) is data
