"""PROXY protocol header parser: whole, byte by byte, and every way a header can be wrong."""

from __future__ import annotations

import socket
import struct

import pytest

from mailforge.protocols.connection.proxy import (V2_SIGNATURE, ProxyError, ProxyHeader, parse,
                                                  v2_header)

TAIL = b"EHLO client\r\n"  # what the client sends after the header: never part of it


def v2(command: int = 1, family: int = 0x11, block: bytes = b"", length: int | None = None) -> bytes:
    size = len(block) if length is None else length
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", size) + block


def v2_inet(src: str, sport: int, dst: str = "10.0.0.1", dport: int = 25) -> bytes:
    return v2(block=socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport))


def v2_inet6(src: str, sport: int, tlvs: bytes = b"") -> bytes:
    addresses = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "2001:db8::25")
    return v2(family=0x21, block=addresses + struct.pack("!HH", sport, 25) + tlvs)


def byte_by_byte(header: bytes) -> tuple[ProxyHeader, int]:
    """Every proper prefix needs more; the whole header (with the client's bytes behind) parses."""
    for end in range(len(header)):
        assert parse(header[:end]) is None, header[:end]
    result = parse(header + TAIL)
    assert result is not None and result[1] == len(header)
    return result


VALID = [
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\r\n", ProxyHeader(1, ("192.0.2.7", 40000))),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n", ProxyHeader(1, ("2001:db8::7", 1))),
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 0 25\r\n", ProxyHeader(1, ("192.0.2.7", 0))),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None)),
    (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", ProxyHeader(1, None)),
    (v2_inet("198.51.100.9", 50123), ProxyHeader(2, ("198.51.100.9", 50123))),
    (v2_inet6("2001:db8::9", 443, tlvs=b"\x05\x00\x02ab"), ProxyHeader(2, ("2001:db8::9", 443))),
    # Our mark (TLV 0xE0) after another TLV, and one that runs past the header: no mark.
    (v2_inet6("2001:db8::9", 443, tlvs=b"\x05\x00\x02ab\xe0\x00\x00"),
     ProxyHeader(2, ("2001:db8::9", 443), client_counted=True)),
    (v2_inet6("2001:db8::9", 443, tlvs=b"\xe0\x00\x01"), ProxyHeader(2, ("2001:db8::9", 443))),
    (v2(command=0, family=0, block=b""), ProxyHeader(2, None)),           # LOCAL
    (v2(command=0, family=0x11, block=b"x" * 12), ProxyHeader(2, None)),  # LOCAL with a block
    (v2(family=0x00), ProxyHeader(2, None)),                              # PROXY, AF_UNSPEC
    (v2(family=0x31, block=b"\0" * 216), ProxyHeader(2, None)),           # AF_UNIX
]


@pytest.mark.parametrize(("header", "expected"), VALID)
def test_valid_headers_whole_and_byte_by_byte(header, expected):
    assert byte_by_byte(header) == (expected, len(header))


def test_longest_v1_line_is_accepted():
    header = (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
              b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
    assert len(header) == 104
    assert byte_by_byte(header)[0].source == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)


MALFORMED = [
    b"EHLO client\r\n",                               # no header at all
    b"\x16\x03\x01\x02\x00",                          # a TLS ClientHello
    b"PROXZ",
    b"proxy TCP4 192.0.2.7 10.0.0.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\n",           # LF only
    b"PROXY TCP4 192.0.2.7 10.0.0.1 1\r\n",
    b"PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n",        # two spaces
    b"PROXY TCP5 192.0.2.7 10.0.0.1 1 2\r\n",
    b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n",       # family mismatch
    b"PROXY TCP6 192.0.2.7 10.0.0.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.300 10.0.0.1 1 2\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 025 2\r\n",       # leading zero
    b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 2\r\n",
    b"PROXY TCP4 192.0.2.7 10.0.0.1 1 x\r\n",
    b"PROXY TCP4 \xff.0.2.7 10.0.0.1 1 2\r\n",
    b"PROXY " + b"A" * 101,                           # 107 bytes and no CRLF
    V2_SIGNATURE[:5] + b"X",
    V2_SIGNATURE + b"\x10\x11\x00\x0c",               # version 1 in a v2 signature
    V2_SIGNATURE + b"\x22",                           # command 2
    v2(family=0x41, block=b"\0" * 12),                # family 4
    v2(family=0x12, block=b"\0" * 12),                # datagram
    v2(family=0x13, block=b"\0" * 12),                # transport 3
    v2(family=0x11, block=b"\0" * 11),                # short INET block
    v2(family=0x21, block=b"\0" * 35),                # short INET6 block
    v2(length=0xFFFF),                                # too long to hold
]


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_headers_are_refused(data):
    with pytest.raises(ProxyError):
        parse(data)


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_headers_are_refused_when_fed_byte_by_byte(data):
    """Refused at the first byte that proves it, or at the end: never accepted."""
    with pytest.raises(ProxyError):
        for end in range(1, len(data) + 1):
            assert parse(data[:end]) is None


def test_a_stranger_is_refused_at_its_first_byte():
    with pytest.raises(ProxyError):
        parse(b"E")
    with pytest.raises(ProxyError):
        parse(b"\x16")


def test_nothing_yet_needs_more():
    assert parse(b"") is None


def test_memoryview_input():
    header = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\r\n"
    assert parse(memoryview(header + TAIL)) == (ProxyHeader(1, ("192.0.2.7", 40000)), len(header))


@pytest.mark.parametrize("client_counted", [False, True])
@pytest.mark.parametrize(("client", "owner"), [(("192.0.2.9", 40000), ("10.0.1.2", 110)),
                                               (("2001:db8::9", 40000), ("10.0.1.2", 110))])
def test_a_node_s_header_parses_back(client, owner, client_counted):
    header = v2_header(client, owner, client_counted)
    parsed, _ = byte_by_byte(header)
    address = client[0] if ":" in client[0] or ":" not in owner[0] else f"::ffff:{client[0]}"
    assert parsed == ProxyHeader(2, (address, client[1]), client_counted)
