"""Debian's OpenDKIM as an independent DKIM implementation for interop tests.

`opendkim -t FILE` verifies a message without a milter; `opendkim-testmsg` signs a message with
a key file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

OPENDKIM, TESTMSG = "/usr/sbin/opendkim", "/usr/sbin/opendkim-testmsg"


def verify(message: bytes, work: Path, keys: Path) -> str:
    """OpenDKIM's log of its verification of `message`, with the public keys in `keys`
    ("<selector>._domainkey.<domain> <TXT record>" lines: its TestPublicKeys). Its resolver,
    libunbound, cannot be pointed at a DNS server on a high port, so the keys come from the
    same records the test's Knot server serves, as a file."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "opendkim.conf").write_text(
        f"Mode v\nTestPublicKeys {keys}\nSyslog no\nLogResults yes\nLogWhy yes\n")
    (work / "message.eml").write_bytes(message)
    result = subprocess.run([OPENDKIM, "-x", str(work / "opendkim.conf"), "-f",
                             "-t", str(work / "message.eml")],
                            capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def sign(message: bytes, domain: str, selector: str, key: Path) -> bytes:
    result = subprocess.run([TESTMSG, "-C", "-d", domain, "-s", selector, "-k", str(key)],
                            input=message, capture_output=True, timeout=60, check=True)
    return result.stdout
