"""CRAM-MD5 from stored state, against the standard library's HMAC-MD5, both implementations."""

import hmac
import re

import pytest

from mailforge.auth.passwords import cram_md5_state, hash_cram_md5

# RFC 2195 section 2's example.
RFC_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"
RFC_DIGEST = b"b913a602c7eda7a495b4e6e7334d3890"


def test_rfc_2195_example(impl):
    state = impl.crammd5.cram_state(b"tanstaaftanstaaf")
    assert impl.crammd5.cram_verify(state, RFC_CHALLENGE, RFC_DIGEST)
    assert impl.crammd5.cram_verify(state, RFC_CHALLENGE, RFC_DIGEST.upper())
    assert not impl.crammd5.cram_verify(state, RFC_CHALLENGE + b" ", RFC_DIGEST)


@pytest.mark.parametrize("password", [b"", b"p", b"x" * 64, b"y" * 65, "pässwörd".encode()])
@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 200])
def test_matches_hmac_md5(impl, password, size):
    challenge = bytes(range(256))[:size] * 1
    state = impl.crammd5.cram_state(password)
    digest = hmac.new(password, challenge, "md5").hexdigest().encode()
    assert impl.crammd5.cram_verify(state, challenge, digest)
    assert not impl.crammd5.cram_verify(impl.crammd5.cram_state(password + b"!"), challenge, digest)


@pytest.mark.parametrize("response", [b"", b"b913", RFC_DIGEST + b"00", b"z" * 32,
                                      "ü".encode() * 16, RFC_DIGEST[:-1]])
def test_malformed_responses_fail(impl, response):
    state = impl.crammd5.cram_state(b"tanstaaftanstaaf")
    assert not impl.crammd5.cram_verify(state, RFC_CHALLENGE, response)


def test_state_must_be_32_bytes(impl):
    with pytest.raises(ValueError):
        impl.crammd5.cram_verify(b"short", RFC_CHALLENGE, RFC_DIGEST)


def test_challenges_are_unpredictable(impl):
    first, second = impl.crammd5.cram_challenge("mx.test"), impl.crammd5.cram_challenge("mx.test")
    assert re.fullmatch(rb"<\d+\.\d+@mx\.test>", first) and first != second


def test_both_store_the_same_state():
    from mailforge.speedups import crammd5 as twin
    ext = pytest.importorskip("mailforge.speedups._crammd5")
    for password in (b"", b"secret", b"z" * 100):
        assert ext.cram_state(password) == twin.cram_state(password)


def test_password_scheme_round_trip():
    stored = hash_cram_md5("tanstaaftanstaaf")
    assert re.fullmatch(r"\$cram-md5\$[0-9a-f]{64}", stored)
    from mailforge.speedups import cram_verify
    assert cram_verify(cram_md5_state(stored), RFC_CHALLENGE, RFC_DIGEST)
    for bad in ("$scrypt$x", "$cram-md5$00", "cram-md5$" + "0" * 64):
        with pytest.raises(ValueError):
            cram_md5_state(bad)
