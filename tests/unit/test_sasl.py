"""SASL (auth/sasl.py) end to end against a real accounts database. The client side of every
exchange is computed here with the standard library, not with mailforge's code."""

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3

import pytest

from mailforge.auth import passwords
from mailforge.auth import sasl
from mailforge.auth.accounts import Accounts
from mailforge.auth.sasl import AUTH_FAILED, MAX_LINE, SASLError, SASLSession, mechanisms
from mailforge.auth.sql import schema as accounts_schema

from .test_accounts_cram import SCHEMA_1

HOST = "mail.example.com"
USER = "bob@example.com"
PASSWORD = "tanstaaf pässwörd"


pytestmark = pytest.mark.usefixtures("cheap_scrypt")


@pytest.fixture
def db(db):
    """The shared database, with a user and a disabled one."""
    db.directory.user_add(USER, PASSWORD)
    db.directory.user_add("off@example.com", PASSWORD)
    db.directory.user_disable("off@example.com")
    return db


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def session(db, mechanism: str) -> SASLSession:
    return SASLSession(mechanism, db.credentials, HOST)


def assert_failed(step: sasl.Step, reason: str = AUTH_FAILED) -> None:
    assert (step.kind, step.user, step.challenge) == ("failure", "", "")
    assert reason in step.reason


# -- advertising

def test_plaintext_mechanisms_need_tls_or_permission():
    assert mechanisms(False, False) == ["SCRAM-SHA-256", "CRAM-MD5"]
    assert mechanisms(True, False) == ["SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"]
    assert mechanisms(False, True) == ["SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN"]


@pytest.mark.parametrize("name", ["NTLM", "GSSAPI", "SCRAM-SHA-256-PLUS", "XOAUTH2", ""])
def test_unsupported_mechanism_is_a_caller_error(db, name):
    with pytest.raises(SASLError, match="unsupported mechanism"):
        session(db, name)


# -- PLAIN

@pytest.mark.parametrize("authzid", ["", USER, "Bob@EXAMPLE.com"])
def test_plain_with_initial_response(db, authzid):
    step = session(db, "plain").start(b64(f"{authzid}\0BOB@example.com\0{PASSWORD}"))
    assert (step.kind, step.user) == ("success", USER)


def test_plain_without_initial_response_gets_empty_challenge(db):
    auth = session(db, "PLAIN")
    step = auth.start(None)
    assert (step.kind, step.challenge) == ("challenge", "")
    assert auth.step(b64(f"\0{USER}\0{PASSWORD}")).user == USER


@pytest.mark.parametrize("user, password", [
    (USER, "wrong"), ("nobody@example.com", PASSWORD), ("off@example.com", PASSWORD),
    ("not an address", PASSWORD), ("", PASSWORD),
])
def test_plain_bad_credentials_all_look_alike(db, user, password):
    assert_failed(session(db, "PLAIN").start(b64(f"\0{user}\0{password}")))


def test_plain_refuses_proxy_authentication(db):
    step = session(db, "PLAIN").start(b64(f"alice@example.com\0{USER}\0{PASSWORD}"))
    assert_failed(step, "proxy authentication is not supported")


@pytest.mark.parametrize("payload, reason", [
    (b64(f"{USER}\0{PASSWORD}"), "separated by NUL"),
    (b64(f"\0{USER}\0{PASSWORD}\0x"), "separated by NUL"),
    ("=", "separated by NUL"),
    ("not base64!", "malformed base64"),
    ("AGJvYgBwdw", "malformed base64"),  # missing padding
    ("ünïcode", "malformed base64"),
    (b64(b"\0bob@example.com\0\xff\xfe"), "not UTF-8"),
    ("A" * (MAX_LINE + 4), "longer than"),
])
def test_plain_malformed_input_fails_without_exception(db, payload, reason):
    assert_failed(session(db, "PLAIN").start(payload), reason)


# -- LOGIN

def test_login_exchange(db):
    auth = session(db, "LOGIN")
    first = auth.start(None)
    assert unb64(first.challenge) == b"Username:"
    second = auth.step(b64(USER))
    assert unb64(second.challenge) == b"Password:"
    step = auth.step(b64(PASSWORD))
    assert (step.kind, step.user, step.challenge) == ("success", USER, "")
    assert_failed(auth.step(b64(PASSWORD)), "no exchange in progress")  # it is over


