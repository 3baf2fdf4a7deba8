"""DMARC (RFC 7489): policy discovery through our resolver, then the `dmarc` library's record
parsing, alignment and disposition.

Discovery (6.6.3): _dmarc.<From domain>, else _dmarc.<its organizational domain> (the Public
Suffix List, publicsuffixlist's offline copy), whose `sp=` then applies. `pct=` is not applied:
a failing message always gets the policy's disposition (allowed: pct is a sender's request to
sample, and the coming DMARCbis drops it).
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass

import dkim
import dmarc as dmarclib
from publicsuffixlist import PublicSuffixList

from ..resolver import NoSuchDomain, Resolver, TemporaryDnsError

_PSL = PublicSuffixList()


class _OrganizationalDomains:
    """What the dmarc library asks of a Public Suffix List."""

    def get_public_suffix(self, domain: str) -> str:
        return organizational_domain(domain)


def organizational_domain(domain: str) -> str:
    """RFC 7489 3.2: the registrable domain (one label under the public suffix)."""
    return _PSL.privatesuffix(domain.lower()) or domain.lower()


@dataclass
class Evaluation:
    result: str  # pass | fail | none | temperror | permerror
    domain: str = ""  # the From: domain
    policy: str = "none"  # the disposition a failure gets: none | quarantine | reject

    def header_part(self) -> str:
        if not self.domain:
            return f"dmarc={self.result}"
        return f"dmarc={self.result} (p={self.policy}) header.from={self.domain}"


def evaluate(resolver: Resolver, message: bytes, spf_domain: str, spf_result: str,
             signatures: list[tuple[str, str]]) -> Evaluation:
    """The DMARC result of `message`: SPF's result for `spf_domain` and each DKIM signature's
    (d=, result) checked for alignment with the From: domain under its policy."""
    author_domain = from_domain(dkim.DKIM(message).headers)
    if not author_domain:
        return Evaluation("none")  # no single From: address to align with (6.6.1)
    try:
        found = _discover(resolver, author_domain)
    except TemporaryDnsError:
        return Evaluation("temperror", author_domain)
    if found is None:
        return Evaluation("none", author_domain)
    record, org_domain = found
    try:
        checked = dmarclib.DMARCPolicy(record, author_domain, org_domain,
                                       publicsuffix=_OrganizationalDomains())
    except dmarclib.Error:
        return Evaluation("permerror", author_domain)
    results: list[dmarclib.AuthResult] = [
        dmarclib.SPF(spf_domain, _enum(dmarclib.SPFResult, spf_result))]
    results += [dmarclib.DKIM(d, _enum(dmarclib.DKIMResult, r)) for d, r in signatures if d]
    try:
        checked.verify(auth_results=results)
    except dmarclib.PolicyError:
        pass  # a failure: its disposition is in checked.result
    outcome = checked.result
    passed = outcome.result is dmarclib.DMARCResult.PASS
    applied = checked.policy.sp if (org_domain and checked.policy.sp.value) else checked.policy.p
    return Evaluation("pass" if passed else "fail", author_domain, applied.value or "none")


def _discover(resolver: Resolver, from_domain: str) -> tuple[str, str | None] | None:
    """(record, the organizational domain it was found at, or None if at the From domain)."""
    record = _record(resolver, from_domain)
    if record is not None:
        return record, None
    org = organizational_domain(from_domain)
    if org != from_domain:
        record = _record(resolver, org)
        if record is not None:
            return record, org
    return None


def _record(resolver: Resolver, domain: str) -> str | None:
    try:
        records = [r for r in resolver.txt_blocking(f"_dmarc.{domain}")
                   if r.replace(" ", "").lower().startswith("v=dmarc1")]
    except NoSuchDomain:
        return None
    return records[0] if len(records) == 1 else None  # 6.6.3: more than one is none


def from_domain(headers: list[tuple[bytes, bytes]]) -> str:
    """The domain of the one From: address (RFC 7489 6.6.1); "" when there is not one."""
    froms = [v for n, v in headers if n.lower() == b"from"]
    if len(froms) != 1:
        return ""
    addresses = email.utils.getaddresses([froms[0].decode("utf-8", "replace")])
    if len(addresses) != 1 or "@" not in addresses[0][1]:
        return ""
    return addresses[0][1].rpartition("@")[2].lower().rstrip(".")


def _enum(kind: type, value: str):
    try:
        return kind(value)
    except ValueError:
        return kind("none")
