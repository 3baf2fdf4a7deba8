"""DKIM signing (RFC 6376; Ed25519: RFC 8463) of the mail we send: what our users submit and
what the server writes itself (DSNs), marked `sign` in their envelopes.

Signing happens at relay time, in the delivery worker, not when SMTP accepts the message: the
SMTP workers keep streaming bodies into the queue untouched (the accept path pays nothing),
mail delivered locally is never signed at all, and the bytes signed are exactly the bytes
relayed (the queue file does not change after it; LF→CRLF and dot-stuffing are transport
only), so the signature stays valid. A retry signs again, at a cost of about a millisecond.

dkimpy computes RSA signatures with its own pure-Python modular arithmetic: about 23 ms of a
delivery worker's CPU per 2048-bit signature, which would cap a worker at ~40 signed messages a
second. Its one RSA signing function is replaced here by the same RSASSA-PKCS1-v1_5 signature
made by OpenSSL (through `cryptography`, ~1 ms); the scheme is deterministic, so the bytes are
the ones dkimpy would have made (tests/unit/test_dkim_openssl.py checks that).

The signing domain is the From: header's (what DMARC aligns with); with both an RSA and an
Ed25519 key the message gets both signatures (RFC 8463 5: verifiers that do not know Ed25519
still have the RSA one). relaxed/relaxed; From, To, Subject and Date are oversigned (listed once
more than present, so none can be added after signing without breaking the signature).
"""

from __future__ import annotations

import base64
import functools
import logging

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from .dmarc import from_domain
from .keys import DkimKey, KeyStore

log = logging.getLogger("mailforge.dkim")

OVERSIGNED = (b"from", b"to", b"subject", b"date")
CANONICALIZATION = (b"relaxed", b"relaxed")
SIGNATURE_ALGORITHM = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}
# dkimpy's verifier list of what SHOULD be signed (RFC 6376 5.4.1), our oversigned ones added.
SIGNED_HEADERS = frozenset(dkim.DKIM.SHOULD) | frozenset(OVERSIGNED)


class Signer:
    """The signing keys of every domain, loaded once (a worker loads them at start, so a
    rotation takes effect at the next reload)."""

    def __init__(self, keys: KeyStore) -> None:
        self._keys: dict[str, list[tuple[DkimKey, bytes]]] = {}
        for key in keys.signing_keys():
            self._keys.setdefault(key.domain, []).append((key, _dkimpy_private_key(key)))

    def __bool__(self) -> bool:
        return bool(self._keys)

    def sign(self, message: bytes) -> bytes:
        """`message` (CRLF line ends) with its DKIM-Signature headers on top, or as it was when
        its From: domain has no key."""
        signer = dkim.DKIM(message, linesep=b"\r\n")
        domain = from_domain(signer.headers)
        keys = self._keys.get(domain, [])
        if not keys:
            return message
        include = signed_headers(signer.headers)
        signatures = []
        for key, private in keys:
            try:
                signatures.append(dkim.DKIM(message, linesep=b"\r\n").sign(
                    key.selector.encode(), key.domain.encode(), private,
                    canonicalize=CANONICALIZATION,
                    signature_algorithm=SIGNATURE_ALGORITHM[key.algorithm],
                    include_headers=include))
            except dkim.DKIMException as exc:
                log.warning("cannot DKIM-sign for %s with %s: %s", domain, key.selector, exc)
        return b"".join(signatures) + message


def signed_headers(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Each signed header once per occurrence, the oversigned ones once more."""
    present = [name.lower() for name, _ in headers if name.lower() in SIGNED_HEADERS]
    return present + list(OVERSIGNED)


def _dkimpy_private_key(key: DkimKey) -> bytes:
    """What dkimpy signs with: PEM for RSA, the base64 raw seed for Ed25519."""
    if key.algorithm == "ed25519":
        raw = key.private_key().private_bytes(serialization.Encoding.Raw,
                                              serialization.PrivateFormat.Raw,
                                              serialization.NoEncryption())
        return base64.b64encode(raw)
    return key.path.read_bytes()


_PREHASHED = {"sha256": utils.Prehashed(hashes.SHA256()), "sha1": utils.Prehashed(hashes.SHA1())}


def openssl_rsa_sign(digest: "dkim.HashThrough", private_key: dict[str, int]) -> bytes:
    """dkimpy's RSASSA_PKCS1_v1_5_sign(hash object, parsed key), done by OpenSSL."""
    key = _openssl_key(*(private_key[name] for name in _KEY_FIELDS))
    return key.sign(digest.digest(), padding.PKCS1v15(), _PREHASHED[digest.name])


_KEY_FIELDS = ("modulus", "publicExponent", "privateExponent", "prime1", "prime2", "exponent1",
               "exponent2", "coefficient")


@functools.lru_cache(maxsize=64)
def _openssl_key(n: int, e: int, d: int, p: int, q: int, dmp1: int, dmq1: int,
                 iqmp: int) -> rsa.RSAPrivateKey:
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp,
                                 rsa.RSAPublicNumbers(e, n)).private_key()


dkim.RSASSA_PKCS1_v1_5_sign = openssl_rsa_sign
