"""CRAM-MD5 (RFC 2195) from stored HMAC-MD5 state: the pure-Python twin of `_crammd5`.

The account database keeps, instead of the password, the MD5 state after the HMAC key's
inner and outer pad blocks (Dovecot's CRAM-MD5 scheme: 8 little-endian 32-bit words). That
state is enough to finish HMAC-MD5 over any challenge, and is what `cram_state` returns.
hashlib cannot resume MD5 from a given state, hence the MD5 compression function below.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import struct
import time

__all__ = ["cram_state", "cram_verify", "cram_challenge", "STATE_BYTES"]

STATE_BYTES = 32
BLOCK = 64
_MASK = 0xFFFFFFFF
_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
_SHIFTS = [7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4 + [6, 10, 15, 21] * 4
_K = [int(abs(math.sin(i + 1)) * 2**32) & _MASK for i in range(64)]  # RFC 1321 3.4
# Index of the message word each of the 64 steps uses (RFC 1321 3.4, rounds 1-4).
_WORD = [i if i < 16 else (5 * i + 1) % 16 if i < 32 else (3 * i + 5) % 16 if i < 48
         else (7 * i) % 16 for i in range(64)]


def cram_state(password: bytes) -> bytes:
    """The 32 bytes to store for `password` (HMAC-MD5 key, RFC 2104)."""
    if len(password) > BLOCK:
        password = hashlib.md5(password).digest()
    key = password.ljust(BLOCK, b"\0")
    inner = _compress(_INIT, bytes(b ^ 0x36 for b in key))
    outer = _compress(_INIT, bytes(b ^ 0x5C for b in key))
    return struct.pack("<8I", *inner, *outer)


def cram_verify(state: bytes, challenge: bytes, response: bytes) -> bool:
    """True if `response` (the client's hex digest) is HMAC-MD5(password, challenge)."""
    if len(state) != STATE_BYTES:
        raise ValueError("CRAM-MD5 state must be 32 bytes")
    try:
        claimed = bytes.fromhex(response.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return False
    words = struct.unpack("<8I", state)
    inner = _finish(words[:4], challenge)
    return hmac.compare_digest(_finish(words[4:], inner), claimed)


def cram_challenge(hostname: str) -> bytes:
    """An unpredictable challenge in RFC 2195's <random.time@host> form."""
    return f"<{secrets.randbits(64)}.{int(time.time())}@{hostname}>".encode()


def _finish(state: tuple[int, ...], data: bytes) -> bytes:
    """MD5 digest of one key block (already in `state`) followed by `data`."""
    length = BLOCK + len(data)
    padded = data + b"\x80" + b"\0" * ((55 - length) % BLOCK) + struct.pack("<Q", 8 * length)
    for start in range(0, len(padded), BLOCK):
        state = _compress(state, padded[start:start + BLOCK])
    return struct.pack("<4I", *state)


def _compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    words = struct.unpack("<16I", block)
    a, b, c, d = state
    for step in range(64):
        if step < 16:
            mixed = (b & c) | (~b & d)
        elif step < 32:
            mixed = (d & b) | (~d & c)
        elif step < 48:
            mixed = b ^ c ^ d
        else:
            mixed = c ^ (b | ~d)
        mixed = (mixed + a + _K[step] + words[_WORD[step]]) & _MASK
        shift = _SHIFTS[step]
        a, d, c = d, c, b
        b = (b + ((mixed << shift) | (mixed >> (32 - shift)))) & _MASK
    return tuple((x + y) & _MASK for x, y in zip(state, (a, b, c, d)))
