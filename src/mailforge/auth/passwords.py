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
import stringprep
import unicodedata
from dataclasses import dataclass

from ..errors import UsageError

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
# What logins cannot carry: NUL separates AUTH PLAIN's fields and is in no IMAP string; CR and
# LF end a POP3 PASS line and cannot be in an IMAP quoted string. A password holding one could
# be set, but not typed at every login.
UNTYPABLE = "\0\r\n"


def check_new_password(password: str) -> None:
    """UsageError for a password no mailbox or administrator may be given: empty, or holding
    one of UNTYPABLE. Any other Unicode is its owner's choice."""
    if not password:
        raise UsageError("empty password refused")
    if any(char in UNTYPABLE for char in password):
        raise UsageError("a password must not contain NUL, CR or LF: "
                         "logins (SMTP AUTH PLAIN, IMAP LOGIN, POP3 PASS) cannot carry them")


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


# --- SCRAM-SHA-256 ----------------------------------------------------------------------------
# SCRAM (RFC 5802, RFC 7677) lets the server check a login without holding anything a client
# could log in with: it keeps the salt, the iteration count, StoredKey = H(ClientKey) and
# ServerKey, in the layout of RFC 5803 (which Dovecot and OpenLDAP read too):
#     SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>
SCRAM_SCHEME = "SCRAM-SHA-256"
# PBKDF2 rounds for new records. The client pays them on every login, the server only here;
# RFC 7677 section 4 asks for at least 4096, and records below that are refused as corrupt.
SCRAM_ITERATIONS = 4096
SCRAM_MIN_ITERATIONS = 4096
# Read back from the store and sent to the client: bounded so a corrupt value cannot ask a
# client for hours of work.
SCRAM_MAX_ITERATIONS = 10_000_000


@dataclass(frozen=True)
class ScramRecord:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


def hash_scram_sha256(password: str) -> str:
    """The RFC 5803 string for `password`; ValueError if SASLprep refuses it (see saslprep)."""
    record = scram_record(password, secrets.token_bytes(SALT_BYTES), SCRAM_ITERATIONS)
    return (f"{SCRAM_SCHEME}${record.iterations}:{_b64pad(record.salt)}"
            f"${_b64pad(record.stored_key)}:{_b64pad(record.server_key)}")


def scram_record(password: str, salt: bytes, iterations: int) -> ScramRecord:
    """RFC 5802 section 3: SaltedPassword, then the two keys the server keeps."""
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    return ScramRecord(iterations, salt, hashlib.sha256(client_key).digest(), server_key)


def parse_scram_sha256(stored: str) -> ScramRecord:
    """The record in a `hash_scram_sha256` value; ValueError if it is not one."""
    try:
        scheme, salting, keys = stored.split("$")
        iterations, salt = salting.split(":")
        stored_key, server_key = keys.split(":")
        record = ScramRecord(int(iterations), base64.b64decode(salt, validate=True),
                             base64.b64decode(stored_key, validate=True),
                             base64.b64decode(server_key, validate=True))
    except binascii.Error:
        raise ValueError("bad base64 in SCRAM-SHA-256 record") from None
    if scheme != SCRAM_SCHEME or not record.salt:
        raise ValueError("not a SCRAM-SHA-256 record")
    if not SCRAM_MIN_ITERATIONS <= record.iterations <= SCRAM_MAX_ITERATIONS:
        raise ValueError("SCRAM-SHA-256 iteration count out of range")
    if len(record.stored_key) != KEY_BYTES or len(record.server_key) != KEY_BYTES:
        raise ValueError("SCRAM-SHA-256 keys must be 32 bytes")
    return record


def scram_decoy(key: bytes, username: str) -> ScramRecord:
    """A record for a user that has none (unknown, disabled, never set): the salt is fixed per
    name, so asking twice cannot tell a real user from a decoy, and unguessable without `key`,
    so it cannot be told from a real salt. Its keys come from a random password: it never
    authenticates."""
    salt = hmac.digest(key, b"scram-sha-256 decoy salt\0" + username.encode("utf-8"),
                       "sha256")[:SALT_BYTES]
    return ScramRecord(SCRAM_ITERATIONS, salt, secrets.token_bytes(KEY_BYTES),
                       secrets.token_bytes(KEY_BYTES))


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep for stored strings, which SCRAM clients apply to the password before
    PBKDF2: the server must make the same bytes. ValueError for a refused string."""
    mapped = "".join(" " if stringprep.in_table_c12(char) else char
                     for char in text if not stringprep.in_table_b1(char))
    result = unicodedata.normalize("NFKC", mapped)
    for char in result:
        if any(check(char) for check in _SASLPREP_PROHIBITED):
            raise ValueError(f"SASLprep: character U+{ord(char):04X} is not allowed")
    _check_bidi(result)
    return result


# RFC 4013 section 2.3 and 2.5 (A.1: unassigned code points, refused in stored strings).
_SASLPREP_PROHIBITED = (
    stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
    stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6,
    stringprep.in_table_c7, stringprep.in_table_c8, stringprep.in_table_c9,
    stringprep.in_table_a1,
)


def _check_bidi(text: str) -> None:
    """RFC 3454 section 6: right-to-left text must not mix in left-to-right, and must start
    and end with a right-to-left character."""
    if not any(stringprep.in_table_d1(char) for char in text):
        return
    if any(stringprep.in_table_d2(char) for char in text):
        raise ValueError("SASLprep: mixed right-to-left and left-to-right text")
    if not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1])):
        raise ValueError("SASLprep: right-to-left text must start and end right-to-left")


def _b64pad(data: bytes) -> str:
    # RFC 5803 values are standard, padded base64 (unlike the scrypt string above).
    return base64.b64encode(data).decode("ascii")
