"""TLS: the certificate `init` makes, real handshakes over a loopback socket pair (versions,
host name checks, SNI, the cluster link's client context), and the start-up check's errors
and warnings."""

from __future__ import annotations

import dataclasses
import datetime
import socket
import ssl
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailforge import config as configuration, tls
from mailforge.errors import ConfigError

HOSTNAME = "mx.example.test"
NOW = datetime.datetime.now(datetime.timezone.utc)


def make_config(tmp_path: Path, **tls_values: object) -> configuration.Config:
    config = configuration.Config()
    config.server.hostname = HOSTNAME
    config.tls = dataclasses.replace(config.tls, **tls_values)
    config.path = tmp_path / "mailforge.toml"
    return config


def write_pair(directory: Path, name: str, names: list[str], not_before: datetime.datetime = NOW,
               days: float = 90) -> tuple[str, str]:
    """A cert/key pair under `directory`, as paths relative to it (as the config holds them)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = tls.make_certificate(key, names, not_before, datetime.timedelta(days=days))
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return f"{name}.pem", f"{name}.key"


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> dict:
    """Both ends of a TLS handshake over a socket pair; the client's view of the peer cert."""
    left, right = socket.socketpair()
    left.settimeout(5)
    right.settimeout(5)
    errors: list[Exception] = []

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as conn:
                conn.recv(1)  # wait for the client's close; the handshake is done by then
        except (OSError, ssl.SSLError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname=server_hostname) as conn:
            return conn.getpeercert()
    finally:
        right.close()
        thread.join(5)
        left.close()


def client_for(cafile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cafile))


def san_names(peer: dict) -> set[str]:
    return {value for kind, value in peer["subjectAltName"] if kind == "DNS"}


@pytest.fixture
def made(tmp_path) -> configuration.Config:
    config = make_config(tmp_path, san=["mail.example.test", "127.0.0.1"])
    assert tls.ensure_self_signed(config)
    return config


