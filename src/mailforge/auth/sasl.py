"""SASL for SMTP AUTH, POP3 AUTH and IMAP AUTHENTICATE: PLAIN (RFC 4616), LOGIN (the
draft-murchison-sasl-login exchange), CRAM-MD5 (RFC 2195) and SCRAM-SHA-256 (RFC 7677).

Sans-IO: a protocol session keeps an `AuthExchange`, starts it with the mechanism the client
names, passes it the client's lines and words each `Step` as its protocol does (a challenge is
"334 ..." in SMTP, "+ ..." in POP3 and IMAP) until the step ends the exchange. Which mechanisms
are offered, base64, length limits and cancelling live here, so every protocol gets them alike.
Whatever the client sends, bad input ends in a failure with a reason, never an exception.
Reasons are fit for logs and never say whether a user exists: wrong passwords, unknown and
disabled users all give AUTH_FAILED, with the same work done (see api.Authenticator).

NTLM is deliberately absent (broken crypto); SCRAM-SHA-256 is what replaces it. SCRAM channel
binding (the -PLUS variants) is not offered, so a client asking for it is refused.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Callable, Generator

from ..addresses import normalize_address
from ..errors import UsageError
from .api import AccountsUnavailable, Authenticator
from .proxylogin import ProxyLogins

MECHANISMS = ("SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN")
# They put the password itself on the wire: only inside TLS, unless the operator allows it.
PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
# Longest client line, in base64 characters. Every honest message here is well under 1 KiB
# (a 254-octet address, a password, a nonce); the bound keeps a hostile client from making us
# decode and hash megabytes.
MAX_LINE = 8192
# RFC 4954 section 4 (and RFC 3501 6.2.2, RFC 5034 4): a lone "*" cancels the exchange.
CANCEL = "*"
# RFC 4954 section 4: "=" as the initial response stands for an empty one.
EMPTY_INITIAL_RESPONSE = "="
AUTH_FAILED = "authentication failed"
# 18 random bytes, 24 base64url characters: the RFC 5802 server nonce, unguessable per login.
SCRAM_NONCE_BYTES = 18

# RFC 5802 section 7: a nonce is printable ASCII without ",".
_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
# In a saslname "=" only starts "=2C" (",") or "=3D" ("=").
_BAD_SASLNAME_ESCAPE = re.compile(r"=(?!2C|3D)")


class StepKind(enum.StrEnum):
    """Where a step leaves the exchange."""

    CHALLENGE = "challenge"  # send `challenge`; the client's next line answers it
    SUCCESS = "success"      # over: `user` is logged in
    FAILURE = "failure"      # over: refused for `reason` (the brute-force defence counts it)
    # Only from an AuthExchange, and answered without counting a failure:
    CANCELLED = "cancelled"      # over: the client answered "*"
    NEEDS_TLS = "needs_tls"      # not begun: a plaintext mechanism outside TLS
    UNSUPPORTED = "unsupported"  # not begun: a mechanism we do not offer
    # Over: the accounts database could not answer (auth.api.AccountsUnavailable), so the
    # client gets a temporary failure, neither success nor a failed login to count.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Step:
    """What to tell the client: a base64 `challenge` to send, or the end of the exchange with
    the canonical address of the `user` (success) or a `reason` (failure)."""

    kind: StepKind
    challenge: str = ""
    user: str = ""
    reason: str = ""
    # On success, the cluster node that logged in on the user's behalf (auth.proxylogin).
    via: str = ""


class SASLError(Exception):
    """A mistake of the calling protocol code (an unknown mechanism), not of the client."""


class _Refused(Exception):
    """Ends an exchange with a failure; the message is the reason."""


class _NeedsTLS(Exception):
    """PLAIN outside TLS, taken only for a proxied login, carried a user's own password."""


class _Proxied(Exception):
    """Ends an exchange with a proxied login: args are the user and the node."""


# A mechanism is a generator: it gets the initial response (None when absent), yields each
# challenge, receives each decoded client response, and returns the authenticated user or
# raises _Refused.
Exchange = Generator[bytes, bytes, str]
Mechanism = Callable[[Authenticator, str, "bytes | None"], Exchange]


def mechanisms(tls_active: bool, allow_plaintext: bool) -> list[str]:
    """The mechanisms to advertise (and to accept: protocol code refuses any other name)."""
    if tls_active or allow_plaintext:
        return list(MECHANISMS)
    return [name for name in MECHANISMS if name not in PLAINTEXT_MECHANISMS]


