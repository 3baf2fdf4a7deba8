"""ARC sealing (RFC 8617) of the mail we forward: aliases to remote addresses (queue/forwarding.py).

A forwarded message keeps its MAIL FROM, so SPF fails at the next hop, and a mailing-list-like
change could break its DKIM signature; the ARC set tells that hop what we saw when it reached
us. ARC-Authentication-Results carries our inbound verdict (our Authentication-Results header,
written at receipt by inbound.py), ARC-Message-Signature and ARC-Seal are made with the
forwarding domain's DKIM key (`mailforge dkim generate`), i= continues any chain the message
came with, and cv= is the chain's verification at receipt (the header's arc= result). dkimpy
does all of it, as for DKIM; like a DKIM signature, the set is made at relay time over exactly
the bytes relayed.

RFC 8617 defines only rsa-sha256: a domain with an Ed25519 key alone does not seal.
"""

from __future__ import annotations

import logging

import dkim

from .keys import KeyStore
from .signing import signed_headers  # importing signing also gives dkimpy OpenSSL's RSA

log = logging.getLogger("mailforge.dkim")

ARC_ALGORITHM = b"rsa-sha256"


class Sealer:
    """The RSA key of every domain that has one, loaded once, as the Signer's."""

    def __init__(self, keys: KeyStore, authserv_id: str) -> None:
        self._authserv_id = authserv_id.encode()
        self._keys = {key.domain: (key.selector.encode(), key.path.read_bytes())
                      for key in keys.signing_keys() if key.algorithm == "rsa"}

    def __bool__(self) -> bool:
        return bool(self._keys)

    def seal(self, message: bytes, domain: str) -> bytes:
        """`message` (CRLF line ends) with the next ARC set on top, or as it was when `domain`
        has no RSA key or we left no verdict in it (taken with inbound_checks off)."""
        key = self._keys.get(domain)
        if key is None:
            log.info("not ARC-sealed: %s has no RSA DKIM key", domain)
            return message
        selector, private = key
        arc = dkim.ARC(message, linesep=b"\r\n", signature_algorithm=ARC_ALGORITHM)
        try:
            arc_set = arc.sign(selector, domain.encode(), private, self._authserv_id,
                               include_headers=signed_headers(arc.headers))
        except dkim.DKIMException as exc:
            log.warning("cannot ARC-seal for %s with %s: %s", domain, selector.decode(), exc)
            return message
        if not arc_set:
            log.info("not ARC-sealed: no Authentication-Results of ours to seal")
        return b"".join(arc_set) + message
