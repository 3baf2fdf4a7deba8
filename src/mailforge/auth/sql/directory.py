"""Who is here: hosted domains, mailboxes and aliases, and where mail to an address goes
(auth.api.RecipientResolver)."""

from __future__ import annotations

import time

from ...addresses import (is_address_literal, normalize_address, normalize_alias_source,
                          normalize_domain, split_subaddress)
from ...errors import UsageError
from ..api import Lookup, RecipientStatus, UserInfo, UserPage
from .credentials import password_columns
from .database import Connection, Database, count, domain_of, exists, is_domain, is_mailbox
from .database import require_domain, require_mailbox

# Aliases that point at aliases: deep enough for lists of lists, bounded so that neither a long
# chain nor an alias loop (a -> b -> a) turns one RCPT into unbounded work.
MAX_ALIAS_DEPTH = 8

# Every address an address reaches through aliases (itself included), with its mailbox's
# disabled flag (NULL: no mailbox: an alias, or a target in another domain), each once, nearest
# first. UNION (not UNION ALL) keeps the rows per depth to the distinct addresses; the depth
# bound ends loops. The CAST and the GROUP BY's second column are for PostgreSQL, which must
# know the recursive column's type and wants every selected column grouped (a mailbox's
# disabled flag is one value per address anyway).
_REACH = """
WITH RECURSIVE reach(address, depth) AS (
    VALUES (CAST(? AS TEXT), 0)
    UNION
    SELECT aliases.target, reach.depth + 1
    FROM aliases JOIN reach ON aliases.source = reach.address
    WHERE reach.depth < ?
)
SELECT reach.address, mailboxes.disabled
FROM reach LEFT JOIN mailboxes ON mailboxes.address = reach.address
GROUP BY reach.address, mailboxes.disabled
ORDER BY MIN(reach.depth), reach.address
"""
# Mailboxes as `user list` shows them, with the node that owns each (its own, else its domain's).
_USERS = ("SELECT address, disabled, mailboxes.created, COALESCE(mailboxes.node, domains.node) "
          "FROM mailboxes JOIN domains ON domains.name = mailboxes.domain")
# Is the address a mailbox or an alias source (the catch-all "@domain" included)?
_KNOWN = """
SELECT 1 FROM mailboxes WHERE address = ?
UNION ALL
SELECT 1 FROM aliases WHERE source = ?
LIMIT 1
"""


