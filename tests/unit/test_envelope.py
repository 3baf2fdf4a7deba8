import dataclasses
import zlib

import msgpack
import pytest

from mailforge.queue.dsn import orcpt_param
from mailforge.queue.envelope import FORMAT_VERSION, Envelope, EnvelopeError, decode, encode


def make(**changes) -> Envelope:
    env = Envelope(id="0001-42-0", sender="alice@example.test",
                   recipients=["bob@example.test", "jörg@exämple.test"], received_at=1700000000.5,
                   client_ip="192.0.2.1", helo="client.example.test", size=1234, smtputf8=True)
    return dataclasses.replace(env, **changes)


@pytest.mark.parametrize("env", [make(), make(sender=""), make(attempts=3, next_attempt=17.0,
                                                                last_error="disk full")])
def test_round_trip(env):
    assert decode(encode(env)) == env


def test_whole_numbers_come_back_as_floats():
    env = decode(encode(make(received_at=5, next_attempt=0)))
    assert isinstance(env.received_at, float) and isinstance(env.next_attempt, float)


def test_every_truncation_is_rejected():
    data = encode(make())
    for cut in range(len(data)):
        with pytest.raises(EnvelopeError):
            decode(data[:cut])


def test_a_flipped_byte_in_the_fields_is_rejected():
    data = bytearray(encode(make()))
    where = data.index(b"alice")
    data[where] ^= 0x01
    with pytest.raises(EnvelopeError):
        decode(bytes(data))


def test_trailing_bytes_are_rejected():
    with pytest.raises(EnvelopeError):
        decode(encode(make()) + b"\x00")


def test_unknown_version_is_rejected():
    data = encode(make())
    header = msgpack.packb(["mailforge-envelope", FORMAT_VERSION])
    with pytest.raises(EnvelopeError, match="format"):
        decode(msgpack.packb(["mailforge-envelope", FORMAT_VERSION + 1]) + data[len(header):])


@pytest.mark.parametrize("data", [b"", b"\xc1", b"garbage that is not msgpack",
                                  msgpack.packb({"id": "x"})])
def test_garbage_is_rejected(data):
    with pytest.raises(EnvelopeError):
        decode(data)


def _with_fields(fields: dict) -> bytes:
    body = msgpack.packb(fields, use_bin_type=True)
    return (msgpack.packb(["mailforge-envelope", FORMAT_VERSION]) + body
            + msgpack.packb(["END", len(body), zlib.crc32(body)]))


@pytest.mark.parametrize("change", [{"size": "12"}, {"recipients": ["a@b", 3]},
                                    {"smtputf8": 1}, {"attempts": True}, {"extra": 1}])
def test_wrong_fields_are_rejected_even_with_a_valid_end_record(change):
    fields = dataclasses.asdict(make()) | change
    with pytest.raises(EnvelopeError):
        decode(_with_fields(fields))


def test_missing_field_is_rejected():
    fields = dataclasses.asdict(make())
    del fields["recipients"]
    with pytest.raises(EnvelopeError, match="missing"):
        decode(_with_fields(fields))


def test_dsn_fields_round_trip():
    env = make(envid="abc+2B", ret="HDRS", notify={"bob@example.test": "SUCCESS,FAILURE"},
               orcpt={"bob@example.test": "rfc822;bob@example.test"},
               errors={"bob@example.test": "451 4.3.0 try later"}, delay_notified=True)
    assert decode(encode(env)) == env


def test_version_2_envelopes_still_decode():
    fields = {"id": "0001-42-0", "sender": "a@example.test", "recipients": ["b@example.test"],
              "received_at": 1.0, "client_ip": "192.0.2.1", "helo": "h", "size": 3,
              "attempts": 1, "next_attempt": 2.0, "last_error": "x"}
    body = msgpack.packb(fields, use_bin_type=True)
    data = (msgpack.packb(["mailforge-envelope", 2]) + body
            + msgpack.packb(["END", len(body), zlib.crc32(body)]))
    env = decode(data)
    assert env.recipients == ["b@example.test"] and env.notify == {} and env.envid == ""
    assert not env.delay_notified and not env.sign and not env.junk and not env.requiretls
    # Written back, it is an envelope of the current version.
    header = msgpack.packb(["mailforge-envelope", FORMAT_VERSION])
    assert msgpack.unpackb(encode(env)[:len(header)]) == ["mailforge-envelope", FORMAT_VERSION]
    assert env.forwarded == {} and env.seal_domain == ""


