"""DKIM's RSA signatures made by OpenSSL are the bytes dkimpy's own arithmetic makes."""

from __future__ import annotations

import base64
import hashlib

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailforge.mailauth import signing

MESSAGE = (b"From: a@example.test\r\nTo: b@example.org\r\nSubject: hello\r\n"
           b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nbody\r\n")


def pem_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def test_openssl_signature_is_dkimpys_signature():
    parsed = dkim.crypto.parse_pem_private_key(pem_key())
    for name in ("sha256", "sha1"):
        digest = dkim.HashThrough(hashlib.new(name))
        digest.update(b"the canonicalized headers")
        assert signing.openssl_rsa_sign(digest, parsed) == \
            dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, parsed)


def test_a_message_signed_through_openssl_verifies():
    pem = pem_key()
    public = serialization.load_pem_private_key(pem, None).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    assert dkim.RSASSA_PKCS1_v1_5_sign is signing.openssl_rsa_sign
    signed = dkim.sign(MESSAGE, b"s1", b"example.test", pem, linesep=b"\r\n") + MESSAGE
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)
