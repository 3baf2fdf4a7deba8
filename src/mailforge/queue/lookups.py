"""The accounts answers a delivery batch reuses.

Every copy asks where its recipient's mail goes and what its mailbox's quota is: two SQLite
reads, a fifth of a delivery worker's CPU time with one busy mailbox (py-spy, issue 21).
Within one batch (at most BATCH_ENTRIES messages, well under a second) each address is
looked up once; the next batch asks again, so a change to the accounts is seen at once.
"""

from __future__ import annotations

from ..auth.api import Lookup, QuotaSource, RecipientResolver


class BatchLookups:
    """A RecipientResolver and QuotaSource over the real ones that remembers their answers."""

    def __init__(self, recipients: RecipientResolver, quotas: QuotaSource) -> None:
        self._recipients = recipients
        self._quotas = quotas
        self._lookups: dict[str, Lookup] = {}
        self._limits: dict[str, tuple[int | None, int | None]] = {}

    def lookup_recipient(self, address: str) -> Lookup:
        found = self._lookups.get(address)
        if found is None:
            found = self._lookups[address] = self._recipients.lookup_recipient(address)
        return found

    def quota_limits(self, address: str) -> tuple[int | None, int | None]:
        found = self._limits.get(address)
        if found is None:
            found = self._limits[address] = self._quotas.quota_limits(address)
        return found
