"""The accounts answers a delivery batch reuses.

Every copy asks where its recipient's mail goes and what its mailbox's quota is: two SQLite
reads, a fifth of a delivery worker's CPU time with one busy mailbox (py-spy, issue 21).
Within one batch (at most BATCH_ENTRIES messages, well under a second) each address is
looked up once; the next batch asks again, so a change to the accounts is seen at once.
"""

from __future__ import annotations

from ..auth.api import Lookup, Node, OwnerResolver, QuotaSource, RecipientResolver


class BatchLookups:
    """A RecipientResolver, QuotaSource and OwnerResolver over the real ones that remembers
    their answers. No `owners`: no mailbox has an owner node."""

    def __init__(self, recipients: RecipientResolver, quotas: QuotaSource,
                 owners: OwnerResolver | None = None) -> None:
        self._recipients = recipients
        self._quotas = quotas
        self._owners = owners
        self._lookups: dict[str, Lookup] = {}
        self._limits: dict[str, tuple[int | None, int | None]] = {}
        self._node_of: dict[str, Node | None] = {}

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

    def owner(self, address: str) -> Node | None:
        if self._owners is None:
            return None
        if address not in self._node_of:
            self._node_of[address] = self._owners.owner(address)
        return self._node_of[address]
