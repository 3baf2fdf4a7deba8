"""Mailbox addresses: RFC 5321 syntax, RFC 6531 (SMTPUTF8) non-ASCII, and the canonical form
that the accounts database stores and matches on."""

from __future__ import annotations

import ipaddress
import string
import unicodedata

from .errors import UsageError

# RFC 5321 4.5.3.1.1-2: the longest local part and domain a server must handle.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
# RFC 1035 2.3.4.
MAX_LABEL = 63
# RFC 5321 4.5.3.1.3: a path is at most 256 octets, and two of those are the angle brackets.
MAX_ADDRESS = 254

# RFC 5322 3.2.3 atext, the ASCII part; RFC 6531 3.3 adds every non-ASCII character.
ATEXT_SYMBOLS = "!#$%&'*+-/=?^_`{|}~"
_ATEXT = frozenset(string.ascii_letters + string.digits + ATEXT_SYMBOLS)
_LDH = frozenset(string.ascii_letters + string.digits + "-")
_IPV6_TAG = "ipv6:"


class AddressError(UsageError):
    """An address or domain we refuse; the message names it and says what is wrong."""


def parse_address(text: str) -> tuple[str, str]:
    """'local@domain' → (local, domain), or AddressError.

    The local part comes back in its canonical spelling (quoted only when a dot-atom cannot
    spell it, with only the backslashes RFC 5321 needs), its case kept. The domain comes back
    as lowercase A-labels, or a canonical address literal: "[192.0.2.1]", "[IPv6:2001:db8::1]".
    """
    try:
        local, domain = _split(text)
        local, domain = _parse_local(local), _parse_domain(domain)
    except ValueError as exc:
        raise AddressError(f"invalid address {text!r}: {exc}") from None
    if len(local.encode()) + 1 + len(domain) > MAX_ADDRESS:
        raise AddressError(f"invalid address {text!r}: longer than {MAX_ADDRESS} octets")
    return local, domain


def normalize_address(text: str) -> str:
    """The canonical 'local@domain': NFC (RFC 6532 3.1), local part lowercased because we match
    local parts case-insensitively, as Postfix does."""
    local, domain = parse_address(unicodedata.normalize("NFC", text))
    return f"{local.lower()}@{domain}"


def normalize_domain(text: str) -> str:
    """Lowercase A-label form of a domain name (or a canonical address literal)."""
    try:
        return _parse_domain(unicodedata.normalize("NFC", text))
    except ValueError as exc:
        raise AddressError(f"invalid domain {text!r}: {exc}") from None


def normalize_alias_source(text: str) -> str:
    """The canonical form of an alias source: an address, or "@domain", the domain's catch-all
    (Postfix's virtual_alias_maps spelling). "*@domain" is a valid address ("*" is atext), but
    meant as a wildcard it would only ever match itself: refused, naming the spelling to use."""
    if text.startswith("@"):
        return "@" + normalize_domain(text[1:])
    local, _, domain = text.rpartition("@")
    if local == "*":
        raise AddressError(f"{text!r} is not a wildcard: write a domain's catch-all as @{domain}")
    return normalize_address(text)


def split_subaddress(address: str, delimiters: str) -> tuple[str, str] | None:
    """RFC 5233 subaddressing of a canonical address: "alice+tag@d" → ("alice@d", "tag"), cut
    at the first of `delimiters`; None when there is nothing to cut (no delimiter, or nothing
    before it) or the local part is quoted (its delimiter is part of a name)."""
    local, _, domain = address.rpartition("@")
    if not delimiters or local.startswith('"'):
        return None
    cut = min((i for i in map(local.find, delimiters) if i >= 0), default=-1)
    if cut <= 0:
        return None
    return f"{local[:cut]}@{domain}", local[cut + 1:]


def with_subaddress(mailbox: str, recipient: str, detail: str) -> str:
    """`mailbox` with the subaddress `detail` that split_subaddress cut from the canonical
    `recipient`, joined by the delimiter `recipient` used: what mail to `recipient` is relayed
    under to the node that owns `mailbox`, so that it files it into the same folder (`recipient`
    itself where it is a subaddress of `mailbox`). `mailbox` when `detail` is empty."""
    if not detail:
        return mailbox
    delimiter = recipient.rpartition("@")[0][-len(detail) - 1]
    local, _, domain = mailbox.rpartition("@")
    return f"{local}{delimiter}{detail}@{domain}"


def is_address_literal(domain: str) -> bool:
    return domain.startswith("[")


