"""What the mailbox store needs to know of accounts: quota limits per mailbox, and per domain
whether its public folders are shared and who may change them (auth.api.QuotaSource and
StoreSettingsSource)."""

from __future__ import annotations

from ...addresses import normalize_address, normalize_domain
from ...errors import UsageError
from ..api import PUBLIC_EVERYONE, PUBLIC_NOBODY, StoreSettings
from .database import MAX_BIGINT, Database, domain_of, require_domain


class MailboxSettings:
    def __init__(self, database: Database) -> None:
        self._database = database

    def set_quota(self, address: str, limit_bytes: int | None,
                  limit_messages: int | None = None) -> None:
        for limit in (limit_bytes, limit_messages):
            if limit is not None and limit < 0:
                raise UsageError("a quota cannot be negative")
            if limit is not None and limit > MAX_BIGINT:
                raise UsageError(f"a quota cannot be above {MAX_BIGINT}")
        self._database.update_mailbox(address, "quota_bytes = ?, quota_messages = ?",
                                      limit_bytes, limit_messages)

    def quota_limits(self, address: str) -> tuple[int | None, int | None]:
        """(bytes, messages) limits of a canonical address; (None, None) when unknown."""
        row = self._database.fetchone("SELECT quota_bytes, quota_messages FROM mailboxes "
                                      "WHERE address = ?", address)
        return (row[0], row[1]) if row else (None, None)

    def set_public_folders(self, domain: str, enabled: bool, writers: str | None = None) -> None:
        """Share (or stop sharing) a domain's public folders; `writers` is PUBLIC_EVERYONE,
        PUBLIC_NOBODY or comma-separated addresses of the domain (None: leave as it is)."""
        domain = normalize_domain(domain)
        with self._database.write() as db:
            require_domain(db, domain)
            if writers is not None:
                writers = _public_writers(writers, domain)
                db.execute("UPDATE domains SET public_writers = ? WHERE name = ?",
                           (writers, domain))
            db.execute("UPDATE domains SET public_folders = ? WHERE name = ?",
                       (int(enabled), domain))

    def public_folders(self, domain: str) -> tuple[bool, str]:
        """(enabled, writers) of a hosted domain."""
        enabled, writers = self._database.fetchone(
            "SELECT public_folders, public_writers FROM domains WHERE name = ?",
            self._database.known_domain(domain))
        return bool(enabled), writers

    def store_settings(self, address: str) -> StoreSettings:
        """Quota and public-folder rights of a canonical mailbox address, in one query."""
        row = self._database.fetchone(
            "SELECT quota_bytes, quota_messages, public_folders, public_writers "
            "FROM mailboxes JOIN domains ON domains.name = mailboxes.domain "
            "WHERE address = ?", address)
        if row is None:
            return StoreSettings()
        quota_bytes, quota_messages, public, writers = row
        writer = writers == PUBLIC_EVERYONE or address in writers.split(",")
        return StoreSettings(quota_bytes, quota_messages, bool(public), bool(public) and writer,
                             writers if public else PUBLIC_NOBODY)


def _public_writers(writers: str, domain: str) -> str:
    if writers in (PUBLIC_EVERYONE, PUBLIC_NOBODY):
        return writers
    addresses = [normalize_address(a) for a in writers.split(",") if a.strip()]
    for address in addresses:
        if domain_of(address) != domain:
            raise UsageError(f"{address} is not in {domain}: only its own mailboxes can write "
                             "to a domain's public folders")
    return ",".join(addresses)
