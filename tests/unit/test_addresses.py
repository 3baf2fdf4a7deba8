import pytest

from mailforge.addresses import (AddressError, normalize_address, normalize_alias_source,
                                 normalize_domain, parse_address, split_subaddress,
                                 with_subaddress)
from mailforge.errors import UsageError


@pytest.mark.parametrize("text, expected", [
    ("user@example.com", ("user", "example.com")),
    ("first.last+tag@Example.COM", ("first.last+tag", "example.com")),
    ("!#$%&'*+-/=?^_`{|}~@example.com", ("!#$%&'*+-/=?^_`{|}~", "example.com")),
    ('"john"@example.com', ("john", "example.com")),          # quoting that is not needed goes
    ('"\\j\\o\\h\\n"@example.com', ("john", "example.com")),
    ('"john doe"@example.com', ('"john doe"', "example.com")),
    ('"a@b"@example.com', ('"a@b"', "example.com")),
    ('"a\\"b\\\\c"@example.com', ('"a\\"b\\\\c"', "example.com")),
    ('".dot"@example.com', ('".dot"', "example.com")),
    ("user@localhost", ("user", "localhost")),
    ("user@[192.0.2.1]", ("user", "[192.0.2.1]")),
    ("user@[IPv6:2001:DB8:0:0::1]", ("user", "[IPv6:2001:db8::1]")),
    ("user@[ipv6:::1]", ("user", "[IPv6:::1]")),
    ("Pelé@Bücher.example", ("Pelé", "xn--bcher-kva.example")),
    ("用户@例子.广告", ("用户", "xn--fsqu00a.xn--4rr70v")),
    ('"ü x"@example.com', ('"ü x"', "example.com")),
    ("x" * 64 + "@example.com", ("x" * 64, "example.com")),
])
def test_valid(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text, problem", [
    ("", "missing @"),
    ("user.example.com", "missing @"),
    ("@example.com", "empty local part"),
    ('""@example.com', "empty local part"),
    ("user@", "missing domain"),
    ("<user@example.com>", "angle brackets"),
    ("user@example.com.", "empty label"),
    ("user@.example.com", "empty label"),
    ("user@example..com", "empty label"),
    ("user.@example.com", "dot"),
    (".user@example.com", "dot"),
    ("us..er@example.com", "dot"),
    ("a b@example.com", "' ' is not allowed"),
    ("a@b@example.com", "'@' is not allowed"),
    ("a\x00b@example.com", "not allowed"),
    ("a\x85b@example.com", "not allowed"),              # C1 control
    ("a\udcffb@example.com", "not allowed"),            # undecodable byte (surrogateescape)
    ('"abc@example.com', 'does not end with "'),
    ('"ab"c@example.com', 'does not end with "'),
    ('"a"b"@example.com', 'unescaped "'),
    ('"a\\"@example.com', "backslash"),
    ('"a\\é"@example.com', "backslash"),
    ('"a\tb"@example.com', "not allowed in a quoted"),
    ("x" * 65 + "@example.com", "longer than 64"),
    ("é" * 33 + "@example.com", "longer than 64"),      # 66 octets in UTF-8
    ("user@exa_mple.com", "'_' is not allowed"),
    ("user@-example.com", "hyphen"),
    ("user@example-.com", "hyphen"),
    ("user@" + "a" * 64 + ".com", "label longer"),
    ("user@" + ".".join(["a" * 63] * 4) + ".com", "longer than 255"),
    ("x" * 64 + "@" + ".".join(["a" * 63] * 3) + ".com", "longer than 254"),
    ("user@192.0.2.1", "[192.0.2.1]"),
    ("user@[192.0.2.1", "does not end with ]"),
    ("user@[300.0.2.1]", "neither"),
    ("user@[IPv6:fe80::1%eth0]", "not an IPv6"),
    ("user@[IPv6:1.2.3.4]", "not an IPv6"),
    ("user@[foo:bar]", "neither"),
    ("user@xn--bcher-kva..example", "empty label"),
    ("user@bü" + "x" * 70 + ".example", "internationalised"),
])
def test_invalid(text, problem):
    with pytest.raises(AddressError) as info:
        parse_address(text)
    message = str(info.value)
    assert problem in message
    assert "\n" not in message


def test_address_error_is_a_usage_error():
    assert issubclass(AddressError, UsageError)


@pytest.mark.parametrize("text, expected", [
    ("User@Example.COM", "user@example.com"),
    ('"John"@example.com', "john@example.com"),
    ('"John Doe"@EXAMPLE.com', '"john doe"@example.com'),
    ("ÉLODIE@Bücher.example", "élodie@xn--bcher-kva.example"),
    ("e\u0301@example.com", "\u00e9@example.com"),      # NFC: decomposed é matches composed
    ("user@[IPv6:2001:DB8::1]", "user@[IPv6:2001:db8::1]"),
])
def test_normalize_address(text, expected):
    assert normalize_address(text) == expected


def test_normalize_domain():
    assert normalize_domain("Bücher.Example") == "xn--bcher-kva.example"
    assert normalize_domain("xn--bcher-kva.example") == "xn--bcher-kva.example"
    assert normalize_domain("EXAMPLE.org") == "example.org"
    with pytest.raises(AddressError, match="invalid domain 'example.org.'"):
        normalize_domain("example.org.")
    with pytest.raises(AddressError):
        normalize_domain("")


@pytest.mark.parametrize("text, expected", [
    ("alice+tag@example.test", ("alice@example.test", "tag")),
    ("alice+@example.test", ("alice@example.test", "")),
    ("a-b+c@example.test", ("a@example.test", "b+c")),
    ("+tag@example.test", None),
    ("alice@example.test", None),
    ('"a+b c"@example.test', None),
])
def test_split_subaddress(text, expected):
    assert split_subaddress(text, "+-") == expected
    assert split_subaddress(text, "") is None


def test_normalize_alias_source():
    assert normalize_alias_source("@Example.TEST") == "@example.test"
    assert normalize_alias_source("Info@Example.test") == "info@example.test"
    with pytest.raises(AddressError, match="not a wildcard"):
        normalize_alias_source("*@example.test")


@pytest.mark.parametrize("mailbox, recipient, expected", [
    ("carol@example.test", "carol@example.test", "carol@example.test"),
    ("carol@example.test", "carol+lists@example.test", "carol+lists@example.test"),
    ("carol@example.test", "team-b+c@example.test", "carol-b+c@example.test"),  # first delimiter
    ("carol@example.test", "team+@example.test", "carol@example.test"),  # an empty detail
    ("carol@other.test", "team@example.test", "carol@other.test"),
])
def test_with_subaddress_puts_back_what_split_subaddress_cut(mailbox, recipient, expected):
    detail = (split_subaddress(recipient, "+-") or ("", ""))[1]
    assert with_subaddress(mailbox, recipient, detail) == expected
