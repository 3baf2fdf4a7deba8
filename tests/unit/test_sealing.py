"""mailauth/sealing.py: when a forwarded message gets an ARC set, and when it goes as it was."""

import pytest

from mailforge.mailauth.keys import KeyStore
from mailforge.mailauth.sealing import Sealer

MESSAGE = (b"From: a@outside.test\r\nTo: fwd@example.test\r\nSubject: s\r\n\r\nbody\r\n")
VERDICT = b"Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=outside.test; arc=none\r\n"


@pytest.fixture
def sealer(tmp_path) -> Sealer:
    keys = KeyStore(tmp_path)
    keys.generate("example.test", "s1", "rsa")
    keys.generate("edonly.test", "e1", "ed25519")
    return Sealer(keys, "mx.example.test")


def test_sealed_with_our_verdict(sealer):
    sealed = sealer.seal(VERDICT + MESSAGE, "example.test")
    assert sealed.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.test; s=s1;")
    assert b"\r\nARC-Authentication-Results: i=1; mx.example.test;\r\n spf=pass" in sealed
    assert sealed.endswith(VERDICT + MESSAGE)


@pytest.mark.parametrize("data, domain", [
    (MESSAGE, "example.test"),  # taken unchecked: no verdict of ours to vouch for
    (VERDICT.replace(b"mx.example.test", b"elsewhere.test") + MESSAGE, "example.test"),
    (VERDICT + MESSAGE, "edonly.test"),  # ARC is RSA only
    (VERDICT + MESSAGE, "nokey.test"),
])
def test_left_as_it_was(sealer, data, domain):
    assert sealer.seal(data, domain) == data
