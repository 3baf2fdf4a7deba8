"""The web console's administrators, their logins and API tokens, and the audit trail
(auth.api.AdminDirectory, AdminSessions and AuditTrail).

Passwords are hashed as mailboxes' are (passwords.hash_password). A login cookie or an API
token is a random secret of which only the SHA-256 is stored: a copy of the file opens no
session. A session has a fixed end; a token lasts until its administrator is removed.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from ...addresses import normalize_domain
from ...errors import UsageError
from ..api import ADMIN_ROLES, AdminInfo, AdminLogin, AuditEntry
from ..passwords import check_new_password, hash_password, verify_password
from .database import Connection, Database, exists, require_domain

# Short names people type at a login page and in `mailforge admin`; no "@": not mailboxes.
ADMIN_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
SECRET_BYTES = 32
SESSION, TOKEN = "session", "token"


def admin_name(text: str) -> str:
    name = text.strip().lower()
    if not ADMIN_NAME.fullmatch(name):
        raise UsageError(f"bad administrator name {text!r} (letters, digits, . _ -; up to 64)")
    return name


def _require_a_system_admin(db: Connection, changed: str) -> None:
    """(In the change's own write transaction, which writers take one at a time: two
    administrators demoting each other cannot both pass.) Undo a change that left no system
    administrator: nobody could then reach the console's system pages."""
    if not exists(db, "SELECT 1 FROM admins WHERE role = ?", "system"):
        raise UsageError(f"{changed} is the last system administrator; add another first")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Admins:
    def __init__(self, database: Database) -> None:
        self._database = database

    # -- AdminDirectory

    def admin_add(self, name: str, password: str, role: str, domains: list[str]) -> None:
        name = admin_name(name)
        canonical = _role_domains(role, domains)
        hashed = _hashed(password)
        with self._database.write() as db:
            if exists(db, "SELECT 1 FROM admins WHERE name = ?", name):
                raise UsageError(f"administrator {name} exists already")
            db.execute("INSERT INTO admins (name, password, role, created) VALUES (?, ?, ?, ?)",
                       (name, hashed, role, time.time()))
            _set_domains(db, name, canonical)

    def admin_remove(self, name: str, keep_a_system_admin: bool = False) -> None:
        """Its sessions and tokens go with it (ON DELETE CASCADE). `keep_a_system_admin`:
        refused (UsageError, nothing changed) when it was the last system administrator."""
        name = admin_name(name)
        with self._database.write() as db:
            if db.execute("DELETE FROM admins WHERE name = ?", (name,)).rowcount == 0:
                raise UsageError(f"no such administrator: {name}")
            if keep_a_system_admin:
                _require_a_system_admin(db, name)

    def admin_passwd(self, name: str, password: str) -> None:
        """A new password ends the administrator's console logins (not its API tokens): a
        reset after a leak must throw out whoever used the old one."""
        name = admin_name(name)
        hashed = _hashed(password)
        with self._database.write() as db:
            if db.execute("UPDATE admins SET password = ? WHERE name = ?", (hashed, name)).rowcount == 0:
                raise UsageError(f"no such administrator: {name}")
            db.execute("DELETE FROM admin_sessions WHERE admin = ? AND kind = ?", (name, SESSION))

    def admin_set_role(self, name: str, role: str, domains: list[str],
                       keep_a_system_admin: bool = False) -> None:
        """Its logins and tokens stay, and act with the new role from their next request.
        `keep_a_system_admin`: as for admin_remove."""
        name = admin_name(name)
        canonical = _role_domains(role, domains)
        with self._database.write() as db:
            if db.execute("UPDATE admins SET role = ? WHERE name = ?", (role, name)).rowcount == 0:
                raise UsageError(f"no such administrator: {name}")
            if keep_a_system_admin:
                _require_a_system_admin(db, name)
            db.execute("DELETE FROM admin_domains WHERE admin = ?", (name,))
            _set_domains(db, name, canonical)

    def admins(self) -> list[AdminInfo]:
        with self._database.read() as db:
            names = [row[0] for row in
                     db.execute("SELECT name FROM admins ORDER BY name").fetchall()]
            return [admin for name in names if (admin := _admin(db, name)) is not None]

    def check_admin_password(self, name: str, password: str) -> AdminInfo | None:
        """The administrator, or None for a wrong password or an unknown name (the same work
        either way, so that timing does not tell which names exist), or one removed while its
        password was checked."""
        try:
            name = admin_name(name)
        except UsageError:
            name = ""
        row = self._database.fetchone("SELECT password FROM admins WHERE name = ?", name)
        if row is None:
            hash_password(password)
            return None
        if not verify_password(password, row[0]):
            return None
        with self._database.read() as db:
            return _admin(db, name)

    # -- AdminSessions

    def open_session(self, name: str, lifetime: float) -> tuple[str, str]:
        """A new login for `name`: (cookie secret, CSRF token). Ended ones are swept here."""
        secret, csrf, now = secrets.token_urlsafe(SECRET_BYTES), secrets.token_urlsafe(SECRET_BYTES), time.time()
        with self._database.write() as db:
            db.execute("DELETE FROM admin_sessions WHERE kind = ? AND expires < ?", (SESSION, now))
            db.execute("INSERT INTO admin_sessions (secret_hash, admin, kind, csrf, created, expires) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (_digest(secret), name, SESSION, csrf, now, now + lifetime))
        return secret, csrf

    def session(self, secret: str) -> AdminLogin | None:
        return self._login(secret, SESSION)

    def close_session(self, secret: str) -> None:
        with self._database.write() as db:
            db.execute("DELETE FROM admin_sessions WHERE secret_hash = ?", (_digest(secret),))

    def issue_token(self, name: str) -> str:
        name = admin_name(name)
        secret = "mft_" + secrets.token_urlsafe(SECRET_BYTES)
        with self._database.write() as db:
            if not exists(db, "SELECT 1 FROM admins WHERE name = ?", name):
                raise UsageError(f"no such administrator: {name}")
            db.execute("INSERT INTO admin_sessions (secret_hash, admin, kind, csrf, created, expires) "
                       "VALUES (?, ?, ?, '', ?, NULL)", (_digest(secret), name, TOKEN, time.time()))
        return secret

    def token(self, secret: str) -> AdminLogin | None:
        return self._login(secret, TOKEN)

    def _login(self, secret: str, kind: str) -> AdminLogin | None:
        with self._database.read() as db:
            row = db.execute("SELECT admin, csrf, expires FROM admin_sessions "
                             "WHERE secret_hash = ? AND kind = ?", (_digest(secret), kind)).fetchone()
            if row is None or (row[2] is not None and row[2] < time.time()):
                return None
            admin = _admin(db, row[0])
            return None if admin is None else AdminLogin(admin, row[1])

    # -- AuditTrail

    def record(self, admin: str, client: str, action: str, detail: str) -> None:
        with self._database.write() as db:
            db.execute("INSERT INTO admin_audit (time, admin, client, action, detail) "
                       "VALUES (?, ?, ?, ?, ?)", (time.time(), admin, client, action, detail))

    def recent(self, limit: int, admin: AdminInfo | None = None) -> list[AuditEntry]:
        """The newest entries; `admin`: its own alone. Entries are kept by name, and a name
        may be given again after its administrator was removed: those from before this
        one was created are another's (of another domain, maybe)."""
        sql, params = "SELECT time, admin, client, action, detail FROM admin_audit", ()
        if admin is not None:
            sql, params = sql + " WHERE admin = ? AND time >= ?", (admin.name, admin.created)
        rows = self._database.fetchall(sql + " ORDER BY id DESC LIMIT ?", *params, limit)
        return [AuditEntry(*row) for row in rows]


def _role_domains(role: str, domains: list[str]) -> list[str]:
    """The domains, canonical and once each, if they fit the role."""
    if role not in ADMIN_ROLES:
        raise UsageError(f"role must be one of {', '.join(ADMIN_ROLES)}")
    if (role == "domain") != bool(domains):
        raise UsageError("a domain administrator needs --domain (one or more); "
                         "a system administrator takes none")
    return list(dict.fromkeys(normalize_domain(domain) for domain in domains))


def _hashed(password: str) -> str:
    check_new_password(password)
    return hash_password(password)


def _set_domains(db: Connection, name: str, domains: list[str]) -> None:
    for domain in domains:
        require_domain(db, domain)
    for domain in domains:
        db.execute("INSERT INTO admin_domains (admin, domain) VALUES (?, ?)", (name, domain))


def _admin(db: Connection, name: str) -> AdminInfo | None:
    """None when `name` is gone: removed since the caller read its name (a read's statements
    are each their own transaction, so another process's removal lands between them)."""
    row = db.execute("SELECT role, created FROM admins WHERE name = ?", (name,)).fetchone()
    if row is None:
        return None
    role, created = row
    domains = tuple(row[0] for row in db.execute(
        "SELECT domain FROM admin_domains WHERE admin = ? ORDER BY domain", (name,)).fetchall())
    return AdminInfo(name, role, domains, created)
