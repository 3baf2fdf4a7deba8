"""The checks on mail that arrives over port 25 without AUTH: SPF (RFC 7208, MAIL FROM and
HELO; pyspf), DKIM (RFC 6376/8463; dkimpy), ARC (RFC 8617; dkimpy) and DMARC (RFC 7489;
dmarc.py), summed up in one Authentication-Results header (RFC 8601).

Every lookup goes through resolver.py (the [dns] servers, bounded, cached). pyspf and dkimpy
call back synchronously, so check() blocks: the SMTP driver runs it in the worker's threads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import dkim
import dkim.util
import spf

from ..resolver import NoSuchDomain, Resolver, TemporaryDnsError
from . import dmarc

# RFC 7208 4.6.4: an SPF check should be bounded in time as a whole, at least 20 s.
SPF_TIME_LIMIT = 20.0
# Signatures verified per message: each may cost a lookup; more is a resource attack (RFC 6376 8.4).
MAX_SIGNATURES = 5
ACCEPT, QUARANTINE, REJECT, DEFER = "accept", "quarantine", "reject", "defer"


@dataclass
class DkimResult:
    domain: str
    selector: str
    algorithm: str
    result: str  # pass | fail | neutral | temperror | permerror
    b: str  # the first characters of b=, telling signatures apart (RFC 6008)


@dataclass
class Verdict:
    header: bytes  # the Authentication-Results header, CRLF-terminated
    action: str  # ACCEPT | QUARANTINE | REJECT | DEFER
    reason: str = ""  # for the reply and the log
    results: dict[str, str] = field(default_factory=dict)  # method → result (for logs, tests)


class InboundChecker:
    def __init__(self, authserv_id: str, resolver: Resolver, enforce: bool) -> None:
        self.authserv_id = authserv_id  # the name our Authentication-Results header goes by
        self.resolver = resolver
        self.enforce = enforce
        _route_pyspf_lookups(resolver)

    def check(self, message: bytes, client_ip: str, helo: str, mail_from: str) -> Verdict:
        """The verdict on `message` (as received, CRLF) from `client_ip`. Blocks."""
        helo_spf = _spf(client_ip, f"postmaster@{helo}", helo)
        # RFC 7208 2.4: the null sender is checked as postmaster@<HELO name>.
        mfrom = mail_from or f"postmaster@{helo}"
        mfrom_spf = _spf(client_ip, mfrom, helo) if mail_from else helo_spf
        signatures = self._dkim(message)
        arc = self._arc(message)
        spf_domain = mfrom.rpartition("@")[2].lower()
        evaluation = dmarc.evaluate(self.resolver, message, spf_domain, mfrom_spf,
                                    [(s.domain, s.result) for s in signatures])
        action, reason = self._action(evaluation, mfrom_spf, signatures)
        parts = [f"spf={mfrom_spf} smtp.mailfrom={_value(mfrom)}",
                 f"spf={helo_spf} smtp.helo={_value(helo)}"]
        parts += [f"dkim={s.result} header.d={s.domain} header.s={s.selector} "
                  f"header.a={s.algorithm} header.b={s.b}" for s in signatures] or ["dkim=none"]
        parts.append(evaluation.header_part())
        parts.append(f"arc={arc}")
        header = f"Authentication-Results: {self.authserv_id};\r\n\t" + ";\r\n\t".join(parts) + "\r\n"
        results = {"spf": mfrom_spf, "dmarc": evaluation.result, "arc": arc,
                   "dkim": ",".join(s.result for s in signatures) or "none"}
        return Verdict(header.encode(), action, reason, results)

    def _action(self, evaluation: dmarc.Evaluation, spf_result: str,
                signatures: list[DkimResult]) -> tuple[str, str]:
        if not self.enforce:
            return ACCEPT, ""
        # Temporary: the policy could not be read, or a pass may have been missed for want
        # of DNS (RFC 7489 6.6.2 allows deferring then).
        unsure = (spf_result == "temperror"
                  or any(s.result == "temperror" for s in signatures))
        if evaluation.result == "temperror" or (
                evaluation.result == "fail" and unsure and evaluation.policy != "none"):
            return DEFER, f"DMARC policy of {evaluation.domain} could not be checked (DNS)"
        if evaluation.result != "fail" or evaluation.policy == "none":
            return ACCEPT, ""
        if evaluation.policy == "reject":
            return REJECT, f"DMARC policy of {evaluation.domain} rejects this message"
        return QUARANTINE, f"DMARC policy of {evaluation.domain} quarantines this message"

    def _dkim(self, message: bytes) -> list[DkimResult]:
        verifier = dkim.DKIM(message)
        headers = [v for n, v in verifier.headers if n.lower() == b"dkim-signature"]
        results = []
        for index, value in enumerate(headers[:MAX_SIGNATURES]):
            try:
                tags = dkim.util.parse_tag_value(value)
            except dkim.util.InvalidTagValueList:
                tags = {}
            text = {k.decode(): v.decode("ascii", "replace") for k, v in tags.items()}
            outcome = self._verify_one(message, index)
            b = re.sub(r"\s", "", text.get("b", ""))[:8]
            results.append(DkimResult(text.get("d", "").lower(), text.get("s", ""),
                                      text.get("a", ""), outcome, b))
        return results

    def _verify_one(self, message: bytes, index: int) -> str:
        try:
            return "pass" if dkim.DKIM(message).verify(index, dnsfunc=self._key) else "fail"
        except TemporaryDnsError:
            return "temperror"
        except dkim.DKIMException:
            return "permerror"

    def _arc(self, message: bytes) -> str:
        try:
            verdict, _, _ = dkim.arc_verify(message, dnsfunc=self._key)
        except TemporaryDnsError:
            return "fail (temporary DNS failure)"
        except dkim.DKIMException:
            return "fail"
        return verdict.decode()

    def _key(self, name: bytes | str, timeout: float = 0) -> bytes | None:
        """dkimpy's TXT lookup: the key record, or None when there is none."""
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        try:
            records = self.resolver.txt_blocking(name)
        except NoSuchDomain:
            return None
        return records[0].encode() if records else None


