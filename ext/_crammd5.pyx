# cython: boundscheck=False, wraparound=False, cdivision=True
"""CRAM-MD5 from stored HMAC-MD5 state: the compiled twin of mailforge.speedups.crammd5,
whose docstring explains the stored state. MD5 (RFC 1321) is done here because no library
call resumes it from a given state."""

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy, memset

import hashlib
import secrets
import time

__all__ = ["cram_state", "cram_verify", "cram_challenge", "STATE_BYTES"]

STATE_BYTES = 32
cdef enum:
    BLOCK = 64

cdef uint32_t INIT[4]
INIT[:] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476]
cdef uint32_t K[64]
K[:] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391]
cdef unsigned char SHIFTS[64]
SHIFTS[:] = [7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4 + [6, 10, 15, 21] * 4


cdef inline uint32_t load_le(const unsigned char *p) noexcept nogil:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline void store_le(unsigned char *p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF
    p[2] = (v >> 16) & 0xFF
    p[3] = v >> 24


cdef void md5_compress(uint32_t state[4], const unsigned char *block) noexcept nogil:
    cdef uint32_t words[16]
    cdef uint32_t a = state[0], b = state[1], c = state[2], d = state[3], mixed, shift
    cdef int step, word
    for step in range(16):
        words[step] = load_le(block + 4 * step)
    for step in range(64):
        if step < 16:
            mixed, word = (b & c) | (~b & d), step
        elif step < 32:
            mixed, word = (d & b) | (~d & c), (5 * step + 1) % 16
        elif step < 48:
            mixed, word = b ^ c ^ d, (3 * step + 5) % 16
        else:
            mixed, word = c ^ (b | ~d), (7 * step) % 16
        mixed = mixed + a + K[step] + words[word]
        shift = SHIFTS[step]
        a, d, c = d, c, b
        b = b + ((mixed << shift) | (mixed >> (32 - shift)))
    state[0] += a
    state[1] += b
    state[2] += c
    state[3] += d


cdef void md5_finish(uint32_t state[4], const unsigned char *data, Py_ssize_t n,
                     unsigned char digest[16]) noexcept nogil:
    """MD5 digest of one key block (already in `state`) followed by data[:n]."""
    cdef unsigned char tail[2 * BLOCK]
    cdef uint64_t bits = 8 * <uint64_t>(BLOCK + n)
    cdef Py_ssize_t whole = n - n % BLOCK, rest = n % BLOCK, size, i
    i = 0
    while i < whole:
        md5_compress(state, data + i)
        i += BLOCK
    size = BLOCK if rest < 56 else 2 * BLOCK
    memset(tail, 0, size)
    memcpy(tail, data + whole, rest)
    tail[rest] = 0x80
    for i in range(8):
        tail[size - 8 + i] = (bits >> (8 * i)) & 0xFF
    md5_compress(state, tail)
    if size == 2 * BLOCK:
        md5_compress(state, tail + BLOCK)
    for i in range(4):
        store_le(digest + 4 * i, state[i])


def cram_state(bytes password):
    if len(password) > BLOCK:
        password = hashlib.md5(password).digest()
    cdef unsigned char inner[BLOCK]
    cdef unsigned char outer[BLOCK]
    cdef unsigned char out[32]
    cdef uint32_t istate[4]
    cdef uint32_t ostate[4]
    cdef const unsigned char *key = password
    cdef Py_ssize_t i, n = len(password)
    for i in range(BLOCK):
        inner[i] = (key[i] if i < n else 0) ^ 0x36
        outer[i] = (key[i] if i < n else 0) ^ 0x5C
    memcpy(istate, INIT, sizeof(INIT))
    memcpy(ostate, INIT, sizeof(INIT))
    md5_compress(istate, inner)
    md5_compress(ostate, outer)
    for i in range(4):
        store_le(out + 4 * i, istate[i])
        store_le(out + 16 + 4 * i, ostate[i])
    return out[:32]


def cram_verify(bytes state, bytes challenge, bytes response):
    if len(state) != 32:
        raise ValueError("CRAM-MD5 state must be 32 bytes")
    cdef unsigned char claimed[16]
    if not _unhex(response, claimed):
        return False
    cdef const unsigned char *s = state
    cdef uint32_t istate[4]
    cdef uint32_t ostate[4]
    cdef unsigned char inner[16]
    cdef unsigned char mac[16]
    cdef unsigned char diff = 0
    cdef int i
    for i in range(4):
        istate[i] = load_le(s + 4 * i)
        ostate[i] = load_le(s + 16 + 4 * i)
    md5_finish(istate, challenge, len(challenge), inner)
    md5_finish(ostate, inner, 16, mac)
    for i in range(16):  # every byte, whatever differs: constant time
        diff |= mac[i] ^ claimed[i]
    return diff == 0


cdef bint _unhex(bytes text, unsigned char out[16]):
    """The twin's bytes.fromhex, for exactly 16 bytes: True if `text` was 32 hex digits,
    with whitespace between bytes allowed as fromhex allows it."""
    cdef const unsigned char *p = text
    cdef Py_ssize_t n = len(text), pos = 0
    cdef int count = 0, high, low
    while True:
        while pos < n and _is_space(p[pos]):
            pos += 1
        if pos == n:
            return count == 16
        if count == 16 or pos + 1 >= n:
            return False
        high, low = _hex_value(p[pos]), _hex_value(p[pos + 1])
        if high < 0 or low < 0:
            return False
        out[count] = (high << 4) | low
        count += 1
        pos += 2


cdef inline bint _is_space(unsigned char c) noexcept nogil:
    return c == 0x20 or 0x09 <= c <= 0x0D


cdef inline int _hex_value(unsigned char c) noexcept nogil:
    if 0x30 <= c <= 0x39:
        return c - 0x30
    if 0x61 <= c <= 0x66:
        return c - 0x61 + 10
    if 0x41 <= c <= 0x46:
        return c - 0x41 + 10
    return -1


def cram_challenge(str hostname):
    return f"<{secrets.randbits(64)}.{int(time.time())}@{hostname}>".encode()
