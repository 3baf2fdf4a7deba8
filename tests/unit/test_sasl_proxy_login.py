"""Proxied logins between cluster nodes (auth/proxylogin.py through auth/sasl.py): SASL PLAIN
with the user as authzid, the front node as authcid and the cluster's master secret."""

import base64

import pytest

from mailforge.auth.proxylogin import ProxyLogins, read_secret
from mailforge.auth.sasl import AUTH_FAILED, AuthExchange, StepKind, mechanisms
from mailforge.config import Config
from mailforge.errors import UsageError

SECRET = b"s3cret-of-the-whole-cluster"
USER = "carol@example.com"
HOST = "mail.example.com"

pytestmark = pytest.mark.usefixtures("cheap_scrypt")


@pytest.fixture
def accounts(db):
    db.directory.user_add(USER, "her own password")
    db.directory.user_add("off@example.com", "pw")
    db.directory.user_disable("off@example.com")
    return db


def plain(authzid: str, authcid: str, password: bytes) -> str:
    return base64.b64encode(b"\0".join((authzid.encode(), authcid.encode(), password))).decode()


def exchange(accounts, proxy: bool, tls: bool = True) -> tuple[AuthExchange, list[str]]:
    logins = ProxyLogins(SECRET, accounts.credentials) if proxy else None
    return AuthExchange(accounts.credentials, HOST, logins), mechanisms(tls, False)


def test_the_master_secret_logs_a_node_in_as_the_user(accounts):
    auth, offered = exchange(accounts, proxy=True)
    step = auth.start("PLAIN", plain(USER, "node-a", SECRET), offered)
    assert (step.kind, step.user, step.via) == (StepKind.SUCCESS, USER, "node-a")
    assert ProxyLogins(SECRET, accounts.credentials).credentials(USER, "node-a") == (
        b"carol@example.com\0node-a\0" + SECRET)


def test_a_wrong_secret_a_disabled_user_or_an_untrusted_peer_is_refused(accounts):
    auth, offered = exchange(accounts, proxy=True)
    for authzid, secret in ((USER, b"wrong-secret-of-the-cluster"), (USER, SECRET[:-1]),
                            ("off@example.com", SECRET), ("nobody@example.com", SECRET),
                            ("not an address", SECRET)):
        step = auth.start("PLAIN", plain(authzid, "node-a", secret), offered)
        assert (step.kind, step.reason, step.user) == (StepKind.FAILURE, AUTH_FAILED, "")
    # A peer outside proxy_trusted gets no proxied logins: an authzid is refused as ever.
    auth, offered = exchange(accounts, proxy=False)
    step = auth.start("PLAIN", plain(USER, "node-a", SECRET), offered)
    assert step.kind is StepKind.FAILURE and "proxy authentication" in step.reason


def test_outside_tls_plain_takes_the_master_secret_only(accounts):
    auth, offered = exchange(accounts, proxy=True, tls=False)
    assert "PLAIN" not in offered
    assert auth.start("PLAIN", plain(USER, "node-a", SECRET), offered).kind is StepKind.SUCCESS
    # A user's own password in PLAIN stays refused outside TLS, as before: no failed login.
    step = auth.start("PLAIN", plain("", USER, b"her own password"), offered)
    assert step.kind is StepKind.NEEDS_TLS
    assert exchange(accounts, proxy=False, tls=False)[0].start(
        "PLAIN", plain(USER, "node-a", SECRET), offered).kind is StepKind.NEEDS_TLS


def test_the_secret_file_is_read_and_checked(tmp_path):
    config = Config(path=tmp_path / "mailforge.toml")
    config.server.data_dir = str(tmp_path)
    assert read_secret(config) is None  # no secret_file: no proxying
    config.cluster.secret_file = "cluster.secret"
    with pytest.raises(UsageError, match="cannot read"):
        read_secret(config)
    (tmp_path / "cluster.secret").write_bytes(b"short\n")
    with pytest.raises(UsageError, match="shorter than 16"):
        read_secret(config)
    (tmp_path / "cluster.secret").write_bytes(SECRET + b"\n")
    assert read_secret(config) == SECRET