def _spf(client_ip: str, sender: str, helo: str) -> str:
    """pass | fail | softfail | neutral | none | permerror | temperror."""
    try:
        result, _ = spf.query(client_ip, sender, helo, querytime=SPF_TIME_LIMIT).check()[:2]
    except spf.TempError:
        return "temperror"
    except (spf.PermError, ValueError):
        return "permerror"
    return result


def _value(text: str) -> str:
    """An RFC 8601 property value: a token, else a quoted string."""
    if text and re.fullmatch(r"[^\s()<>,;:\\\"\[\]]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _route_pyspf_lookups(resolver: Resolver) -> None:
    """pyspf looks names up through its module's DNSLookup (its plug point): ours, so SPF uses
    the [dns] servers, bounds and cache like every other lookup. One resolver per process."""

    def lookup(name: str, qtype: str, strict: bool = True, timeout: float = 0) -> list:
        try:
            records = resolver.lookup_blocking(name, qtype)
        except NoSuchDomain:
            return []
        except TemporaryDnsError as exc:
            raise spf.TempError(f"DNS {exc}") from None
        key = (name, qtype)
        if qtype in ("A", "AAAA"):
            return [(key, r.address) for r in records]
        if qtype == "MX":
            return [(key, (r.preference, r.exchange)) for r in records]
        if qtype == "PTR":
            return [(key, r.target.to_text(True)) for r in records]
        return [(key, r.strings) for r in records]  # TXT, SPF

    spf.DNSLookup = lookup


def remove_forged_results(message: bytes, authserv_id: str) -> bytes:
    """`message` without the Authentication-Results headers that claim to be ours (RFC 8601
    5: only we may write those; a sender's own would be believed by mail clients)."""
    end = message.find(b"\r\n\r\n")
    head, body = (message, b"") if end < 0 else (message[:end + 2], message[end + 2:])
    lines = head.split(b"\r\n")
    kept: list[bytes] = []
    dropping = False
    ours = authserv_id.lower().encode()
    for line in lines:
        if line[:1] in (b" ", b"\t"):  # a continuation: goes with its header
            if not dropping:
                kept.append(line)
            continue
        name, colon, value = line.partition(b":")
        dropping = bool(colon) and name.strip().lower() == b"authentication-results" and \
            _authserv_id(value) == ours
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + body


def _authserv_id(value: bytes) -> bytes:
    value = re.sub(rb"\([^)]*\)", b" ", value)  # comments (CFWS)
    return value.split(b";", 1)[0].strip().split(b" ", 1)[0].lower()
