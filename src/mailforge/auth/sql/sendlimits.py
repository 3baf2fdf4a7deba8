"""Outbound message limits of the system, domains and users, and the flag that a limit's
"disable" action sets on a mailbox (auth.api.SendLimitSource)."""

from __future__ import annotations

import math

from ...errors import UsageError
from ..api import SEND_LIMIT_ACTIONS, SEND_LIMIT_SCOPES, SendLimit, SendStatus
from .database import MAX_INTEGER, Database, domain_of, require_domain, require_mailbox

# A sender's disabled flag and the limits that may apply to it, narrowest first, in one query:
# the LEFT JOINs on the one-row `sender` keep a row (of NULLs) for an unknown address and for
# a sender without limits.
_SEND_STATUS = """
SELECT mailboxes.send_disabled, send_limits.*
FROM (SELECT ? AS address, ? AS domain) AS sender
LEFT JOIN mailboxes ON mailboxes.address = sender.address
LEFT JOIN send_limits ON (send_limits.scope = 'user' AND send_limits.name = sender.address)
    OR (send_limits.scope = 'domain' AND send_limits.name = sender.domain)
    OR (send_limits.scope = 'system' AND send_limits.name = '')
ORDER BY CASE send_limits.scope WHEN 'user' THEN 0 WHEN 'domain' THEN 1 ELSE 2 END
LIMIT 1
"""


class SendLimits:
    def __init__(self, database: Database) -> None:
        self._database = database

    def limit_set(self, limit: SendLimit) -> None:
        if limit.scope not in SEND_LIMIT_SCOPES or limit.action not in SEND_LIMIT_ACTIONS:
            raise UsageError(f"bad limit {limit}")
        # NaN fails every comparison, so each bound is asked the way round that refuses it.
        if not (1 <= limit.messages <= MAX_INTEGER and 0 < limit.interval < math.inf):
            raise UsageError(f"a limit needs 1 to {MAX_INTEGER} messages and an interval of "
                             "seconds above 0, finite")
        with self._database.write() as db:
            if limit.scope == "domain":
                require_domain(db, limit.name)
            elif limit.scope == "user":
                require_mailbox(db, limit.name)
            db.execute("INSERT INTO send_limits VALUES (?, ?, ?, ?, ?) ON CONFLICT (scope, name) "
                       "DO UPDATE SET messages = excluded.messages, interval = excluded.interval, "
                       "action = excluded.action",
                       (limit.scope, limit.name, limit.messages, limit.interval, limit.action))

    def limit_reset(self, scope: str, name: str = "") -> int:
        """Clear the settings below a level (system: every domain's and user's; domain: its
        users'), and a user's own setting for scope "user"; returns how many were removed."""
        with self._database.write() as db:
            if scope == "system":
                cursor = db.execute("DELETE FROM send_limits WHERE scope != 'system'")
            elif scope == "domain":
                require_domain(db, name)
                cursor = db.execute("DELETE FROM send_limits WHERE scope = 'user' AND "
                                    "name IN (SELECT address FROM mailboxes WHERE domain = ?)",
                                    (name,))
            else:
                cursor = db.execute("DELETE FROM send_limits WHERE scope = 'user' AND name = ?",
                                    (name,))
            return cursor.rowcount

    def limits(self) -> list[SendLimit]:
        rows = self._database.fetchall("SELECT * FROM send_limits ORDER BY scope DESC, name")
        return [SendLimit(*row) for row in rows]

    def send_status(self, address: str) -> SendStatus:
        """Of a canonical address: whether it may not send, and the limit that applies to it:
        its own, else its domain's, else the system's."""
        disabled, *limit = self._database.fetchone(_SEND_STATUS, address, domain_of(address))
        return SendStatus(bool(disabled), None if limit[0] is None else SendLimit(*limit))

    def send_disable(self, address: str) -> None:
        self._database.update_mailbox(address, "send_disabled = ?", 1)
