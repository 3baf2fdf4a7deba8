"""What the rest of mailforge asks of the accounts database: the records it answers with, and
one narrow `typing.Protocol` per kind of question, each named for its consumer's need.

No SQL here, so consumers import this without importing a backend. The repositories of
auth/sql/, over the SQLite (auth/sqlite/) or the PostgreSQL (auth/postgresql/) database and
opened through auth.accounts, implement every protocol; another backend is one more
implementation of the same protocols.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import MailforgeError
from .passwords import ScramRecord

# SendLimit scopes, narrowest first: the first one found for a sender applies.
SEND_LIMIT_SCOPES = ("user", "domain", "system")
SEND_LIMIT_ACTIONS = ("throttle", "disable")
# Who may change a domain's public folders, besides a comma-separated list of addresses.
PUBLIC_EVERYONE = "*"
PUBLIC_NOBODY = ""


class RecipientStatus(enum.StrEnum):
    """What `lookup_recipient` found for an address."""

    OK = "ok"                # it reaches the Lookup's mailboxes or forwards (one at least)
    UNKNOWN = "unknown"      # no such address in our domains
    DISABLED = "disabled"    # every mailbox it reaches is disabled
    NOT_LOCAL = "not_local"  # the domain is not ours


@dataclass(frozen=True)
class Lookup:
    """Where mail to one address goes."""

    status: RecipientStatus
    mailboxes: list[str] = field(default_factory=list)
    # The subaddress cut off to find them ("tag" of alice+tag@...): delivery files the message
    # into the mailboxes' folder of that name where there is one.
    detail: str = ""
    # Addresses outside our domains that aliases forward it to: the delivery worker relays
    # the message to them (queue/forwarding.py).
    forwards: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UserInfo:
    address: str
    disabled: bool
    created: float
    node: str = ""  # the node that owns the mailbox, its own or its domain's ("": none)


# A cluster node's internal ports, when `node add` is not told others: the standard ones.
DEFAULT_NODE_PORTS = {"imap": 143, "pop3": 110, "smtp": 25}


@dataclass(frozen=True)
class Node:
    """A node of a cluster, and where the others reach its services (mailbox routing: its
    owned mailboxes' POP3/IMAP sessions are proxied there, their mail relayed there)."""

    name: str
    host: str
    imap_port: int = DEFAULT_NODE_PORTS["imap"]
    pop3_port: int = DEFAULT_NODE_PORTS["pop3"]
    smtp_port: int = DEFAULT_NODE_PORTS["smtp"]


@dataclass(frozen=True)
class SendLimit:
    """An outbound message limit: at most `messages` per `interval` seconds per sender.

    scope is "system" (name ""), "domain" (name a domain) or "user" (name an address); the
    narrowest one that exists applies. action: "throttle" (451 until the window allows) or
    "disable" (the mailbox may not send until `user enable`).
    """

    scope: str
    name: str
    messages: int
    interval: float
    action: str


@dataclass(frozen=True)
class SendStatus:
    """What the outbound limit needs to know of a sender: whether a "disable" action stopped
    it, and the limit that applies to it (None: no limit)."""

    disabled: bool
    limit: SendLimit | None


@dataclass(frozen=True)
class StoreSettings:
    """What the mailbox store needs to know of an account."""

    quota_bytes: int | None = None
    quota_messages: int | None = None
    public_folders: bool = False   # the domain shares public folders
    public_writer: bool = False    # this account may change them
    public_writers: str = PUBLIC_NOBODY  # who may: PUBLIC_EVERYONE or addresses (store/acl.py)


class RecipientResolver(Protocol):
    """SMTP's MAIL and RCPT, and local delivery: where mail to an address goes."""

    def lookup_recipient(self, address: str) -> Lookup: ...


class OwnerResolver(Protocol):
    """Mailbox routing (POP3/IMAP proxying, delivery): the node that owns a canonical mailbox
    address, by the mailbox's own setting or else its domain's; None when neither names one
    (the mailbox is served wherever its session or mail arrives)."""

    def owner(self, address: str) -> Node | None: ...


class LoginStatus(Protocol):
    """A proxied login (auth.proxylogin): may this mailbox log in at all (it exists, enabled)?"""

    def may_log_in(self, address: str) -> bool: ...


class Authenticator(Protocol):
    """Logins: USER/PASS, IMAP LOGIN and every SASL mechanism (auth.sasl). Each answer is
    False (or the decoy) alike for a wrong secret and an unknown, disabled or invalid address,
    with the same work done, so that neither answer nor timing tells which addresses exist."""

    def check_password(self, address: str, password: str) -> bool: ...

    def verify_cram_md5(self, address: str, challenge: bytes, response_digest: str) -> bool: ...

    def scram_sha256(self, address: str) -> ScramRecord | None: ...

    def scram_decoy(self, username: str) -> ScramRecord: ...


class APOPAuthenticator(Authenticator, Protocol):
    """POP3's logins: the others, and APOP (RFC 1939 7)."""

    def verify_apop(self, address: str, timestamp: str, digest: str) -> bool: ...


class SendLimitSource(Protocol):
    """The outbound limit (policy.limits.SendLimiter)."""

    def send_status(self, address: str) -> SendStatus: ...

    def send_disable(self, address: str) -> None: ...


class QuotaSource(Protocol):
    """Quota checks at RCPT and at delivery (store.quota): (bytes, messages) limits of a
    canonical address, None for no limit; (None, None) when the address is unknown."""

    def quota_limits(self, address: str) -> tuple[int | None, int | None]: ...


class StoreSettingsSource(Protocol):
    """Opening a mailbox (store.folders.open_mailbox): its quota and public-folder rights."""

    def store_settings(self, address: str) -> StoreSettings: ...


# -- the web console's administrators (admin/)

# "system": everything; "domain": only the domains assigned to it.
ADMIN_ROLES = ("system", "domain")


@dataclass(frozen=True)
class AdminInfo:
    name: str
    role: str
    domains: tuple[str, ...]  # what a "domain" administrator manages (empty for "system")
    created: float

    @property
    def is_system(self) -> bool:
        return self.role == "system"

    def manages(self, domain: str) -> bool:
        return self.is_system or domain in self.domains


@dataclass(frozen=True)
class AdminLogin:
    """A console session or an API token, as a request presents it."""

    admin: AdminInfo
    csrf: str  # the token every form of the session carries ("" for an API token)


@dataclass(frozen=True)
class AuditEntry:
    time: float
    admin: str
    client: str
    action: str
    detail: str


@dataclass(frozen=True)
class UserPage:
    """One page of a mailbox listing, and how many match in all."""

    users: list[UserInfo]
    total: int


class AdminDirectory(Protocol):
    """`mailforge admin` and the console's login: who may administer, and what."""

    def admin_add(self, name: str, password: str, role: str, domains: list[str]) -> None: ...

    def admin_remove(self, name: str, keep_a_system_admin: bool = False) -> None: ...

    def admin_passwd(self, name: str, password: str) -> None: ...

    def admin_set_role(self, name: str, role: str, domains: list[str],
                       keep_a_system_admin: bool = False) -> None: ...

    def admins(self) -> list[AdminInfo]: ...

    def check_admin_password(self, name: str, password: str) -> AdminInfo | None: ...


class AdminSessions(Protocol):
    """The console's logins (cookies) and the API's tokens, stored by hash; each answer None
    once the secret is unknown, expired or its administrator removed."""

    def open_session(self, name: str, lifetime: float) -> tuple[str, str]: ...

    def session(self, secret: str) -> AdminLogin | None: ...

    def close_session(self, secret: str) -> None: ...

    def issue_token(self, name: str) -> str: ...

    def token(self, secret: str) -> AdminLogin | None: ...


class AuditTrail(Protocol):
    """Every console and API action: who, what, when, from where."""

    def record(self, admin: str, client: str, action: str, detail: str) -> None: ...

    def recent(self, limit: int, admin: AdminInfo | None = None) -> list[AuditEntry]: ...


class MailboxListing(Protocol):
    """The console's mailbox list: searched and paged in SQL, so 10,000 mailboxes stay fast."""

    def users_page(self, domains: list[str] | None, search: str, offset: int,
                   limit: int) -> UserPage: ...


class AccountsUnavailable(MailforgeError):
    """The accounts database cannot answer now (down, unreachable, locked, unreadable): the
    question was not answered, so a login or a recipient gets a temporary error, never
    "wrong password" or "unknown user"; a delivery waits for its next try."""