def test_forwarded_targets_round_trip_and_must_be_strings():
    env = Envelope(id="0001-42-2", sender="a@remote.test", recipients=["friend@elsewhere.test"],
                   received_at=1.0, client_ip="192.0.2.1", helo="h",
                   forwarded={"friend@elsewhere.test": "fwd@example.test"},
                   seal_domain="example.test")
    assert decode(encode(env)) == env
    body = msgpack.packb({**dataclasses.asdict(env), "forwarded": {"x@y.test": 1}},
                         use_bin_type=True)
    data = (msgpack.packb(["mailforge-envelope", 6]) + body
            + msgpack.packb(["END", len(body), zlib.crc32(body)]))
    with pytest.raises(EnvelopeError, match="forwarded"):
        decode(data)


def test_version_3_envelopes_decode_unsigned_and_not_junk():
    env = Envelope(id="0001-42-1", sender="a@example.test", recipients=["b@example.test"],
                   received_at=1.0, client_ip="192.0.2.1", helo="h")
    fields = {k: v for k, v in dataclasses.asdict(env).items() if k not in ("sign", "junk")}
    body = msgpack.packb(fields, use_bin_type=True)
    data = (msgpack.packb(["mailforge-envelope", 3]) + body
            + msgpack.packb(["END", len(body), zlib.crc32(body)]))
    assert decode(data) == env


def test_version_2_with_later_fields_is_rejected():
    body = msgpack.packb({"id": "x", "sender": "", "recipients": [], "received_at": 1.0,
                          "client_ip": "", "helo": "", "envid": "e"}, use_bin_type=True)
    data = (msgpack.packb(["mailforge-envelope", 2]) + body
            + msgpack.packb(["END", len(body), zlib.crc32(body)]))
    with pytest.raises(EnvelopeError, match="version 2"):
        decode(data)


def test_string_maps_must_hold_strings():
    body = msgpack.packb({**dataclasses.asdict(make()), "notify": {"bob@example.test": 3}},
                         use_bin_type=True)
    data = (msgpack.packb(["mailforge-envelope", FORMAT_VERSION]) + body
            + msgpack.packb(["END", len(body), zlib.crc32(body)]))
    with pytest.raises(EnvelopeError, match="notify"):
        decode(data)


def test_a_utf8_orcpt_queued_by_version_6_is_read_decoded_as_later_ones_keep_it():
    """Up to version 6 an envelope kept a client's ORCPT=utf-8;j\\x{F6}rg@... with its
    \\x{HEX} (RFC 6533 3) as written; now it holds the address itself, which the relay and
    the reports encode again. A message queued before must not have its escapes escaped."""
    env = make(orcpt={"bob@example.test": "utf-8;j\\x{F6}rg\\x{2B}1@example.test",
                      "jörg@exämple.test": "rfc822;a\\x{41}@example.test"})
    body = msgpack.packb(dataclasses.asdict(env), use_bin_type=True)
    data = (msgpack.packb(["mailforge-envelope", 6]) + body
            + msgpack.packb(["END", len(body), zlib.crc32(body)]))
    queued = decode(data)
    assert queued.orcpt == {"bob@example.test": "utf-8;jörg+1@example.test",
                            "jörg@exämple.test": "rfc822;a\\x{41}@example.test"}
    # Relayed, it goes on as the client gave it, not as j\\x{5C}x{F6}rg...
    assert orcpt_param(queued.orcpt["bob@example.test"], smtputf8=False) == (
        "utf-8;j\\x{F6}rg\\x{2B}1@example.test")
    odd = make(orcpt={"bob@example.test": "utf-8;a\\b@example.test"})  # no \\x{HEX} there
    body = msgpack.packb(dataclasses.asdict(odd), use_bin_type=True)
    data = (msgpack.packb(["mailforge-envelope", 6]) + body
            + msgpack.packb(["END", len(body), zlib.crc32(body)]))
    assert decode(data).orcpt == odd.orcpt
    decoded = make(orcpt={"bob@example.test": "utf-8;a\\x{41}@example.test"})
    assert decode(encode(decoded)) == decoded  # the current version is taken as it is