def test_login_success_and_user_on_auth_line(db):
    auth = session(db, "LOGIN")
    assert unb64(auth.start(b64("Bob@Example.com")).challenge) == b"Password:"
    step = auth.step(b64(PASSWORD) + "\r\n")
    assert (step.kind, step.user) == ("success", USER)


@pytest.mark.parametrize("user, password", [
    (USER, "wrong"), ("nobody@example.com", PASSWORD), ("off@example.com", PASSWORD),
])
def test_login_bad_credentials(db, user, password):
    auth = session(db, "LOGIN")
    auth.start(b64(user))
    assert_failed(auth.step(b64(password)))


# -- CRAM-MD5

def cram_start(db) -> tuple[SASLSession, bytes]:
    auth = session(db, "CRAM-MD5")
    step = auth.start(None)
    assert step.kind == "challenge"
    return auth, unb64(step.challenge)


def test_cram_md5_exchange(db):
    auth, challenge = cram_start(db)
    assert re.fullmatch(rb"<\d+\.\d+@mail\.example\.com>", challenge)
    digest = hmac.new(PASSWORD.encode(), challenge, "md5").hexdigest()
    step = auth.step(b64(f"Bob@example.com {digest}"))
    assert (step.kind, step.user) == ("success", USER)


def test_cram_md5_challenges_differ(db):
    assert cram_start(db)[1] != cram_start(db)[1]


@pytest.mark.parametrize("user, password", [
    (USER, "wrong"), ("nobody@example.com", PASSWORD), ("off@example.com", PASSWORD),
])
def test_cram_md5_bad_credentials(db, user, password):
    auth, challenge = cram_start(db)
    digest = hmac.new(password.encode(), challenge, "md5").hexdigest()
    assert_failed(auth.step(b64(f"{user} {digest}")))


def test_cram_md5_malformed(db):
    assert_failed(session(db, "CRAM-MD5").start(b64("x")), "no initial response")
    auth, _ = cram_start(db)
    assert_failed(auth.step(b64("nodigest")), "separated by a space")
    auth, _ = cram_start(db)
    assert_failed(auth.step(b64(f"{USER} zz")))


# -- SCRAM-SHA-256: a client after RFC 5802 section 3, independent of mailforge

def saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    return client_key, hashlib.sha256(client_key).digest(), server_key


class ScramClient:
    def __init__(self, user: str, password: str, gs2: str = "n,,", nonce: str | None = None):
        self.password, self.gs2 = password, gs2
        self.nonce = nonce or secrets.token_urlsafe(18)
        self.first_bare = f"n={saslname(user)},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> str:
        return self.gs2 + self.first_bare

    def final(self, server_first: str) -> str:
        fields = dict(field.split("=", 1) for field in server_first.split(","))
        assert fields["r"].startswith(self.nonce) and len(fields["r"]) > len(self.nonce)
        salt, iterations = base64.b64decode(fields["s"]), int(fields["i"])
        client_key, stored_key, server_key = scram_keys(self.password, salt, iterations)
        final_bare = f"c={b64(self.gs2)},r={fields['r']}"
        auth_message = f"{self.first_bare},{server_first},{final_bare}".encode()
        signature = hmac.new(stored_key, auth_message, "sha256").digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_signature = hmac.new(server_key, auth_message, "sha256").digest()
        return f"{final_bare},p={b64(proof)}"


def scram_first(db, client: ScramClient) -> tuple[SASLSession, str]:
    auth = session(db, "SCRAM-SHA-256")
    step = auth.start(b64(client.first()))
    assert step.kind == "challenge", step.reason
    return auth, unb64(step.challenge).decode()


@pytest.mark.parametrize("gs2", ["n,,", "y,,", f"n,a={USER},", "y,a=BOB@example.com,"])
def test_scram_exchange_verifies_server_too(db, gs2):
    client = ScramClient(USER, PASSWORD, gs2)
    auth, server_first = scram_first(db, client)
    assert re.fullmatch(r"r=[!-+\--~]+,s=[A-Za-z0-9+/]+=*,i=4096", server_first)
    server_final = auth.step(b64(client.final(server_first)))
    assert server_final.kind == "challenge"
    assert unb64(server_final.challenge) == b"v=" + base64.b64encode(client.server_signature)
    step = auth.step("")
    assert (step.kind, step.user) == ("success", USER)