def test_init_makes_a_cert_for_the_hostname_and_sans(made):
    cert_path, key_path = made.data_dir / made.tls.cert, made.data_dir / made.tls.key
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # The loopback names too, once each (127.0.0.1 was also asked for in [tls] san).
    assert sans.get_values_for_type(x509.DNSName) == [HOSTNAME, "mail.example.test", "localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert 824 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 826
    assert key_path.stat().st_mode & 0o777 == 0o600
    ssl.create_default_context().load_cert_chain(cert_path, key_path)
    assert tls.check(made) == []
    # Present: left alone, even though the SANs asked for now differ.
    before = cert_path.read_bytes()
    assert not tls.ensure_self_signed(dataclasses.replace(made, tls=dataclasses.replace(made.tls, san=[])))
    assert cert_path.read_bytes() == before


def test_init_cli_writes_cert_and_a_config_that_round_trips(tmp_path):
    data = tmp_path / "var"
    subprocess.run([sys.executable, "-m", "mailforge", "init", "--dir", str(data), "--hostname", HOSTNAME],
                   check=True, capture_output=True, timeout=60)
    config = configuration.load(data / "mailforge.toml")
    assert (config.tls.san, config.tls.domains) == ([], {})
    assert tls.check(config) == []
    config.tls.domains = {"*.example.org": {"cert": "a.pem", "key": "a.key"}}
    assert configuration.from_dict(tomllib.loads(configuration.render_toml(config))).tls == config.tls


def test_handshake_checks_the_host_name(made):
    server = tls.load_server_context(made)
    cafile = made.data_dir / made.tls.cert
    assert HOSTNAME in san_names(handshake(server, client_for(cafile), HOSTNAME))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(server, client_for(cafile), "other.example.test")


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1", "::1"])
def test_clients_on_this_machine_verify_the_self_signed_cert(made, address):
    """What `curl --cacert tls/cert.pem imaps://127.0.0.1/` does: no `-k` needed."""
    handshake(tls.load_server_context(made), client_for(made.data_dir / made.tls.cert), address)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_1_1_client_is_refused(made):
    client = client_for(made.data_dir / made.tls.cert)
    client.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    client.maximum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer 1.1; the server must say no
    with pytest.raises(ssl.SSLError, match="protocol version"):
        handshake(tls.load_server_context(made), client, HOSTNAME)


def test_server_context_settings(made):
    context = tls.load_server_context(made)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION and context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 and all("GCM" in name or "CHACHA20" in name for name in tls12)


def test_sni_picks_the_domain_cert(tmp_path):
    exact = write_pair(tmp_path, "org", ["mail.example.org"])
    wild = write_pair(tmp_path, "net", ["*.example.net"])
    config = make_config(tmp_path, domains={
        "mail.example.org": {"cert": exact[0], "key": exact[1]},
        "*.example.net": {"cert": wild[0], "key": wild[1]},
    })
    tls.ensure_self_signed(config)
    server = tls.load_server_context(config)
    assert tls.check(config) == []
    assert san_names(handshake(server, client_for(tmp_path / exact[0]), "MAIL.example.org")) == {"mail.example.org"}
    assert san_names(handshake(server, client_for(tmp_path / wild[0]), "imap.example.net")) == {"*.example.net"}
    # Only one level of wildcard; deeper names, and unknown ones, get the default certificate.
    default = client_for(config.data_dir / config.tls.cert)
    default.check_hostname = False
    assert san_names(handshake(server, default, "a.b.example.net")) == {HOSTNAME, "localhost"}
    assert san_names(handshake(server, default, "unknown.example.com")) == {HOSTNAME, "localhost"}


def test_mismatched_key_names_tls_key(made, tmp_path):
    _, other_key = write_pair(tmp_path, "other", [HOSTNAME])
    config = dataclasses.replace(made, tls=dataclasses.replace(made.tls, key=str(tmp_path / other_key)))
    with pytest.raises(ConfigError) as caught:
        tls.check(config)
    assert caught.value.key == "[tls] key" and "does not match" in str(caught.value)
    assert str(config.path) in str(caught.value)


def test_expired_and_not_yet_valid_certs_are_errors(tmp_path):
    cert, key = write_pair(tmp_path, "old", [HOSTNAME], not_before=NOW - datetime.timedelta(days=400), days=365)
    with pytest.raises(ConfigError, match="expired") as caught:
        tls.check(make_config(tmp_path, cert=cert, key=key))
    assert caught.value.key == "[tls] cert"
    cert, key = write_pair(tmp_path, "new", [HOSTNAME], not_before=NOW + datetime.timedelta(days=2))
    with pytest.raises(ConfigError, match="not valid until"):
        tls.check(make_config(tmp_path, cert=cert, key=key))


def test_cert_expiring_within_30_days_is_a_warning(tmp_path):
    cert, key = write_pair(tmp_path, "soon", [HOSTNAME], days=20)
    (warning,) = tls.check(make_config(tmp_path, cert=cert, key=key))
    assert "[tls] cert" in warning and "expires in 19 days" in warning


def test_not_pem_unreadable_and_missing_files(made, tmp_path):
    (tmp_path / "junk.pem").write_text("hello\n")
    for changes, key, problem in [
        ({"cert": "junk.pem"}, "[tls] cert", "not a PEM certificate"),
        ({"key": "junk.pem"}, "[tls] key", "not a PEM private key"),
        ({"domains": {"example.org": {"cert": "nope.pem", "key": "nope.key"}}},
         "[tls] domains.example.org.cert", "does not exist"),
    ]:
        config = dataclasses.replace(made, tls=dataclasses.replace(made.tls, **changes))
        with pytest.raises(ConfigError, match=problem) as caught:
            tls.check(config)
        assert caught.value.key == key


def test_missing_default_cert_warns_unless_a_service_needs_tls(tmp_path):
    config = make_config(tmp_path, cert="absent.pem")
    (warning,) = tls.check(config)
    assert "[tls] cert" in warning and "STARTTLS will not be offered" in warning
    assert not tls.certificate_present(config)
    config.smtps = dataclasses.replace(config.smtps, listen=["127.0.0.1:2465"])
    with pytest.raises(ConfigError, match=r"\[smtps\] cannot run without a certificate"):
        tls.check(config)


def test_domain_table_is_validated():
    with pytest.raises(ConfigError) as caught:
        configuration.from_dict({"tls": {"domains": {"example.org": {"cert": "a.pem"}}}})
    assert caught.value.key == "[tls] domains.example.org"
    with pytest.raises(ConfigError) as caught:
        configuration.from_dict({"tls": {"san": ["not a name"]}})
    assert caught.value.key == "[tls] san"


def test_check_config_and_serve_exit_2_with_one_line_for_a_mismatched_key(tmp_path):
    data = tmp_path / "var"
    subprocess.run([sys.executable, "-m", "mailforge", "init", "--dir", str(data), "--hostname", HOSTNAME],
                   check=True, capture_output=True, timeout=60)
    write_pair(data / "tls", "other", [HOSTNAME])
    (data / "tls" / "other.key").replace(data / "tls" / "key.pem")
    conf = data / "mailforge.toml"
    # serve must stop before it binds anything, so it exits at once like check-config.
    for command in ("check-config", "serve"):
        result = subprocess.run([sys.executable, "-m", "mailforge", "-c", str(conf), command],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert str(conf) in line and "[tls] key" in line and "does not match" in line


def with_cluster_tls(config: configuration.Config, ca_file: str) -> configuration.Config:
    return dataclasses.replace(config, cluster=dataclasses.replace(
        config.cluster, tls="starttls", tls_ca_file=ca_file))


def test_the_cluster_link_verifies_the_owner_by_the_ca_file_alone(made, tmp_path):
    assert tls.cluster_client_context(made) is None  # tls = "none": a plain link
    context = tls.cluster_client_context(with_cluster_tls(made, made.tls.cert))
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    server = tls.load_server_context(made)
    handshake(server, context, "127.0.0.1")  # a node table's host by address: an IP SAN
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(server, context, "10.0.1.2")
    other, _ = write_pair(tmp_path, "other", [HOSTNAME])
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        handshake(server, tls.cluster_client_context(with_cluster_tls(made, str(tmp_path / other))),
                  HOSTNAME)


def test_a_cluster_ca_file_it_cannot_use_stops_the_start(made, tmp_path):
    (tmp_path / "junk.pem").write_text("hello\n")
    for name, problem in (("absent.pem", "does not exist"), ("junk.pem", "holds no PEM certificate"),
                          (".", "cannot read")):
        with pytest.raises(ConfigError, match=problem) as caught:
            tls.check(with_cluster_tls(made, name))
        assert caught.value.key == "[cluster] tls_ca_file"


def test_an_owner_with_cluster_tls_needs_a_certificate(tmp_path):
    """Its proxied logins come inside TLS only: without a certificate it could take none."""
    config = with_cluster_tls(make_config(tmp_path, cert="absent.pem"), "ca.pem")
    with pytest.raises(ConfigError, match=r"\[cluster\] cannot run without a certificate"):
        tls.check(config)