class Directory:
    def __init__(self, database: Database, recipient_delimiter: str = "") -> None:
        self._database = database
        self._delimiter = recipient_delimiter  # [server] recipient_delimiter; "" = none

    # -- domains

    def domain_add(self, name: str) -> None:
        domain = normalize_domain(name)
        if is_address_literal(domain):
            raise UsageError(f"{domain} is an address literal, not a domain that can be hosted")
        with self._database.write() as db:
            if is_domain(db, domain):
                raise UsageError(f"domain {domain} exists already")
            db.execute("INSERT INTO domains (name, created) VALUES (?, ?)", (domain, time.time()))

    def domain_remove(self, name: str) -> None:
        domain = normalize_domain(name)
        with self._database.write() as db:
            require_domain(db, domain)
            mailboxes = count(db, "SELECT COUNT(*) FROM mailboxes WHERE domain = ?", domain)
            aliases = count(db, "SELECT COUNT(*) FROM aliases WHERE domain = ?", domain)
            if mailboxes or aliases:
                raise UsageError(f"domain {domain} still has {mailboxes} mailbox(es) and "
                                 f"{aliases} alias(es); remove them first")
            db.execute("DELETE FROM domains WHERE name = ?", (domain,))
            # Its administrators' grants go with it: kept, they would hand the domain to its
            # old administrator the day someone adds it again.
            db.execute("DELETE FROM admin_domains WHERE domain = ?", (domain,))
            # Its outbound limit too: kept, it would bind whoever gets the domain next.
            db.execute("DELETE FROM send_limits WHERE scope = 'domain' AND name = ?", (domain,))

    def domains(self) -> list[str]:
        return [row[0] for row in self._database.fetchall("SELECT name FROM domains ORDER BY name")]

    # -- mailboxes

    def user_add(self, address: str, password: str) -> None:
        address = normalize_address(address)
        hashed, cram, scram = password_columns(password)
        domain = domain_of(address)
        with self._database.write() as db:
            require_domain(db, domain)
            if is_mailbox(db, address):
                raise UsageError(f"mailbox {address} exists already")
            if exists(db, "SELECT 1 FROM aliases WHERE source = ?", address):
                raise UsageError(f"{address} is an alias; remove the alias first")
            db.execute("INSERT INTO mailboxes (address, domain, password, cram_md5, "
                       "scram_sha256, created) VALUES (?, ?, ?, ?, ?, ?)",
                       (address, domain, hashed, cram, scram, time.time()))

    def user_remove(self, address: str) -> None:
        address = normalize_address(address)
        with self._database.write() as db:
            require_mailbox(db, address)
            db.execute("DELETE FROM mailboxes WHERE address = ?", (address,))
            # Its own outbound limit goes with it, not to the next mailbox of that address.
            db.execute("DELETE FROM send_limits WHERE scope = 'user' AND name = ?", (address,))

    def user_disable(self, address: str) -> None:
        self._database.update_mailbox(address, "disabled = ?", 1)

    def user_enable(self, address: str, sending: bool = True) -> None:
        """Undo `user_disable`, and with `sending` a limit's "disable" action."""
        if sending:
            self._database.update_mailbox(address, "disabled = ?, send_disabled = ?", 0, 0)
        else:
            self._database.update_mailbox(address, "disabled = ?", 0)

    def users(self, domain: str | None = None) -> list[UserInfo]:
        """With the node that owns each (its own, else its domain's)."""
        sql, params = _USERS, ()
        if domain is not None:
            sql, params = sql + " WHERE domain = ?", (self._database.known_domain(domain),)
        rows = self._database.fetchall(sql + " ORDER BY address", *params)
        return [UserInfo(address, bool(disabled), created, node or "")
                for address, disabled, created, node in rows]

    def user(self, address: str) -> UserInfo:
        """One mailbox, as `users` lists it; UsageError when there is no such mailbox."""
        address = normalize_address(address)
        row = self._database.fetchone(_USERS + " WHERE address = ?", address)
        if row is None:
            raise UsageError(f"no such mailbox: {address}")
        return UserInfo(row[0], bool(row[1]), row[2], row[3] or "")

    def users_page(self, domains: list[str] | None, search: str, offset: int,
                   limit: int) -> UserPage:
        """Mailboxes whose address contains `search`, of `domains` (None: every domain), in
        address order from `offset`: the primary key's order, so a page is an index walk."""
        if domains == []:
            # A domain administrator whose domains were all removed: PostgreSQL refuses "IN ()".
            return UserPage([], 0)
        where, params = ["address LIKE ? ESCAPE '\\'"], [f"%{_like_escape(search.lower())}%"]
        if domains is not None:
            where.append(f"domain IN ({', '.join('?' * len(domains))})")
            params.extend(domains)
        condition = " WHERE " + " AND ".join(where)
        with self._database.read() as db:
            total = count(db, "SELECT COUNT(*) FROM mailboxes" + condition, *params)
            rows = db.execute("SELECT address, disabled, created FROM mailboxes" + condition
                              + " ORDER BY address LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
        return UserPage([UserInfo(address, bool(disabled), created) for address, disabled, created in rows],
                        total)

    # -- aliases

    def alias_add(self, source: str, target: str, check_target: bool = True) -> None:
        """`source` is an address, or "@domain": mail to any address of the domain that no
        mailbox or other alias has. `check_target`: a target in one of our domains must exist
        (False: taken on trust, as one elsewhere is)."""
        source, target = normalize_alias_source(source), normalize_address(target)
        if source == target:
            raise UsageError(f"alias {source} cannot point at itself")
        domain = domain_of(source)
        with self._database.write() as db:
            require_domain(db, domain)
            if is_mailbox(db, source):
                raise UsageError(f"{source} is a mailbox; an alias source must not be one")
            if exists(db, "SELECT 1 FROM aliases WHERE source = ? AND target = ?", source, target):
                raise UsageError(f"alias {source} -> {target} exists already")
            if check_target:
                _check_target(db, target)
            db.execute("INSERT INTO aliases (source, target, domain, created) VALUES (?, ?, ?, ?)",
                       (source, target, domain, time.time()))

    def alias_remove(self, source: str, target: str | None = None) -> None:
        """Remove one target of `source`, or with no target, the whole alias."""
        source = normalize_alias_source(source)
        sql, params = "DELETE FROM aliases WHERE source = ?", (source,)
        if target is not None:
            sql, params = sql + " AND target = ?", (source, normalize_address(target))
        with self._database.write() as db:
            if db.execute(sql, params).rowcount == 0:
                what = f"{source} -> {params[1]}" if target is not None else source
                raise UsageError(f"no such alias: {what}")

    def aliases(self, domain: str | None = None) -> list[tuple[str, str]]:
        sql, params = "SELECT source, target FROM aliases", ()
        if domain is not None:
            sql, params = sql + " WHERE domain = ?", (self._database.known_domain(domain),)
        return self._database.fetchall(sql + " ORDER BY source, target", *params)

    # -- delivery

    def lookup_recipient(self, address: str) -> Lookup:
        """Where mail to `address` goes; AddressError if it is not an address.

        Tried in turn, as Postfix's virtual_alias_maps does: the address, the address without
        its subaddress (alice+tag → alice, when [server] recipient_delimiter is set), and the
        domain's catch-all "@domain"; the first that is a mailbox or an alias is followed
        through the recursive alias walk. The enabled mailboxes it reaches are `mailboxes`;
        the targets it reaches in domains not ours are `forwards`, relayed to by the delivery
        worker. OK when there is one of either; an alias whose every target is a disabled
        mailbox is DISABLED.
        """
        address = normalize_address(address)
        domain = domain_of(address)
        subaddress = split_subaddress(address, self._delimiter)
        candidates = [(address, ""), *([subaddress] if subaddress else []), ("@" + domain, "")]
        with self._database.read() as db:
            if not is_domain(db, domain):
                return Lookup(RecipientStatus.NOT_LOCAL)
            found = next(((name, detail) for name, detail in candidates
                          if exists(db, _KNOWN, name, name)), None)
            if found is None:
                return Lookup(RecipientStatus.UNKNOWN)
            name, detail = found
            rows = db.execute(_REACH, (name, MAX_ALIAS_DEPTH)).fetchall()
            # An alias source is always of our domains; any other address without a mailbox
            # is a remote target (a local one that was removed is neither).
            forwards = [target for target, disabled in rows
                        if disabled is None and not is_domain(db, domain_of(target))]
        mailboxes = [mailbox for mailbox, disabled in rows if disabled is not None and not disabled]
        if mailboxes or forwards:
            return Lookup(RecipientStatus.OK, mailboxes, detail, forwards)
        disabled = any(flag for _, flag in rows)
        return Lookup(RecipientStatus.DISABLED if disabled else RecipientStatus.UNKNOWN)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _check_target(db: Connection, target: str) -> None:
    """A target in one of our domains must exist, which catches typos; one elsewhere is taken
    on trust."""
    if not is_domain(db, domain_of(target)):
        return
    if not (is_mailbox(db, target) or exists(db, "SELECT 1 FROM aliases WHERE source = ?", target)):
        raise UsageError(f"alias target {target} is neither a mailbox nor an alias")
