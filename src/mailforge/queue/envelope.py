"""The queue envelope: who a queued message is from and for, and its retry state.

On disk it is a msgpack stream of three records: a header naming the format and its version,
the fields as a map, and an END record carrying the CRC-32 of the map's bytes. A file cut
short by a crash, or damaged later, fails to decode instead of yielding half an envelope
(STYLE.md 14, after Postfix's mail_stream.c end record).
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

import msgpack

from .dsn import UTF8, DSNParamError, utf8_addr_decode

FORMAT_NAME = "mailforge-envelope"
FORMAT_VERSION = 7
# Version 2 (before outbound delivery) lacks the DSN and per-recipient fields, version 3 the
# `sign` flag, version 4 `requiretls`, version 5 `forwarded` and `seal_domain`; all still decode.
# Up to version 6 a utf-8 ORCPT kept the client's \x{HEX} (RFC 6533 3) undecoded; it is
# decoded as such an envelope is read, as later ones hold it.
READABLE_VERSIONS = (2, 3, 4, 5, 6, 7)
_UTF8_ORCPT_DECODED = 7
END_MARKER = "END"


class EnvelopeError(Exception):
    """An envelope file that cannot be trusted: truncated, corrupt or of an unknown version."""


@dataclass
class Envelope:
    id: str
    sender: str  # "" for the null sender <>
    recipients: list[str]
    received_at: float
    client_ip: str
    helo: str
    size: int = 0
    # The message file starts with `Return-Path:` (and `Delivered-To:` naming `delivered_to`,
    # when there is one recipient) in this many bytes; see spool.py.
    prefix_size: int = 0
    delivered_to: str = ""
    smtputf8: bool = False
    body_8bit: bool = False
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""
    # RFC 3461 DSN request made at receipt: ENVID and RET for the message, NOTIFY and ORCPT
    # per recipient (absent: the defaults, FAILURE and DELAY notices, no original recipient).
    envid: str = ""
    ret: str = ""  # "FULL", "HDRS" or "" (unspecified: the whole message is returned)
    notify: dict[str, str] = dataclasses.field(default_factory=dict)
    orcpt: dict[str, str] = dataclasses.field(default_factory=dict)
    # The last temporary failure of each recipient still queued (for `queue show` and DSNs).
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    delay_notified: bool = False  # a delay notice went out; one per message is enough
    # Ours to DKIM-sign when relayed (mailauth/signing.py): submitted by an authenticated
    # user, or written by the server itself (a DSN).
    sign: bool = False
    # The sender's DMARC policy asked for quarantine: local copies go to the Junk folder, and
    # so do the copies of the mailboxes' owner nodes (relay.py passes it on to them).
    junk: bool = False
    # RFC 8689 MAIL FROM REQUIRETLS: relayed only over validated TLS to a REQUIRETLS server.
    requiretls: bool = False
    # Remote recipients an alias forwards to → that alias, the recipient the client named
    # (queue/forwarding.py); an alias found here has been expanded once and is not again.
    forwarded: dict[str, str] = dataclasses.field(default_factory=dict)
    # The domain of the forwarding alias whose DKIM key ARC-seals the relayed message
    # (mailauth/sealing.py): set for mail from outside, "" for mail ours to DKIM-sign.
    seal_domain: str = ""


# Fields a version-2 envelope may hold: everything before the DSN fields.
_V2_FIELDS = frozenset(("id", "sender", "recipients", "received_at", "client_ip", "helo", "size",
                        "prefix_size", "delivered_to", "smtputf8", "body_8bit", "attempts",
                        "next_attempt", "last_error"))
_FIELDS = {f.name: f for f in dataclasses.fields(Envelope)}
_REQUIRED = {name for name, f in _FIELDS.items()
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
# The types each field may hold once decoded; msgpack gives int where a float was whole.
_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "sender": (str,), "recipients": (list,), "received_at": (float, int),
    "client_ip": (str,), "helo": (str,), "size": (int,), "prefix_size": (int,),
    "delivered_to": (str,), "smtputf8": (bool,),
    "body_8bit": (bool,), "attempts": (int,), "next_attempt": (float, int), "last_error": (str,),
    "envid": (str,), "ret": (str,), "notify": (dict,), "orcpt": (dict,), "errors": (dict,),
    "delay_notified": (bool,), "sign": (bool,), "junk": (bool,), "requiretls": (bool,),
    "forwarded": (dict,), "seal_domain": (str,),
}
_STRING_MAPS = ("notify", "orcpt", "errors", "forwarded")


def encode(env: Envelope) -> bytes:
    body = msgpack.packb(dataclasses.asdict(env), use_bin_type=True)
    return b"".join((
        msgpack.packb([FORMAT_NAME, FORMAT_VERSION]),
        body,
        msgpack.packb([END_MARKER, len(body), zlib.crc32(body)]),
    ))


def decode(data: bytes) -> Envelope:
    records = _records(data)
    if len(records) != 3:
        raise EnvelopeError(f"expected 3 records, found {len(records)}")
    (header, _), (fields, body), (end, _) = records
    if (not isinstance(header, list) or len(header) != 2 or header[0] != FORMAT_NAME
            or header[1] not in READABLE_VERSIONS):
        raise EnvelopeError(f"unknown envelope format {header!r}")
    if end != [END_MARKER, len(body), zlib.crc32(body)]:
        raise EnvelopeError("END record missing or does not match the fields")
    if header[1] == 2 and isinstance(fields, dict) and not set(fields) <= _V2_FIELDS:
        raise EnvelopeError("a version 2 envelope with fields of a later version")
    env = _from_fields(fields)
    if header[1] < _UTF8_ORCPT_DECODED:
        env.orcpt = {rcpt: _decoded_orcpt(orcpt) for rcpt, orcpt in env.orcpt.items()}
    return env


def _decoded_orcpt(orcpt: str) -> str:
    """A utf-8 ORCPT as an earlier version kept it (its \\x{HEX} as the client wrote them) as
    this one keeps it; one that does not decode (a lone backslash) is left as it was."""
    addr_type, _, address = orcpt.partition(";")
    if addr_type != UTF8:
        return orcpt
    try:
        return f"{addr_type};{utf8_addr_decode(address)}"
    except DSNParamError:
        return orcpt


def _records(data: bytes) -> list[tuple[object, bytes]]:
    """Each top-level object with the exact bytes it was decoded from."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    records = []
    start = 0
    try:
        for obj in unpacker:
            end = unpacker.tell()
            records.append((obj, data[start:end]))
            start = end
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as exc:
        raise EnvelopeError(f"not msgpack: {exc}") from None
    if start != len(data):
        raise EnvelopeError("truncated envelope")
    return records


def _from_fields(fields: object) -> Envelope:
    if not isinstance(fields, dict):
        raise EnvelopeError("envelope fields are not a map")
    unknown = set(fields) - set(_FIELDS)
    missing = _REQUIRED - set(fields)
    if unknown or missing:
        raise EnvelopeError(f"unknown fields {sorted(unknown)}, missing {sorted(missing)}")
    for name, value in fields.items():
        if not isinstance(value, _TYPES[name]) or (isinstance(value, bool) and bool not in _TYPES[name]):
            raise EnvelopeError(f"field {name} has the wrong type")
    if not all(isinstance(r, str) for r in fields["recipients"]):
        raise EnvelopeError("recipients must be strings")
    for name in _STRING_MAPS:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in fields.get(name, {}).items()):
            raise EnvelopeError(f"field {name} must map strings to strings")
    env = Envelope(**fields)
    env.received_at = float(env.received_at)
    env.next_attempt = float(env.next_attempt)
    return env