def _split(text: str) -> tuple[str, str]:
    if text.startswith("<") or text.endswith(">"):
        raise ValueError("leave out the angle brackets")
    # A quoted local part may hold "@", a domain never does: the last "@" is the separator.
    local, at, domain = text.rpartition("@")
    if not at:
        raise ValueError("missing @")
    if not local:
        raise ValueError("empty local part")
    if not domain:
        raise ValueError("missing domain after @")
    return local, domain


def _parse_local(local: str) -> str:
    if local.startswith('"'):
        content = _unquote(local)
        if not content:
            raise ValueError("empty local part")
    else:
        _check_dot_string(local)
        content = local
    canonical = content if _is_dot_string(content) else _quote(content)
    if len(canonical.encode()) > MAX_LOCAL_PART:
        raise ValueError(f"local part is longer than {MAX_LOCAL_PART} octets")
    return canonical


def _check_dot_string(local: str) -> None:
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError("local part starts or ends with a dot, or has two dots in a row")
    for char in local:
        if char != "." and not _is_atext(char):
            raise ValueError(f"{char!r} is not allowed in a local part unless it is quoted")


def _is_dot_string(content: str) -> bool:
    return all(atom and all(map(_is_atext, atom)) for atom in content.split("."))


def _is_atext(char: str) -> bool:
    return char in _ATEXT or _is_allowed_non_ascii(char)


def _is_allowed_non_ascii(char: str) -> bool:
    # Controls (C1 included) and lone surrogates (undecodable input) are never mail addresses.
    return not char.isascii() and unicodedata.category(char) not in ("Cc", "Cs")


def _unquote(local: str) -> str:
    """The content of an RFC 5321 Quoted-string (qtextSMTP and quoted-pairSMTP)."""
    if len(local) < 2 or not local.endswith('"'):
        raise ValueError('quoted local part does not end with "')
    out = []
    chars = iter(local[1:-1])
    for char in chars:
        if char == "\\":
            char = next(chars, "")
            if not (" " <= char <= "~"):
                raise ValueError("a backslash must be followed by a printable ASCII character")
        elif char == '"':
            raise ValueError('unescaped " inside a quoted local part')
        elif not (" " <= char <= "~" or _is_allowed_non_ascii(char)):
            raise ValueError(f"{char!r} is not allowed in a quoted local part")
        out.append(char)
    return "".join(out)


def _quote(content: str) -> str:
    return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_domain(domain: str) -> str:
    if domain.startswith("["):
        return _parse_literal(domain)
    if not domain.isascii():
        domain = _to_a_labels(domain)
    domain = domain.lower()
    if len(domain) > MAX_DOMAIN:
        raise ValueError(f"domain is longer than {MAX_DOMAIN} octets")
    for label in domain.split("."):
        _check_label(label)
    if _is_ipv4(domain):
        raise ValueError(f"write an IP address as an address literal: [{domain}]")
    return domain


def _to_a_labels(domain: str) -> str:
    for char in domain:
        if not (char.isascii() or _is_allowed_non_ascii(char)):
            raise ValueError(f"{char!r} is not allowed in a domain")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        # The codec wraps its reason ("label empty or too long") in a generic message.
        reason = exc.__cause__ or exc
        raise ValueError(f"not a valid internationalised domain name ({reason})") from None


def _check_label(label: str) -> None:
    if not label:
        raise ValueError("domain has an empty label (a leading, trailing or double dot)")
    if len(label) > MAX_LABEL:
        raise ValueError(f"domain label longer than {MAX_LABEL} octets")
    for char in label:
        if char not in _LDH:
            raise ValueError(f"{char!r} is not allowed in a domain")
    if label.startswith("-") or label.endswith("-"):
        raise ValueError(f"domain label {label!r} starts or ends with a hyphen")


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _parse_literal(domain: str) -> str:
    if not domain.endswith("]"):
        raise ValueError("address literal does not end with ]")
    inner = domain[1:-1]
    if inner[: len(_IPV6_TAG)].lower() == _IPV6_TAG:
        value = inner[len(_IPV6_TAG):]
        try:
            # ipaddress accepts a "%zone" suffix that has no place in an address literal.
            if "%" in value:
                raise ValueError
            return f"[IPv6:{ipaddress.IPv6Address(value).compressed}]"
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv6 address") from None
    try:
        return f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError:
        raise ValueError(f"address literal {domain} is neither [IPv4] nor [IPv6:...]") from None
