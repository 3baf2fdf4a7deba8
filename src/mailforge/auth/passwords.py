"""Salted scrypt password hashes in a self-describing string:

    $scrypt$ln=14,r=8,p=1$<base64 salt>$<base64 key>

(the layout passlib uses), so that the parameters can be raised later without breaking the
hashes already stored: verification reads them back from the string.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
# Cost of new hashes: N = 2**14, r = 8 takes 16 MiB and tens of milliseconds, the interactive
# login setting of the scrypt paper. Module globals, read at call time, so tests can lower them.
SCRYPT_LOG2_N = 14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
# Upper bounds on parameters read back from a stored hash: a corrupt or hostile value must not
# make one login attempt eat gigabytes or minutes.
MAX_LOG2_N = 20
MAX_R = 32
MAX_P = 16
MAX_MEMORY = 1 << 30


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    log2_n, r, p = SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P
    key = _scrypt(password, salt, log2_n, r, p, KEY_BYTES)
    return f"${SCHEME}$ln={log2_n},r={r},p={p}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches `stored`; False, never an exception, for a malformed value."""
    try:
        log2_n, r, p, salt, expected = _parse(stored)
        key = _scrypt(password, salt, log2_n, r, p, len(expected))
    except (ValueError, TypeError, binascii.Error, MemoryError):
        return False
    return hmac.compare_digest(key, expected)


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << log2_n, r=r, p=p,
                          maxmem=MAX_MEMORY, dklen=dklen)


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    empty, scheme, params, salt, key = stored.split("$")
    if empty or scheme != SCHEME:
        raise ValueError("not an scrypt hash")
    values = dict(item.split("=", 1) for item in params.split(","))
    if values.keys() != {"ln", "r", "p"}:
        raise ValueError("scrypt parameters missing")
    log2_n, r, p = int(values["ln"]), int(values["r"]), int(values["p"])
    if not (1 <= log2_n <= MAX_LOG2_N and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        raise ValueError("scrypt parameters out of range")
    salt_bytes, key_bytes = _unb64(salt), _unb64(key)
    if not salt_bytes or not key_bytes:
        raise ValueError("empty salt or key")
    return log2_n, r, p, salt_bytes, key_bytes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


# --- CRAM-MD5 ---------------------------------------------------------------------------------
# CRAM-MD5 needs HMAC-MD5 keyed by the password, so a salted hash cannot serve it. What is kept
# instead is the MD5 state after the key's inner and outer pad blocks (DESIGN.md), as hex:
#     $cram-md5$<64 hex digits>
# the payload of Dovecot's {CRAM-MD5} scheme, so either can import the other's value.
CRAM_SCHEME = "cram-md5"


def hash_cram_md5(password: str) -> str:
    from ..speedups import cram_state  # the speedups import a compiled module or log a warning

    return f"${CRAM_SCHEME}${cram_state(password.encode('utf-8')).hex()}"


def cram_md5_state(stored: str) -> bytes:
    """The 32-byte state in a `hash_cram_md5` value; ValueError if it is not one."""
    empty, scheme, payload = stored.split("$")
    if empty or scheme != CRAM_SCHEME or len(payload) != 64:
        raise ValueError("not a CRAM-MD5 state")
    return bytes.fromhex(payload)