class AuthExchange:
    """The SASL exchange of one protocol session (SMTP AUTH, POP3 AUTH, IMAP AUTHENTICATE),
    from the mechanism the client names to the step that ends it; one login after another may
    go through it."""

    def __init__(self, accounts: Authenticator, hostname: str,
                 proxy_logins: ProxyLogins | None = None) -> None:
        """`proxy_logins`: on a connection from a cluster peer, the proxied logins it may make
        (PLAIN with the master secret, even where plaintext mechanisms are not offered)."""
        self._accounts, self._hostname = accounts, hostname
        self._proxy_logins = proxy_logins
        self._session: SASLSession | None = None

    @property
    def active(self) -> bool:
        """A challenge is out: the client's next line answers it (and is no command)."""
        return self._session is not None

    def start(self, mechanism: str, initial_response: str | None, offered: list[str]) -> Step:
        """Begin with `mechanism` if it is among the `offered` (see `mechanisms`)."""
        mechanism = mechanism.upper()
        # A cluster peer's proxied login travels in the clear on the internal network: PLAIN
        # is taken for it alone where plaintext mechanisms are not offered.
        proxy_only = mechanism == "PLAIN" and self._proxy_logins is not None
        if mechanism not in offered and not proxy_only:
            kind = StepKind.NEEDS_TLS if mechanism in PLAINTEXT_MECHANISMS else StepKind.UNSUPPORTED
            return Step(kind)
        self._session = SASLSession(mechanism, self._accounts, self._hostname,
                                    self._proxy_logins, passwords=mechanism in offered)
        return self._went_on(self._session.start(initial_response))

    def answer(self, line: bytes) -> Step:
        """Go on with the client's line, as read, that answers the last challenge."""
        assert self._session is not None
        # No failed login (nothing for the brute-force defence to count): the protocols give
        # it a reply of its own (RFC 4954 4: SMTP's 501).
        if line.strip() == CANCEL.encode():
            self._session = None
            return Step(StepKind.CANCELLED)
        return self._went_on(self._session.step(line.decode("ascii", "replace")))

    def abort(self) -> None:
        """The answer could not be read (too long): the exchange is over."""
        self._session = None

    def _went_on(self, step: Step) -> Step:
        if step.kind is not StepKind.CHALLENGE:
            self._session = None
        return step


class SASLSession:
    def __init__(self, mechanism: str, accounts: Authenticator, hostname: str,
                 proxy_logins: ProxyLogins | None = None, passwords: bool = True) -> None:
        """`proxy_logins` and `passwords` (whether a user's own password may be taken) are
        PLAIN's: see AuthExchange."""
        self.mechanism = mechanism.upper()
        run = _MECHANISMS.get(self.mechanism)
        if run is None:
            raise SASLError("unsupported mechanism")
        if run is _plain:
            run = functools.partial(_plain, proxy_logins=proxy_logins, passwords=passwords)
        self._run, self._accounts, self._hostname = run, accounts, hostname
        self._exchange: Exchange | None = None
        self._finished = False

    def start(self, initial_response: str | None) -> Step:
        """Begin, with the initial response as sent on the AUTH line (None if there was none)."""
        if self._exchange is not None:
            return self._finish(Step(StepKind.FAILURE, reason="exchange already started"))
        try:
            initial = _initial_bytes(initial_response)
        except _Refused as exc:
            return self._finish(Step(StepKind.FAILURE, reason=str(exc)))
        exchange = self._exchange = self._run(self._accounts, self._hostname, initial)
        return self._advance(lambda: exchange.send(None))

    def step(self, client_line: str) -> Step:
        """Go on with the client's answer to the last challenge."""
        exchange = self._exchange
        if exchange is None or self._finished:
            return self._finish(Step(StepKind.FAILURE, reason="no exchange in progress"))
        if client_line.strip() == CANCEL:
            return self._finish(Step(StepKind.FAILURE, reason="exchange cancelled by the client"))
        return self._advance(lambda: exchange.send(_decode(client_line)))

    def _advance(self, send: Callable[[], bytes]) -> Step:
        try:
            challenge = send()
        except StopIteration as done:
            return self._finish(Step(StepKind.SUCCESS, user=done.value))
        except _Refused as exc:
            return self._finish(Step(StepKind.FAILURE, reason=str(exc)))
        except _Proxied as proxied:
            user, node = proxied.args
            return self._finish(Step(StepKind.SUCCESS, user=user, via=node))
        except _NeedsTLS:
            return self._finish(Step(StepKind.NEEDS_TLS))
        except AccountsUnavailable:
            return self._finish(Step(StepKind.UNAVAILABLE))
        return Step(StepKind.CHALLENGE, challenge=base64.b64encode(challenge).decode("ascii"))

    def _finish(self, step: Step) -> Step:
        self._finished = True
        if self._exchange is not None:
            self._exchange.close()
        return step