def test_scram_without_initial_response(db):
    client = ScramClient("Bob@Example.com", PASSWORD)
    auth = session(db, "SCRAM-SHA-256")
    assert auth.start(None).challenge == ""
    server_first = unb64(auth.step(b64(client.first())).challenge).decode()
    assert auth.step(b64(client.final(server_first))).kind == "challenge"
    assert auth.step("").user == USER


@pytest.mark.parametrize("user, password", [
    (USER, "wrong"), ("nobody@example.com", PASSWORD), ("off@example.com", PASSWORD),
    ("not an address", PASSWORD),
])
def test_scram_bad_credentials(db, user, password):
    client = ScramClient(user, password)
    auth, server_first = scram_first(db, client)
    assert_failed(auth.step(b64(client.final(server_first))))


def salt_of(db, user: str) -> str:
    return dict(f.split("=", 1) for f in scram_first(db, ScramClient(user, "x"))[1].split(","))["s"]


def test_scram_unknown_users_get_stable_salts_that_survive_reopening(db):
    unknown = salt_of(db, "nobody@example.com")
    assert salt_of(db, "Nobody@Example.com") == unknown
    assert salt_of(db, "other@example.com") != unknown
    assert salt_of(db, USER) == salt_of(db, USER)
    with Accounts(db.database.path) as reopened:
        assert salt_of(reopened, "nobody@example.com") == unknown
    assert len(base64.b64decode(unknown)) == len(base64.b64decode(salt_of(db, USER)))


@pytest.mark.parametrize("gs2, reason", [
    ("p=tls-unique,,", "channel binding is not supported"),
    ("q,,", "malformed GS2 header"),
    ("n", "malformed GS2 header"),
    ("n,", "malformed authzid"),
    ("n,x=y,", "malformed authzid"),
    ("n,a=alice@example.com,", "proxy authentication is not supported"),
])
def test_scram_refused_gs2_headers(db, gs2, reason):
    client = ScramClient(USER, PASSWORD, gs2)
    assert_failed(session(db, "SCRAM-SHA-256").start(b64(client.first())), reason)


@pytest.mark.parametrize("first, reason", [
    ("n,,m=ext,n=bob@example.com,r=abc", "mandatory extension"),
    ("n,,r=abc,n=bob@example.com", "needs n= and r="),
    ("n,,n=bob@example.com", "needs n= and r="),
    ("n,,n=bob@example.com,r=", "malformed client nonce"),
    ("n,,n=bob=2Dx@example.com,r=abc", "malformed user name"),
    ("n,,n=,r=abc", "malformed user name"),
])
def test_scram_malformed_client_first(db, first, reason):
    assert_failed(session(db, "SCRAM-SHA-256").start(b64(first)), reason)


def tamper(final: str, old: str, new: str) -> str:
    assert old in final
    return final.replace(old, new, 1)


@pytest.mark.parametrize("edit, reason", [
    (lambda f, gs2: tamper(f, "c=" + b64(gs2), "c=" + b64("y,,")), "does not match the GS2"),
    (lambda f, gs2: tamper(f, ",r=", ",r=x"), "nonce mismatch"),
    (lambda f, gs2: f.partition(",p=")[0], "needs c=, r= and p="),
    (lambda f, gs2: f.partition(",p=")[0] + ",p=AAAA", "proof of the wrong length"),
    (lambda f, gs2: f.partition(",p=")[0] + ",p=!!", "malformed proof"),
])
def test_scram_malformed_client_final(db, edit, reason):
    client = ScramClient(USER, PASSWORD)
    auth, server_first = scram_first(db, client)
    assert_failed(auth.step(b64(edit(client.final(server_first), client.gs2))), reason)


def test_scram_final_answer_must_be_empty(db):
    client = ScramClient(USER, PASSWORD)
    auth, server_first = scram_first(db, client)
    auth.step(b64(client.final(server_first)))
    assert_failed(auth.step(b64("extra")), "expected an empty answer")


