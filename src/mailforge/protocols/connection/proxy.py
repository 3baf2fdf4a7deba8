"""PROXY protocol header parser, versions 1 (text) and 2 (binary), as HAProxy sends them.

A load balancer in front of mailforge opens each connection with one header naming the real
client; the server must read it before anything else (before the greeting, before a TLS
handshake). Pure: `parse` takes the bytes received so far and returns the header and how many
bytes it took, None while more are needed, or raises ProxyError as soon as the input cannot be
a header, so a client that is no load balancer is refused without waiting for a timeout.
Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
# Spec 2.1: the longest v1 line ("PROXY UNKNOWN" with two full IPv6 addresses), CRLF included.
V1_MAX = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16  # signature, version/command, family/transport, 2-byte length
# The v2 address block is at most 216 bytes (AF_UNIX); TLVs follow (TLS details, unique id).
# Far more than HAProxy sends, and a bound on what an unfinished header may make us hold.
V2_MAX_LENGTH = 2048
MAX_HEADER = V2_FIXED + V2_MAX_LENGTH
# A v2 LOCAL header: the sender speaks for itself (a node relaying to a mailbox's owner).
V2_LOCAL_HEADER = V2_SIGNATURE + bytes((0x20, 0x00, 0x00, 0x00))
# Our own TLV (spec 2.2.8 leaves 0xE0-0xEF to applications): the sender, a cluster node
# proxying a session to the mailbox's owner, counted the client against its per-IP cap
# already, so the owner must not count it again (README "Scaling out").
TLV_CLIENT_COUNTED = 0xE0
_TLV_HEAD = 3  # type, 2-byte length

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_STREAM = 0x1
# Address block sizes: source and destination address, source and destination port.
_V2_ADDRESS_SIZES = {_AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}


class ProxyError(ValueError):
    """Not a PROXY protocol header (or one this server must not accept)."""


@dataclass(frozen=True)
class ProxyHeader:
    version: int
    # The real client; None for v1 UNKNOWN, v2 LOCAL and address families without one
    # (health checks from the balancer itself): the connection's own address stands.
    source: tuple[str, int] | None
    client_counted: bool = False  # the TLV_CLIENT_COUNTED mark (v2 with a client only)


def parse(data: bytes | bytearray | memoryview) -> tuple[ProxyHeader, int] | None:
    """The header at the start of `data` and its length, or None if `data` is a prefix of one."""
    data = bytes(data[:MAX_HEADER])
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data)
    if data:
        raise ProxyError("not a PROXY protocol header")
    return None


def _parse_v1(data: bytes) -> tuple[ProxyHeader, int] | None:
    if not data.startswith(V1_PREFIX[: len(data)]):
        raise ProxyError("not a PROXY protocol header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX or b"\n" in data:
            raise ProxyError("PROXY v1 line too long or not ended by CRLF")
        return None
    return ProxyHeader(1, _v1_source(data[len(V1_PREFIX):end])), end + 2


def _v1_source(line: bytes) -> tuple[str, int] | None:
    fields = line.split(b" ")
    if fields[0] == b"UNKNOWN":
        return None  # spec 2.1: whatever follows UNKNOWN is ignored
    if len(fields) != 5 or fields[0] not in (b"TCP4", b"TCP6"):
        raise ProxyError("PROXY v1 expects TCP4|TCP6 src dst sport dport")
    version = 4 if fields[0] == b"TCP4" else 6
    try:
        source, destination = (ipaddress.ip_address(f.decode("ascii")) for f in fields[1:3])
    except (ValueError, UnicodeDecodeError):
        raise ProxyError("PROXY v1 address is not an IP address") from None
    if source.version != version or destination.version != version:
        raise ProxyError(f"PROXY v1 address is not TCP{version}")
    source_port, _ = (_v1_port(f) for f in fields[3:5])
    return str(source), source_port


def _v1_port(text: bytes) -> int:
    # Spec 2.1: decimal, no leading zero, 0-65535.
    if not text.isdigit() or len(text) > 5 or (text[:1] == b"0" and text != b"0") or int(text) > 65535:
        raise ProxyError(f"PROXY v1 port {text[:8]!r} is not a port")
    return int(text)


def _parse_v2(data: bytes) -> tuple[ProxyHeader, int] | None:
    if not data.startswith(V2_SIGNATURE[: len(data)]):
        raise ProxyError("not a PROXY protocol header")
    if len(data) < V2_FIXED:
        if len(data) > len(V2_SIGNATURE):
            _v2_check_version(data[12])
        return None
    version_command, family_transport, length = struct.unpack_from("!BBH", data, 12)
    command = _v2_check_version(version_command)
    if length > V2_MAX_LENGTH:
        raise ProxyError(f"PROXY v2 header of {length} bytes is too long")
    total = V2_FIXED + length
    if len(data) < total:
        return None
    if command == _V2_LOCAL:
        return ProxyHeader(2, None), total
    block = data[V2_FIXED:total]
    source = _v2_source(family_transport, block)
    if source is None:
        return ProxyHeader(2, None), total
    tlvs = block[_V2_ADDRESS_SIZES[family_transport >> 4]:]
    return ProxyHeader(2, source, TLV_CLIENT_COUNTED in _tlv_types(tlvs)), total


def _v2_check_version(version_command: int) -> int:
    if version_command >> 4 != 2:
        raise ProxyError("PROXY v2 header of an unknown version")
    command = version_command & 0xF
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyError("PROXY v2 header with an unknown command")
    return command


def _v2_source(family_transport: int, block: bytes) -> tuple[str, int] | None:
    family, transport = family_transport >> 4, family_transport & 0xF
    if family not in (_AF_UNSPEC, *_V2_ADDRESS_SIZES) or transport > 2:
        raise ProxyError("PROXY v2 header with an unknown address family")
    if family == _AF_UNSPEC:
        return None  # spec 2.2: the receiver uses the connection's own addresses
    if transport != _STREAM:
        raise ProxyError("PROXY v2 header for a datagram connection")
    if len(block) < _V2_ADDRESS_SIZES[family]:
        raise ProxyError("PROXY v2 address block is too short")
    if family == _AF_UNIX:
        return None  # no IP address to apply policy to
    size = 4 if family == _AF_INET else 16
    (port,) = struct.unpack_from("!H", block, 2 * size)
    return str(ipaddress.ip_address(block[:size])), port


def _tlv_types(data: bytes) -> set[int]:
    """The types of the TLVs after the address block. Types we do not know are skipped, as
    the spec asks; a TLV running past the header is no mark of ours and ends the walk."""
    types: set[int] = set()
    at = 0
    while at + _TLV_HEAD <= len(data):
        kind, length = data[at], struct.unpack_from("!H", data, at + 1)[0]
        at += _TLV_HEAD + length
        if at > len(data):
            break
        types.add(kind)
    return types


def v2_header(source: tuple[str, int], destination: tuple[str, int],
              client_counted: bool = False) -> bytes:
    """A v2 PROXY header for a TCP connection from `source` to `destination`, as a node sends
    it to the owner of a mailbox whose session it proxies (protocols/connection/upstream.py),
    `client_counted` marking it with TLV_CLIENT_COUNTED. An IPv4 address beside an IPv6 one
    travels IPv4-mapped: a header has one family."""
    addresses = [ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])]
    if addresses[0].version != addresses[1].version:
        addresses = [ipaddress.IPv6Address(f"::ffff:{a}") if a.version == 4 else a
                     for a in addresses]
    family = _AF_INET if addresses[0].version == 4 else _AF_INET6
    block = (addresses[0].packed + addresses[1].packed
             + struct.pack("!HH", source[1], destination[1]))
    if client_counted:
        block += struct.pack("!BH", TLV_CLIENT_COUNTED, 0)
    return (V2_SIGNATURE + struct.pack("!BBH", 0x20 | _V2_PROXY, family << 4 | _STREAM, len(block))
            + block)