# -- the mechanisms

def _plain(accounts: Authenticator, hostname: str, initial: bytes | None,
           proxy_logins: ProxyLogins | None = None, passwords: bool = True) -> Exchange:
    """RFC 4616: authzid NUL authcid NUL password, in one message. From a cluster peer
    (`proxy_logins`), an authzid other than the authcid is a proxied login: the authcid is
    the node, the password the master secret."""
    message = initial if initial is not None else (yield b"")
    fields = message.split(b"\0")
    if len(fields) != 3:
        raise _Refused("PLAIN takes authzid, user and password separated by NUL")
    authzid, user, password = map(_text, fields)
    if proxy_logins is not None and authzid and _canonical(authzid) != _canonical(user):
        if not proxy_logins.authorize(authzid, user, password):
            raise _Refused(AUTH_FAILED)
        raise _Proxied(normalize_address(authzid), user)
    if not passwords:
        raise _NeedsTLS()
    _check_authzid(authzid, user)
    if not accounts.check_password(user, password):
        raise _Refused(AUTH_FAILED)
    return normalize_address(user)


def _login(accounts: Authenticator, hostname: str, initial: bytes | None) -> Exchange:
    """The LOGIN draft: user and password in two answers; some clients send the user on the
    AUTH line."""
    user = _text(initial if initial is not None else (yield b"Username:"))
    password = _text((yield b"Password:"))
    if not accounts.check_password(user, password):
        raise _Refused(AUTH_FAILED)
    return normalize_address(user)


def _cram_md5(accounts: Authenticator, hostname: str, initial: bytes | None) -> Exchange:
    """RFC 2195: the client answers "user hexdigest", HMAC-MD5 of our challenge."""
    # Imported here, as in sqlite.credentials: importing speedups may log a warning.
    from ..speedups import cram_challenge

    if initial is not None:
        raise _Refused("CRAM-MD5 takes no initial response: the server speaks first")
    challenge = cram_challenge(hostname)
    # The digest has no spaces; a user name may.
    user, space, digest = _text((yield challenge)).rpartition(" ")
    if not space:
        raise _Refused("CRAM-MD5 takes a user and a digest separated by a space")
    if not accounts.verify_cram_md5(user, challenge, digest):
        raise _Refused(AUTH_FAILED)
    return normalize_address(user)


def _scram_sha256(accounts: Authenticator, hostname: str, initial: bytes | None) -> Exchange:
    """RFC 5802 with SHA-256 (RFC 7677), no channel binding."""
    client_first = _text(initial if initial is not None else (yield b""))
    gs2_header, authzid, client_first_bare = _split_gs2(client_first)
    user, client_nonce = _parse_client_first_bare(client_first_bare)
    _check_authzid(authzid, user)
    # Both looked up whatever the answer, so that a known user costs what an unknown one does.
    decoy = accounts.scram_decoy(user)
    record = accounts.scram_sha256(user)
    keys = record or decoy
    nonce = client_nonce + secrets.token_urlsafe(SCRAM_NONCE_BYTES)
    server_first = f"r={nonce},s={_b64(keys.salt)},i={keys.iterations}"
    client_final = _text((yield server_first.encode("ascii")))
    client_final_bare, proof = _parse_client_final(client_final, gs2_header, nonce)
    auth_message = ",".join((client_first_bare, server_first, client_final_bare)).encode()
    client_signature = hmac.digest(keys.stored_key, auth_message, "sha256")
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature))
    proven = hmac.compare_digest(hashlib.sha256(client_key).digest(), keys.stored_key)
    if not proven or record is None:
        raise _Refused(AUTH_FAILED)
    server_signature = hmac.digest(keys.server_key, auth_message, "sha256")
    # RFC 4954 (and 3501, 5034): data with the outcome goes as one more challenge, answered
    # with an empty line.
    if (yield b"v=" + base64.b64encode(server_signature)) != b"":
        raise _Refused("SCRAM-SHA-256: expected an empty answer to the server signature")
    return normalize_address(user)