def test_scram_rfc7677_vector():
    """RFC 7677 section 3: the keys passwords.scram_record stores reproduce the example's proof
    and server signature, and so does the test client above."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    server_first = f"r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    client = ScramClient("user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.first() == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = client.final(server_first)
    assert final == (f"c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert b64(client.server_signature) == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

    record = passwords.scram_record("pencil", salt, 4096)
    auth_message = f"{client.first_bare},{server_first},{final.partition(',p=')[0]}".encode()
    signature = hmac.new(record.stored_key, auth_message, "sha256").digest()
    proof = base64.b64decode(final.partition(",p=")[2])
    client_key = bytes(a ^ b for a, b in zip(proof, signature))
    assert hashlib.sha256(client_key).digest() == record.stored_key
    assert hmac.new(record.server_key, auth_message, "sha256").digest() == client.server_signature


# -- cancelling and misuse, for every mechanism

def first_line(mechanism: str) -> str | None:
    return b64(ScramClient(USER, PASSWORD).first()) if mechanism == "SCRAM-SHA-256" else None


@pytest.mark.parametrize("mechanism", sasl.MECHANISMS)
def test_star_cancels(db, mechanism):
    auth = session(db, mechanism)
    assert auth.start(first_line(mechanism)).kind == "challenge"
    assert_failed(auth.step("*"), "cancelled")
    assert_failed(auth.step(b64("anything")), "no exchange in progress")


@pytest.mark.parametrize("mechanism", sasl.MECHANISMS)
def test_garbage_and_long_lines_fail(db, mechanism):
    for line, reason in (("@@@", "malformed base64"), ("QUJD" * (MAX_LINE // 4 + 1), "longer")):
        auth = session(db, mechanism)
        auth.start(first_line(mechanism))
        assert_failed(auth.step(line), reason)


def test_step_before_start_and_double_start(db):
    assert_failed(session(db, "PLAIN").step(b64("x")), "no exchange in progress")
    auth = session(db, "LOGIN")
    auth.start(None)
    assert_failed(auth.start(None), "already started")


# -- the exchange a protocol session keeps (AuthExchange)

def test_exchange_refuses_mechanisms_not_offered(db):
    exchange = sasl.AuthExchange(db.credentials, HOST)
    offered = mechanisms(tls_active=False, allow_plaintext=False)
    assert exchange.start("plain", None, offered).kind is sasl.StepKind.NEEDS_TLS
    assert exchange.start("NTLM", None, offered).kind is sasl.StepKind.UNSUPPORTED
    assert not exchange.active


def test_exchange_cancel_abort_and_login(db):
    exchange = sasl.AuthExchange(db.credentials, HOST)
    offered = mechanisms(tls_active=True, allow_plaintext=False)
    assert exchange.start("login", None, offered).kind is sasl.StepKind.CHALLENGE
    assert exchange.active
    assert exchange.answer(b" *\r\n").kind is sasl.StepKind.CANCELLED
    assert not exchange.active
    exchange.start("LOGIN", None, offered)
    exchange.abort()
    assert not exchange.active
    exchange.start("LOGIN", None, offered)
    assert exchange.answer(b64(USER).encode() + b"\r\n").kind is sasl.StepKind.CHALLENGE
    step = exchange.answer(b64(PASSWORD).encode() + b"\r\n")
    assert (step.kind, step.user, exchange.active) == (sasl.StepKind.SUCCESS, USER, False)


def test_exchange_failure_ends_it(db):
    exchange = sasl.AuthExchange(db.credentials, HOST)
    step = exchange.start("PLAIN", b64(f"\0{USER}\0wrong"), mechanisms(True, False))
    assert (step.kind, step.reason, exchange.active) == (sasl.StepKind.FAILURE, AUTH_FAILED, False)


# -- storage

def stored_scram(db: Accounts, address: str) -> str | None:
    return db.database.fetchone("SELECT scram_sha256 FROM mailboxes WHERE address = ?",
                                address)[0]


def test_record_format_and_lookup(db):
    stored = stored_scram(db, USER)
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):"
                         r"([A-Za-z0-9+/=]+)", stored)
    assert match and int(match[1]) == passwords.SCRAM_ITERATIONS >= 4096
    salt = base64.b64decode(match[2])
    _, stored_key, server_key = scram_keys(PASSWORD, salt, int(match[1]))
    assert (base64.b64decode(match[3]), base64.b64decode(match[4])) == (stored_key, server_key)
    assert db.credentials.scram_sha256("BOB@example.com") == passwords.parse_scram_sha256(stored)
    for address in ("off@example.com", "nobody@example.com", "not an address"):
        assert db.credentials.scram_sha256(address) is None


def test_passwd_replaces_record(db):
    before = db.credentials.scram_sha256(USER)
    db.credentials.user_passwd(USER, "new")
    assert db.credentials.scram_sha256(USER) != before
    client = ScramClient(USER, "new")
    auth, server_first = scram_first(db, client)
    assert auth.step(b64(client.final(server_first))).kind == "challenge"


@pytest.mark.parametrize("stored", [
    "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
    "SCRAM-SHA-256$1000:c2FsdA==$" + "A" * 43 + "=:" + "A" * 43 + "=",
    "SCRAM-SHA-1$4096:c2FsdA==$x:y", "garbage", "SCRAM-SHA-256$4096:!!$x:y",
])
def test_corrupt_record_is_no_record(db, stored):
    db.database.update_mailbox(USER, "scram_sha256 = ?", stored)
    assert db.credentials.scram_sha256(USER) is None


def test_saslprep():
    assert passwords.saslprep("I\u00adX") == "IX"  # B.1: mapped to nothing
    assert passwords.saslprep("\u2168") == "IX"  # NFKC
    assert passwords.saslprep("a\u00a0b") == "a b"  # C.1.2: non-ASCII space
    for refused in ("a\x07b", "\u0627\u0031", "\U000e0001"):
        with pytest.raises(ValueError, match="SASLprep"):
            passwords.saslprep(refused)


def test_password_saslprep_refuses_keeps_other_mechanisms(db):
    db.directory.user_add("ctl@example.com", "bell\x07")
    assert stored_scram(db, "ctl@example.com") is None
    step = session(db, "PLAIN").start(b64("\0ctl@example.com\0bell\x07"))
    assert step.user == "ctl@example.com"


def test_migration_from_schema_2(tmp_path):
    path = tmp_path / "accounts.sqlite3"
    raw = sqlite3.connect(path)
    raw.executescript(SCHEMA_1 + "ALTER TABLE mailboxes ADD COLUMN cram_md5 TEXT;"
                      "PRAGMA user_version = 2;")
    raw.execute("INSERT INTO domains VALUES ('example.com', 0)")
    raw.execute("INSERT INTO mailboxes (address, domain, password, cram_md5, created) "
                "VALUES (?, 'example.com', ?, ?, 0)",
                (USER, passwords.hash_password("pw"), passwords.hash_cram_md5("pw")))
    raw.commit()
    raw.close()
    with Accounts(path) as db:
        assert db.database.fetchone("PRAGMA user_version")[0] == accounts_schema.SCHEMA_VERSION
        assert db.credentials.check_password(USER, "pw")
        assert db.credentials.cram_md5_state(USER) is not None
        # No clear password to make the keys from: no SCRAM until it is set again.
        assert db.credentials.scram_sha256(USER) is None
        decoy_salt = salt_of(db, USER)
        db.credentials.user_passwd(USER, "pw")
        assert db.credentials.scram_sha256(USER) is not None
    with Accounts(path) as again:
        assert salt_of(again, "nobody@example.com") == salt_of(again, "nobody@example.com")
        assert salt_of(again, USER) != decoy_salt


# -- a database that cannot answer

@pytest.mark.parametrize("mechanism, first", [
    ("PLAIN", b64(f"\0{USER}\0{PASSWORD}")), ("SCRAM-SHA-256", b64(f"n,,n={USER},r=abc"))])
def test_an_unreadable_database_is_unavailable_not_a_failure(db, mechanism, first):
    db.database._connection.close()  # every statement now fails in the driver
    step = session(db, mechanism).start(first)
    assert (step.kind, step.user, step.reason) == ("unavailable", "", "")
