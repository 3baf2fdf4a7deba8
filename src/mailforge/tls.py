"""TLS for every service: the self-signed certificate `init` makes, the server context the
protocols wrap their sockets with (per-domain certificates by SNI), the client context a
cluster node verifies a mailbox's owner with ([cluster] tls), and the start-up check.

Missing certificate policy: the default cert/key may be absent when no enabled service needs
TLS to work at all, because plain SMTP/POP3/IMAP offer STARTTLS only opportunistically; `check`
then warns and the protocol code must not offer STARTTLS (`certificate_present` is False).
Submission and the implicit-TLS services (SMTPS, POP3S, IMAPS) cannot work without one, so there
a missing file is an error, as is any other fault (unreadable, not PEM, key mismatch, expired)
and any missing per-domain file, which the operator named on purpose.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import Config
from .durable import write_atomically
from .errors import ConfigError

# 825 days: the longest validity Apple's clients accept for a server certificate.
SELF_SIGNED_DAYS = 825
# Tolerate a client clock a little behind ours on a certificate made just now.
BACKDATE = datetime.timedelta(minutes=5)
# Names the self-signed certificate carries beside the hostname, so that clients on the
# server's own machine (curl, swaks, mutt, a test suite) verify it when told to trust it
# (`curl --cacert tls/cert.pem imaps://127.0.0.1/`) instead of being taught to skip checks.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# Warn this long before a certificate expires: time to renew it without an outage.
EXPIRY_WARNING = datetime.timedelta(days=30)
# Services that cannot work without a certificate: implicit TLS, and submission, whose
# PLAIN/LOGIN are refused before TLS.
REQUIRES_TLS = ("submission", "smtps", "pop3s", "imaps")
# Mozilla "intermediate" (server side TLS v5.7) for TLS 1.2; TLS 1.3 suites are all sound and
# OpenSSL's defaults for them stay.
INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
))


@dataclass(frozen=True)
class CertPair:
    """A certificate chain and its key, with the config keys that named them (for errors)."""

    cert: Path
    key: Path
    cert_key: str
    key_key: str


def default_pair(config: Config) -> CertPair:
    return CertPair(config.data_dir / config.tls.cert, config.data_dir / config.tls.key,
                    "[tls] cert", "[tls] key")


def domain_pairs(config: Config) -> dict[str, CertPair]:
    """Per-domain pairs by lower-case name (a key may be a "*.domain" wildcard)."""
    return {
        name.lower(): CertPair(config.data_dir / files["cert"], config.data_dir / files["key"],
                               f"[tls] domains.{name}.cert", f"[tls] domains.{name}.key")
        for name, files in config.tls.domains.items()
    }


def certificate_present(config: Config) -> bool:
    """Whether the default cert and key exist: without them STARTTLS is not offered."""
    pair = default_pair(config)
    return pair.cert.exists() and pair.key.exists()


# ---- init --------------------------------------------------------------------------------

def ensure_self_signed(config: Config, now: datetime.datetime | None = None) -> bool:
    """Make a self-signed cert and key for the hostname, `[tls] san` and the loopback names
    when both are absent; True if made. One file without the other is the operator's: left for `check` to report."""
    pair = default_pair(config)
    if pair.cert.exists() or pair.key.exists():
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    names = [config.server.hostname, *config.tls.san, *LOOPBACK_NAMES]
    cert = make_certificate(key, names, now or datetime.datetime.now(datetime.timezone.utc),
                            datetime.timedelta(days=SELF_SIGNED_DAYS))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    for path in (pair.key, pair.cert):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    # Key first: a cert without its key would stop the next `init` from making a new pair.
    write_atomically(pair.key, key_pem, mode=0o600)
    write_atomically(pair.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return True


def make_certificate(key: ec.EllipticCurvePrivateKey, names: list[str], not_before: datetime.datetime,
                     lifetime: datetime.timedelta) -> x509.Certificate:
    """A self-signed server certificate for `names` (the first is the subject's CN)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before - BACKDATE)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in dict.fromkeys(names)]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


# ---- server context ----------------------------------------------------------------------

def load_server_context(config: Config) -> ssl.SSLContext:
    """The context every service wraps with: the default pair, switched by SNI to a domain's
    own pair (exact name, then "*." + parent); unknown or absent names get the default."""
    default = _context(default_pair(config), config)
    by_name = {name: _context(pair, config) for name, pair in domain_pairs(config).items()}
    if by_name:
        def pick(sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
            chosen = _lookup(by_name, server_name)
            if chosen is not None:
                sslobj.context = chosen
        default.sni_callback = pick
    return default


def _lookup(by_name: dict[str, ssl.SSLContext], server_name: str | None) -> ssl.SSLContext | None:
    if not server_name:
        return None
    name = server_name.lower().rstrip(".")
    if name in by_name:
        return by_name[name]
    _, dot, parent = name.partition(".")
    return by_name.get(f"*.{parent}") if dot else None


def _context(pair: CertPair, config: Config) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    # No compression: CRIME. Fresh ECDH keys per handshake; OpenSSL 1.1+ picks curves itself.
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    try:
        context.load_cert_chain(pair.cert, pair.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(config.path, pair.key_key,
                          f"cannot use {pair.cert} with {pair.key}: {exc}") from None
    return context


# ---- the link to a mailbox's owner node ----------------------------------------------------

def cluster_client_context(config: Config) -> ssl.SSLContext | None:
    """What a node verifies an owner's certificate with before it logs in there with the
    master secret or relays mail there ([cluster] tls): the CAs of tls_ca_file alone (not
    the system's, which would vouch for anyone's certificate for the name), and the node
    table's host name or address; None for a plain link. ConfigError (the key named) for a
    file it cannot use."""
    if not config.cluster.tls_link:
        return None
    path = config.data_dir / config.cluster.tls_ca_file
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=path)
    except FileNotFoundError:
        raise ConfigError(config.path, "[cluster] tls_ca_file", f"{path} does not exist") from None
    except ssl.SSLError:
        raise ConfigError(config.path, "[cluster] tls_ca_file",
                          f"{path} holds no PEM certificate") from None
    except OSError as exc:
        raise ConfigError(config.path, "[cluster] tls_ca_file",
                          f"cannot read {path}: {exc.strerror}") from None
    return context


# ---- check -------------------------------------------------------------------------------

def check(config: Config, now: datetime.datetime | None = None) -> list[str]:
    """Warnings for the operator; ConfigError (file and key named) for what must stop a start."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    warnings: list[str] = []
    default = default_pair(config)
    missing = [p for p in (default.cert, default.key) if not p.exists()]
    if missing:
        needing = [name for name in REQUIRES_TLS if name in config.services()]
        if config.admin.listen and not config.admin.allow_plain_http:
            needing.append("admin")  # the console serves HTTPS only unless told otherwise
        if config.cluster.tls_link:
            needing.append("cluster")  # other nodes' proxied logins come inside TLS only
        key = default.cert_key if default.cert in missing else default.key_key
        if needing:
            raise ConfigError(config.path, key, f"{missing[0]} does not exist; "
                              f"[{'], ['.join(needing)}] cannot run without a certificate")
        warnings.append(f"{config.path}: {key}: {missing[0]} does not exist; STARTTLS will not be offered")
    else:
        warnings += _check_pair(default, config, now)
    for pair in domain_pairs(config).values():
        warnings += _check_pair(pair, config, now)
    cluster_client_context(config)
    return warnings


def expiry(config: Config) -> list[tuple[str, datetime.datetime]]:
    """(config key, end of validity) of each certificate that can be read: the console's
    dashboard shows them."""
    dates = []
    for pair in (default_pair(config), *domain_pairs(config).values()):
        try:
            dates.append((pair.cert_key, _read_chain(pair, config)[0].not_valid_after_utc))
        except ConfigError:
            continue
    return dates


def _check_pair(pair: CertPair, config: Config, now: datetime.datetime) -> list[str]:
    chain = _read_chain(pair, config)
    key = _read_key(pair, config)
    leaf = chain[0]
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise ConfigError(config.path, pair.key_key,
                          f"{pair.key} does not match the certificate {pair.cert}")
    if now < leaf.not_valid_before_utc:
        raise ConfigError(config.path, pair.cert_key,
                          f"{pair.cert} is not valid until {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if now >= leaf.not_valid_after_utc:
        raise ConfigError(config.path, pair.cert_key,
                          f"{pair.cert} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    _context(pair, config)  # whatever else OpenSSL refuses, refuse at start, not per session
    if leaf.not_valid_after_utc - now < EXPIRY_WARNING:
        days = (leaf.not_valid_after_utc - now).days
        return [f"{config.path}: {pair.cert_key}: {pair.cert} expires in {days} days "
                f"({leaf.not_valid_after_utc:%Y-%m-%d} UTC)"]
    return []


def _read(path: Path, key: str, config: Config) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(config.path, key, f"{path} does not exist") from None
    except OSError as exc:
        raise ConfigError(config.path, key, f"cannot read {path}: {exc.strerror}") from None


def _read_chain(pair: CertPair, config: Config) -> list[x509.Certificate]:
    data = _read(pair.cert, pair.cert_key, config)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(config.path, pair.cert_key, f"{pair.cert} is not a PEM certificate") from None


def _read_key(pair: CertPair, config: Config) -> PrivateKeyTypes:
    data = _read(pair.key, pair.key_key, config)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's way of saying the key is encrypted
        raise ConfigError(config.path, pair.key_key,
                          f"{pair.key} is encrypted; mailforge needs an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(config.path, pair.key_key, f"{pair.key} is not a PEM private key") from None


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
