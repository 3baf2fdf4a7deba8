"""MTA-STS (RFC 8461): a destination's policy, found by a TXT record and fetched over HTTPS.

`_mta-sts.<domain>` TXT names the policy's id; the policy itself comes from
https://mta-sts.<domain>/.well-known/mta-sts.txt with a validated certificate, no redirects,
at most MAX_POLICY_BYTES. It is kept under the data dir for its max_age (so a restart, or an
attacker blocking the fetch later, does not lose it) and fetched again when the TXT id
changes or the copy expires (5.1). A fetch that fails leaves a still-valid copy in force.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..durable import write_atomically
from ..resolver import NoSuchDomain, Resolver, TemporaryDnsError
from .dane import name_matches

log = logging.getLogger("mailforge.delivery")

# RFC 8461 3.3: a policy over 64 KiB is not one; 3.2: max_age at most a year.
MAX_POLICY_BYTES = 64 * 1024
MAX_AGE_LIMIT = 31_557_600
# Seconds a policy fetch may take: it holds up the destination's deliveries meanwhile.
FETCH_TIMEOUT = 20.0
MODES = ("enforce", "testing", "none")
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
# 3.2: max_age is 1*10DIGIT, ASCII digits (str.isdigit takes "²", which int() refuses).
_MAX_AGE = re.compile(r"[0-9]{1,10}")


class PolicyError(Exception):
    """A policy that could not be had or read: TLS-RPT's sts-policy-fetch-error/-invalid."""

    def __init__(self, result_type: str, text: str) -> None:
        super().__init__(text)
        self.result_type = result_type


@dataclass
class Policy:
    domain: str
    id: str
    mode: str
    mx: list[str]
    max_age: int
    fetched_at: float
    text: str = ""  # as fetched: TLS-RPT quotes it (policy-string)
    fetch_error: str = field(default="", compare=False)  # a newer one could not be fetched

    def expired(self, now: float) -> bool:
        return now >= self.fetched_at + self.max_age

    def allows(self, host: str) -> bool:
        """Is `host` one of the policy's MX names (RFC 8461 4.1)?"""
        return any(name_matches(pattern, host) for pattern in self.mx)


def txt_id(records: list[str]) -> str | None:
    """The policy id of the one STSv1 record (3.1); None when there is not exactly one."""
    found = [r for r in records if r.startswith("v=STSv1")]
    if len(found) != 1:
        return None
    fields = dict(part.strip().partition("=")[::2] for part in found[0].split(";") if part.strip())
    policy_id = fields.get("id", "")
    return policy_id if _ID.match(policy_id) else None


def parse_policy(domain: str, policy_id: str, text: str, now: float) -> Policy:
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), []).append(value.strip())
    version, mode, max_age = (fields.get(k, [""])[0] for k in ("version", "mode", "max_age"))
    if version != "STSv1":
        raise PolicyError("sts-policy-invalid", f"policy of {domain}: version is not STSv1")
    if mode not in MODES:
        raise PolicyError("sts-policy-invalid", f"policy of {domain}: unknown mode {mode!r}")
    if not _MAX_AGE.fullmatch(max_age):
        raise PolicyError("sts-policy-invalid", f"policy of {domain}: bad max_age {max_age!r}")
    mx = fields.get("mx", [])
    if mode != "none" and not mx:
        raise PolicyError("sts-policy-invalid", f"policy of {domain}: no mx")
    return Policy(domain, policy_id, mode, mx, min(int(max_age), MAX_AGE_LIMIT), now, text)


class PolicyCache:
    """One JSON file per domain under the data dir, replaced atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, domain: str) -> Policy | None:
        try:
            return Policy(**json.loads((self.directory / f"{domain}.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None  # absent, or unreadable: fetched again

    def put(self, policy: Policy) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(self.directory / f"{policy.domain}.json",
                         json.dumps(asdict(policy)).encode())


class MtaSts:
    def __init__(self, resolver: Resolver, cache: PolicyCache, tls_context: ssl.SSLContext,
                 port: int = 443, clock: Callable[[], float] = time.time) -> None:
        self.resolver = resolver
        self.cache = cache
        self.tls_context = tls_context
        self.port = port
        self.clock = clock

    async def policy(self, domain: str) -> Policy | None:
        """The policy in force for `domain`, None when it has none. PolicyError when it
        announces one that cannot be had and no valid copy is kept (no policy then applies,
        but TLS-RPT hears of it)."""
        now = self.clock()
        cached = self.cache.get(domain)
        if cached is not None and cached.expired(now):
            cached = None
        try:
            policy_id = txt_id([b"".join(r.strings).decode("ascii", "replace")
                                for r in await self.resolver.lookup(f"_mta-sts.{domain}", "TXT")])
        except (NoSuchDomain, TemporaryDnsError):
            policy_id = None  # 5.1: no record now; a kept policy still holds
        if policy_id is None or (cached is not None and cached.id == policy_id):
            return cached
        try:
            policy = parse_policy(domain, policy_id, await self._fetch(domain), now)
        except PolicyError as exc:
            if cached is None:
                raise
            log.warning("MTA-STS: keeping the cached policy of %s: %s", domain, exc)
            cached.fetch_error = str(exc)
            return cached
        self.cache.put(policy)
        log.info("MTA-STS: policy %s of %s fetched: mode %s, mx %s, max_age %d", policy.id,
                 domain, policy.mode, ",".join(policy.mx), policy.max_age)
        return policy

    async def _fetch(self, domain: str) -> str:
        # aiohttp is imported on the first fetch, not with this module: it would cost every
        # `mailforge` command a tenth of a second (the CLI reaches here through tlsrpt).
        from .policy_fetch import fetch_policy
        return await fetch_policy(f"https://mta-sts.{domain}:{self.port}/.well-known/mta-sts.txt",
                                  self.tls_context, self.resolver)
