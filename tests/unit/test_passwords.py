import pytest

from mailforge.auth import passwords
from mailforge.auth.passwords import hash_password, verify_password
from mailforge.errors import UsageError

# Read at import, before the fixture below lowers them.
PRODUCTION_PARAMETERS = (passwords.SCRYPT_LOG2_N, passwords.SCRYPT_R, passwords.SCRYPT_P)


pytestmark = pytest.mark.usefixtures("cheap_scrypt")


def test_round_trip():
    stored = hash_password("correct horse")
    assert stored.startswith("$scrypt$ln=4,r=8,p=1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert not verify_password("", stored)


def test_salted():
    assert hash_password("same") != hash_password("same")


def test_non_ascii_password():
    stored = hash_password("pässwörd ✓")
    assert verify_password("pässwörd ✓", stored)
    assert not verify_password("passwort", stored)


def test_parameters_are_read_back(monkeypatch):
    old = hash_password("secret")
    monkeypatch.setattr(passwords, "SCRYPT_LOG2_N", 5)
    monkeypatch.setattr(passwords, "SCRYPT_R", 4)
    new = hash_password("secret")
    assert new.startswith("$scrypt$ln=5,r=4,p=1$")
    assert verify_password("secret", old) and verify_password("secret", new)


def test_production_default():
    assert PRODUCTION_PARAMETERS == (14, 8, 1)


@pytest.mark.parametrize("stored", [
    "",
    "plaintext",
    "$scrypt$",
    "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$a2V5",
    "$scrypt$ln=4,r=8$c2FsdA$a2V5",
    "$scrypt$ln=4,r=8,p=1,x=2$c2FsdA$a2V5",
    "$scrypt$ln=x,r=8,p=1$c2FsdA$a2V5",
    "$scrypt$ln=0,r=8,p=1$c2FsdA$a2V5",
    "$scrypt$ln=40,r=8,p=1$c2FsdA$a2V5",           # would need terabytes: refused, not tried
    "$scrypt$ln=4,r=8,p=1$c2FsdA$",
    "$scrypt$ln=4,r=8,p=1$!!!$a2V5",
    "$scrypt$ln=4,r=8,p=1$c2FsdA$a2V5$extra",
    "x$scrypt$ln=4,r=8,p=1$c2FsdA$a2V5",
])
def test_malformed_stored_value_is_false(stored):
    assert verify_password("anything", stored) is False


def test_a_new_password_may_hold_any_unicode_but_nul_cr_or_lf():
    for password in ("pässwörd ✓", " tab\tand spaces ", "bell\x07", "\u200bzero width"):
        passwords.check_new_password(password)
    with pytest.raises(UsageError, match="empty password refused"):
        passwords.check_new_password("")
    for password in ("nul\0inside", "cr\r", "\nlf", "crlf\r\n"):
        with pytest.raises(UsageError, match="must not contain NUL, CR or LF"):
            passwords.check_new_password(password)
