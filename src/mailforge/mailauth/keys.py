"""DKIM keys on disk: <data_dir>/dkim/<domain>/<selector>.<algorithm>.pem, mode 0600.

RSA-2048 (RFC 6376) and Ed25519 (RFC 8463), both PKCS#8 PEM. Several selectors of a domain may
live at once (rotation): the newest key of each algorithm signs, the older ones stay listed (and
their DNS records published) until `dkim remove`, so mail signed with them still verifies.
"""

from __future__ import annotations

import base64
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ..durable import write_atomically
from ..errors import UsageError

ALGORITHMS = ("rsa", "ed25519")
# RFC 8301 3.2: at least 1024 bits, 2048 recommended; the large providers ask for 2048.
RSA_BITS = 2048
KEY_SUFFIX = ".pem"
# A selector is one DNS label (RFC 6376 3.1), as used in <selector>._domainkey.<domain>.
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: str  # "rsa" | "ed25519"
    path: Path
    created: float

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def private_key(self) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
        return serialization.load_pem_private_key(self.path.read_bytes(), password=None)

    def dns_record(self) -> str:
        """The TXT record to publish at record_name."""
        public = self.private_key().public_key()
        if self.algorithm == "ed25519":  # RFC 8463 4.2: the raw 32-octet key
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:  # RFC 6376 3.6.1: SubjectPublicKeyInfo, DER
            raw = public.public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        return f"v=DKIM1; k={self.algorithm}; p={base64.b64encode(raw).decode()}"


class KeyStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def generate(self, domain: str, selector: str, algorithm: str) -> DkimKey:
        if algorithm not in ALGORITHMS:
            raise UsageError(f"unknown algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")
        if not _SELECTOR.match(selector):
            raise UsageError(f"selector {selector!r} is not a DNS label (a-z, 0-9, -)")
        if any(k.selector == selector for k in self.keys(domain)):
            raise UsageError(f"{domain} already has a key with selector {selector}")
        key = (ed25519.Ed25519PrivateKey.generate() if algorithm == "ed25519"
               else rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS))
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        directory = self.root / domain
        for path in (self.root, directory):
            path.mkdir(mode=0o700, exist_ok=True)
        path = directory / f"{selector}.{algorithm}{KEY_SUFFIX}"
        write_atomically(path, pem, mode=0o600)
        return DkimKey(domain, selector, algorithm, path, os.stat(path).st_mtime)

    def keys(self, domain: str | None = None) -> list[DkimKey]:
        """Every key (of `domain`), by domain then age."""
        domains = [domain] if domain else sorted(p.name for p in _dirs(self.root))
        found = []
        for name in domains:
            for path in sorted((self.root / name).glob(f"*{KEY_SUFFIX}")):
                selector, _, algorithm = path.name[:-len(KEY_SUFFIX)].rpartition(".")
                if algorithm in ALGORITHMS and selector:
                    found.append(DkimKey(name, selector, algorithm, path, path.stat().st_mtime))
        return sorted(found, key=lambda k: (k.domain, k.created, k.selector))

    def signing_keys(self, domain: str | None = None) -> list[DkimKey]:
        """The newest key of each algorithm of each domain: the ones that sign."""
        newest: dict[tuple[str, str], DkimKey] = {}
        for key in self.keys(domain):  # oldest first: the last one seen wins
            newest[(key.domain, key.algorithm)] = key
        return sorted(newest.values(), key=lambda k: (k.domain, k.algorithm))

    def remove(self, domain: str, selector: str) -> DkimKey:
        for key in self.keys(domain):
            if key.selector == selector:
                key.path.unlink()
                return key
        raise UsageError(f"{domain} has no key with selector {selector}")


def default_selector(algorithm: str, now: float | None = None) -> str:
    """e.g. "rsa-202612": one per algorithm and month, so a rotation gets a new name."""
    return f"{algorithm}-{time.strftime('%Y%m', time.gmtime(now))}"


def _dirs(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []
