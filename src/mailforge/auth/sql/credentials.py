"""Logins: the mailboxes' password hashes, CRAM-MD5 states, SCRAM-SHA-256 records and APOP
secrets (auth.api.Authenticator and APOPAuthenticator)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from ...addresses import normalize_address
from ...errors import UsageError
from ..passwords import ScramRecord, check_new_password, hash_cram_md5, hash_password
from ..passwords import hash_scram_sha256
from ..passwords import cram_md5_state as parse_cram_md5
from ..passwords import parse_scram_sha256, scram_decoy, verify_password
from .database import Database
from .schema import DECOY_KEY


class Credentials:
    def __init__(self, database: Database) -> None:
        self._database = database

    def user_passwd(self, address: str, password: str) -> None:
        self._database.update_mailbox(address, "password = ?, cram_md5 = ?, scram_sha256 = ?",
                                      *password_columns(password))

    def check_password(self, address: str, password: str) -> bool:
        """For AUTH: False for a wrong password and for an unknown, disabled or invalid address."""
        row = self._database.fetchone("SELECT password, disabled FROM mailboxes WHERE address = ?",
                                      _login_address(address))
        if row is None or row[1]:
            # Spend the same time as a real check so that timing does not tell which
            # addresses exist.
            hash_password(password)
            return False
        return verify_password(password, row[0])

    def may_log_in(self, address: str) -> bool:
        """For a proxied login (auth.proxylogin), which has no password to check: whether the
        mailbox exists and is enabled."""
        row = self._database.fetchone("SELECT disabled FROM mailboxes WHERE address = ?",
                                      _login_address(address))
        return row is not None and not row[0]

    # -- APOP (RFC 1939 7)

    def set_apop_secret(self, address: str, secret: str | None) -> None:
        """APOP needs the secret itself on the server, so it is a secret of its own, set only
        for mailboxes whose clients need APOP, never the login password (None: no APOP)."""
        if secret is not None and not secret:
            raise UsageError("empty APOP secret refused")
        self._database.update_mailbox(address, "apop_secret = ?", secret)

    def verify_apop(self, address: str, timestamp: str, digest: str) -> bool:
        """Whether `digest` is MD5(timestamp + secret) in hex; False for an unknown, disabled or
        invalid address and for a mailbox without an APOP secret."""
        row = self._database.fetchone(
            "SELECT apop_secret, disabled FROM mailboxes WHERE address = ?",
            _login_address(address))
        usable = row is not None and not row[1] and row[0] is not None
        # The same work whether or not the account exists: timing tells nothing.
        secret = row[0] if usable else secrets.token_hex(16)
        expected = hashlib.md5((timestamp + secret).encode()).hexdigest().encode()
        # As bytes: compare_digest refuses str with non-ASCII, which a client may send.
        claimed = digest.lower().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(expected, claimed) and usable

    # -- CRAM-MD5 (RFC 2195)

    def cram_md5_state(self, address: str) -> bytes | None:
        """For AUTH CRAM-MD5: the stored HMAC-MD5 state; None for an unknown, disabled or invalid
        address and for a mailbox without a (valid) state, see database._MIGRATIONS."""
        row = self._database.fetchone("SELECT cram_md5, disabled FROM mailboxes WHERE address = ?",
                                      _login_address(address))
        if row is None or row[1] or row[0] is None:
            return None
        try:
            return parse_cram_md5(row[0])
        except ValueError:
            return None

    def verify_cram_md5(self, address: str, challenge: bytes, response_digest: str) -> bool:
        """For AUTH CRAM-MD5: whether `response_digest`, the client's hex HMAC-MD5 of
        `challenge`, is right; False whenever `cram_md5_state` is None."""
        # Imported here, as in passwords.hash_cram_md5: importing speedups may log a warning.
        from ...speedups import cram_verify
        from ...speedups.crammd5 import STATE_BYTES

        # Non-ASCII becomes "?", which is not hex, so the check fails rather than raises.
        response = response_digest.encode("ascii", "replace")
        state = self.cram_md5_state(address)
        if state is None:
            # Spend the same time as a real check so that timing does not tell which addresses
            # exist. The decoy state is public, so its result must not count.
            cram_verify(bytes(STATE_BYTES), challenge, response)
            return False
        return cram_verify(state, challenge, response)

    # -- SCRAM-SHA-256 (RFC 7677)

    def scram_sha256(self, address: str) -> ScramRecord | None:
        """For AUTH SCRAM-SHA-256: the stored record; None for an unknown, disabled or invalid
        address and for a mailbox without a (valid) record, see database._MIGRATIONS."""
        row = self._database.fetchone(
            "SELECT scram_sha256, disabled FROM mailboxes WHERE address = ?",
            _login_address(address))
        if row is None or row[1] or row[0] is None:
            return None
        try:
            return parse_scram_sha256(row[0])
        except ValueError:
            return None

    def scram_decoy(self, username: str) -> ScramRecord:
        """What SCRAM-SHA-256 shows a client whose `username` has no record: the same salt on
        every attempt and in every worker, so a changing salt does not give away unknown users."""
        key = self._database.fetchone("SELECT value FROM settings WHERE name = ?", DECOY_KEY)[0]
        return scram_decoy(key, _login_address(username) or username)


def password_columns(password: str) -> tuple[str, str, str | None]:
    """The scrypt hash, the CRAM-MD5 state and the SCRAM-SHA-256 record. The state is
    password-equivalent for CRAM-MD5 and, being unsalted MD5, far cheaper to attack than the
    hash: database.DB_MODE guards them all."""
    check_new_password(password)
    try:
        scram = hash_scram_sha256(password)
    except ValueError:
        # SASLprep refuses it (a control character, say): SCRAM clients would refuse it too,
        # so this mailbox logs in with the other mechanisms only.
        scram = None
    return hash_password(password), hash_cram_md5(password), scram


def _login_address(address: str) -> str:
    """The canonical form, or "" (which matches no mailbox) for what is not an address."""
    try:
        return normalize_address(address)
    except UsageError:
        return ""
