"""DANE for SMTP (RFC 7672): which TLSA records count, and whether a certificate chain
matches them.

Only DANE-TA(2) and DANE-EE(3) are usable for SMTP (3.1.3); selector full certificate(0) or
SubjectPublicKeyInfo(1); matching full(0), SHA-256(1) or SHA-512(2). A DANE-EE match needs
no name check and ignores expiry (3.1.1); DANE-TA needs the chain to lead from the server's
certificate up to the matching one, every certificate below that trust anchor within its
validity period (the TA stands in for a CA's root, whose dates are not checked, RFC 7671
5.2), and the server's certificate to name the MX host or the destination domain (3.2.2).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

DANE_TA, DANE_EE = 2, 3
SELECTOR_CERT, SELECTOR_SPKI = 0, 1
MATCH_FULL, MATCH_SHA256, MATCH_SHA512 = 0, 1, 2


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def matches(self, cert: x509.Certificate) -> bool:
        if self.selector == SELECTOR_CERT:
            item = cert.public_bytes(Encoding.DER)
        else:
            item = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        if self.mtype == MATCH_SHA256:
            item = hashlib.sha256(item).digest()
        elif self.mtype == MATCH_SHA512:
            item = hashlib.sha512(item).digest()
        return item == self.data


def usable(records: Sequence) -> list[Tlsa]:
    """The TLSA rdatas SMTP may use; the rest are ignored (RFC 7672 3.1.3)."""
    return [Tlsa(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in records
            if r.usage in (DANE_TA, DANE_EE) and r.selector in (SELECTOR_CERT, SELECTOR_SPKI)
            and r.mtype in (MATCH_FULL, MATCH_SHA256, MATCH_SHA512)]


def check_chain(records: list[Tlsa], chain_der: list[bytes], names: list[str],
                now: datetime.datetime | None = None) -> str:
    """"" when the chain (server's certificate first) matches a record at `now` (default:
    the present); else why not."""
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as exc:
        return f"unreadable certificate ({exc})"
    if not chain:
        return "no certificate"
    leaf = chain[0]
    if any(r.usage == DANE_EE and r.matches(leaf) for r in records):
        return ""
    for position, cert in enumerate(chain):
        if not any(r.usage == DANE_TA and r.matches(cert) for r in records):
            continue
        if not _issued_along(chain[:position + 1]):
            return "the chain does not lead to the certificate of the TLSA record"
        stale = _out_of_date(chain[:position], now or datetime.datetime.now(datetime.timezone.utc))
        if stale:
            return stale
        if not _names_match(leaf, names):
            return f"certificate names none of {', '.join(names)}"
        return ""
    return "no certificate of the chain matches a TLSA record"


def _issued_along(chain: list[x509.Certificate]) -> bool:
    """Each certificate of the chain signed by the next one."""
    try:
        for child, parent in zip(chain, chain[1:]):
            child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _out_of_date(chain: list[x509.Certificate], now: datetime.datetime) -> str:
    """Why a certificate of `chain` is not valid at `now`; "" when all are."""
    for cert in chain:
        subject = cert.subject.rfc4514_string()
        if now < cert.not_valid_before_utc:
            return (f"certificate {subject} is not valid before "
                    f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
        if now > cert.not_valid_after_utc:
            return f"certificate {subject} expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    return ""


def _names_match(cert: x509.Certificate, names: list[str]) -> bool:
    try:
        dns_names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns_names = []
    return any(name_matches(pattern, name) for pattern in dns_names for name in names)


def name_matches(pattern: str, name: str) -> bool:
    """A certificate or MTA-STS name: exact, or "*." standing for one leftmost label."""
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name