_MECHANISMS: dict[str, Mechanism] = {
    "SCRAM-SHA-256": _scram_sha256, "CRAM-MD5": _cram_md5, "PLAIN": _plain, "LOGIN": _login,
}


# -- SCRAM messages

def _split_gs2(client_first: str) -> tuple[str, str, str]:
    """The GS2 header (kept whole: the client echoes it in c=), the authzid and the rest."""
    flag, _, rest = client_first.partition(",")
    authzid_field, comma, bare = rest.partition(",")
    if flag.startswith("p="):
        raise _Refused("SCRAM-SHA-256: channel binding is not supported; use n,,")
    # "y": the client could bind but believes we cannot, which is right.
    if flag not in ("n", "y") or not comma:
        raise _Refused("SCRAM-SHA-256: malformed GS2 header")
    authzid = ""
    if authzid_field:
        if not authzid_field.startswith("a="):
            raise _Refused("SCRAM-SHA-256: malformed authzid")
        authzid = _saslname(authzid_field[2:])
    return client_first[:len(client_first) - len(bare)], authzid, bare


def _parse_client_first_bare(bare: str) -> tuple[str, str]:
    if bare.startswith("m="):
        raise _Refused("SCRAM-SHA-256: mandatory extension not supported")
    fields = bare.split(",")
    if len(fields) < 2 or not fields[0].startswith("n=") or not fields[1].startswith("r="):
        raise _Refused("SCRAM-SHA-256: client-first message needs n= and r=")
    nonce = fields[1][2:]
    if not _NONCE.fullmatch(nonce):
        raise _Refused("SCRAM-SHA-256: malformed client nonce")
    return _saslname(fields[0][2:]), nonce


def _parse_client_final(message: str, gs2_header: str, nonce: str) -> tuple[str, bytes]:
    """The message without its proof (part of AuthMessage) and the decoded proof."""
    bare, sep, proof = message.rpartition(",p=")
    fields = bare.split(",")
    if not sep or len(fields) < 2:
        raise _Refused("SCRAM-SHA-256: client-final message needs c=, r= and p=")
    # Without channel binding, c= carries just the GS2 header: a mismatch means someone in
    # the middle changed what the client asked for.
    if fields[0] != "c=" + _b64(gs2_header.encode("utf-8")):
        raise _Refused("SCRAM-SHA-256: channel binding data does not match the GS2 header")
    if fields[1] != "r=" + nonce:
        raise _Refused("SCRAM-SHA-256: nonce mismatch")
    try:
        proof_bytes = base64.b64decode(proof, validate=True)
    except binascii.Error:
        raise _Refused("SCRAM-SHA-256: malformed proof") from None
    if len(proof_bytes) != hashlib.sha256().digest_size:
        raise _Refused("SCRAM-SHA-256: proof of the wrong length")
    return bare, proof_bytes


def _saslname(text: str) -> str:
    """RFC 5802 section 5.1: "," and "=" in names travel as "=2C" and "=3D"."""
    if not text or _BAD_SASLNAME_ESCAPE.search(text):
        raise _Refused("SCRAM-SHA-256: malformed user name")
    return text.replace("=2C", ",").replace("=3D", "=")


# -- shared helpers

def _initial_bytes(initial_response: str | None) -> bytes | None:
    if initial_response is None or initial_response == "":
        return None
    if initial_response == EMPTY_INITIAL_RESPONSE:
        return b""
    return _decode(initial_response)


def _decode(line: str) -> bytes:
    line = line.strip()
    if len(line) > MAX_LINE:
        raise _Refused(f"client line longer than {MAX_LINE} characters")
    try:
        return base64.b64decode(line.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise _Refused("malformed base64") from None


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refused("not UTF-8") from None


def _check_authzid(authzid: str, user: str) -> None:
    """Acting as someone else (proxy authorization) is not supported: an authzid, when given,
    must name the user who logs in."""
    if authzid and _canonical(authzid) != _canonical(user):
        raise _Refused("authorization identity differs from the user: "
                       "proxy authentication is not supported")


def _canonical(name: str) -> str:
    try:
        return normalize_address(name)
    except UsageError:
        return name


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
