"""TOML config → typed dataclasses, with one clear line for every mistake.

Every section and key has a default here; `mailforge init` writes them all out with
`render_toml()` so operators see every knob. Unknown sections or keys are errors.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from .addresses import ATEXT_SYMBOLS, normalize_address
from .errors import ConfigError, UsageError

DEFAULT_CONFIG_NAME = "mailforge.toml"
DEFAULT_CONFIG_PATH = Path("var") / DEFAULT_CONFIG_NAME
CONFIG_ENV = "MAILFORGE_CONFIG"


@dataclass
class ServerConfig:
    hostname: str = field(default_factory=socket.getfqdn)
    data_dir: str = "."
    user: str = ""
    group: str = ""
    # Seconds that sessions in progress get to finish on SIGTERM/SIGHUP before `421` and close.
    grace_period: float = 30.0
    # A worker that has not proved it is alive for this long is killed and replaced.
    worker_timeout: float = 30.0
    # SASL PLAIN and LOGIN send the password itself: only inside TLS unless this is true.
    allow_plaintext_auth: bool = False
    # Load balancers whose PROXY protocol headers are believed (services with proxy_protocol);
    # a connection from anywhere else to such a service is closed unanswered.
    proxy_trusted: list[str] = field(default_factory=list)
    # Subaddressing (RFC 5233): "alice+tag@example.test" reaches alice when no mailbox or alias
    # has that whole address, into her folder "tag" when it exists. Each character is a
    # delimiter (as Postfix's and Dovecot's recipient_delimiter); "" turns it off.
    recipient_delimiter: str = "+"


@dataclass
class ServiceConfig:
    listen: list[str] = field(default_factory=list)
    workers: int = 2
    max_connections: int = 1000
    max_connections_per_ip: int = 50
    max_threads: int = 8
    idle_timeout: float = 300.0
    # Every connection starts with a PROXY v1/v2 header from a [server] proxy_trusted address.
    proxy_protocol: bool = False
    # Each worker its own listening socket (SO_REUSEPORT): the kernel spreads new connections
    # over them, where a shared socket lets one greedy uvloop worker take a whole burst.
    reuse_port: bool = False


@dataclass
class AdminConfig(ServiceConfig):
    """The web administration console (admin/): a service like the others, over HTTPS with the
    server's certificate. Off unless listen names an address; `init` puts it on loopback."""

    workers: int = 1
    max_connections: int = 100
    max_connections_per_ip: int = 20
    max_threads: int = 4
    # Plain HTTP, for a reverse proxy on the same machine that does TLS: every listen address
    # must then be loopback, since session cookies and passwords would cross the wire in clear.
    allow_plain_http: bool = False
    # Seconds a console login lasts (8 hours: a working day); then the login page again.
    session_lifetime: float = 28_800.0


@dataclass
class LimitsConfig:
    # RFC 5321 4.5.3.1: 1,000 recipients must be accepted; sizes as Postfix's defaults.
    max_message_size: int = 36_700_160
    max_recipients: int = 1000
    max_line_length: int = 2048
    # Octets per second a message body must average after a grace (transport.py); 0 = off.
    min_transfer_rate: int = 500
    # IMAP sessions one user may hold at once, over all workers (Dovecot's
    # mail_max_userip_connections is 10 per user and IP; phones, laptops and IDLE add up).
    max_sessions_per_user: int = 20
    # RCPT to a mailbox over its quota: 452 4.2.2, the sender retries (as Dovecot's LMTP
    # quota_full_tempfail = yes); false: 552 5.2.2, refused for good.
    quota_full_tempfail: bool = True


@dataclass
class TLSConfig:
    # Relative paths are under the data dir. The cert file may hold the leaf then intermediates.
    cert: str = "tls/cert.pem"
    key: str = "tls/key.pem"
    # Extra names (or IP addresses) that `mailforge init` puts in the certificate beside hostname.
    san: list[str] = field(default_factory=list)
    # Per-domain certificates chosen by SNI: {"example.org" = {cert = "...", key = "..."}};
    # a "*.example.org" entry serves any one label under example.org.
    domains: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class RelayConfig:
    mode: str = "authenticated"
    networks: list[str] = field(default_factory=lambda: ["127.0.0.0/8"])
    # On submission, the envelope sender must be the logged-in user or one of its aliases.
    sender_login_match: bool = True


@dataclass
class AbuseConfig:
    """Harvesting and brute-force defence: failed logins and RCPTs to unknown local users,
    counted per client address (IPv6: per /64) across every service and worker."""

    window: float = 600.0      # seconds over which failures are counted
    tarpit_after: int = 3      # failures answered at once; later ones are delayed
    tarpit_delay: float = 1.0  # seconds added per failure past tarpit_after
    tarpit_max: float = 10.0   # the longest delay
    block_after: int = 10      # failures in the window that block the address (0 = never)
    block_time: float = 900.0  # seconds a blocked address is refused
    # Never counted (webmail, monitoring), and a reload lifts their blocks. Loopback by
    # default, as Postfix exempts $mynetworks from its client limits: trying the server from
    # the machine itself must not lock its operator out; [] counts loopback too.
    exempt_networks: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # Who hears of an account reaching its outbound message limit (`mailforge limits`);
    # "" = a log line only.
    notify: str = ""


@dataclass
class DeliveryConfig:
    workers: int = 2
    # Seconds before each retry of a temporary failure; the last repeats (each gets jitter).
    retry_schedule: list[float] = field(default_factory=lambda: [60.0, 300.0, 900.0, 3600.0])
    # Past this age (seconds) a message still failing temporarily is bounced (5 days, as Postfix).
    max_queue_time: float = 432_000.0
    # Seconds a message may wait before its sender gets one delay notice; 0 = never.
    delay_notice: float = 14_400.0
    # Seconds a queued message waits for a full mailbox before it bounces (5.2.2), rather than
    # retrying it for the whole max_queue_time (1 day: long enough to clean up a mailbox).
    quota_full_bounce_after: float = 86_400.0
    mx_override: dict[str, str] = field(default_factory=dict)
    smarthost: str = ""
    # AUTH to the smarthost (PLAIN or LOGIN, inside TLS unless smarthost_require_tls is false).
    smarthost_user: str = ""
    smarthost_password: str = ""
    smarthost_require_tls: bool = True
    # Per delivery worker: connections open at once to one destination, and messages sent over
    # one connection before it is closed.
    max_per_destination: int = 10
    messages_per_connection: int = 100
    # Seconds to connect, and to wait for any one reply (RFC 5321 4.5.3.2 allows minutes).
    connect_timeout: float = 30.0
    command_timeout: float = 300.0
    # The port MX hosts are reached on: 25 (RFC 5321); tests point it at a loopback server.
    # DANE's TLSA records are looked up for this port (_25._tcp.<mx>).
    mx_port: int = 25


@dataclass
class DnsConfig:
    """The resolver every lookup goes through (resolver.py): MX routing, SPF, DKIM, DMARC."""

    # "address" or "address:port" ("[v6]:port") of recursive resolvers; [] = the system's
    # (/etc/resolv.conf).
    nameservers: list[str] = field(default_factory=list)
    # Seconds to wait for one server's answer before asking the next (or again).
    timeout: float = 2.0
    # Seconds one lookup may take in all, retries included: past it the answer is a temporary
    # failure (4xx or a deferral), never a pass or a fail.
    lifetime: float = 5.0
    # DNSSEC for DANE's TLSA records (tlspolicy/dnssec.py): "validate" checks signatures here
    # from trust_anchor; "trust-ad" believes the AD bit of the nameservers above (only for a
    # validating resolver on a trusted path, e.g. unbound on localhost); "off": no DANE.
    dnssec: str = "validate"
    # File of DS or DNSKEY records (zone-file lines) to validate from; "" = the root zone's
    # KSK-2017, built in.
    trust_anchor: str = ""


@dataclass
class OutboundTLSConfig:
    """Transport security of relayed mail (tlspolicy/): MTA-STS, DANE, TLS-RPT."""

    # RFC 8461: fetch a destination's policy from https://mta-sts.<domain>/; under "enforce"
    # mail goes only to its MX names over TLS with a valid certificate, else it waits.
    mta_sts: bool = True
    # RFC 7672: a destination whose TLSA records validate under DNSSEC gets TLS matching them.
    dane: bool = True
    # PEM file of CAs trusted beside the system's, for MTA-STS (policy fetch and MX
    # certificates); "" = the system's only. Tests name a throw-away CA here.
    ca_file: str = ""
    # Port of the HTTPS server of mta-sts.<domain>: 443 (RFC 8461 3.3); tests use a loopback one.
    mta_sts_port: int = 443
    # RFC 8460: record each connection's outcome per policy domain and day, and send daily
    # reports to the domains that publish _smtp._tls (`mailforge tlsrpt send`).
    tlsrpt: bool = True
    # Envelope and From: of the reports; "" = postmaster@[server] hostname.
    tlsrpt_sender: str = ""


@dataclass
class AuthenticationConfig:
    """Checks of mail received over port 25 without AUTH (mailauth/inbound.py)."""

    # SPF, DKIM, ARC and DMARC, written into one Authentication-Results header; false: mail
    # is taken unchecked (a filtering gateway in front does it).
    inbound_checks: bool = True
    # Act on the sender's DMARC policy: p=reject → 550 5.7.1 after DATA, p=quarantine → the
    # recipient's Junk folder, policy unreadable for want of DNS → 451 4.4.3. false: only the
    # header and the log say so.
    dmarc_enforce: bool = True
    # The authserv-id our Authentication-Results and ARC-Authentication-Results headers name
    # (RFC 8601 2.5); "" = [server] hostname. The nodes of a cluster share one, so that each
    # node that checks mail removes a forged verdict in any node's name.
    authserv_id: str = ""


@dataclass
class QueueConfig:
    """Backpressure: acceptance slows, then stops, when delivery cannot keep up (queue/flow.py)."""

    # Seconds each MAIL waits while the queue holds in_flow_backlog messages or more and is
    # still growing (Postfix's in_flow_delay: acceptance slowed to what delivery moves); 0 = off.
    in_flow_delay: float = 1.0
    # Below this many queued messages a burst is never slowed: delivery absorbs it in a moment.
    in_flow_backlog: int = 1000
    # Past either limit MAIL gets 451 4.3.1 until the queue is back under 90% of both.
    # 0 = derived from the data disk when the server starts: max_messages 100,000 or half its
    # free inodes if fewer, max_bytes a quarter of its free space.
    max_messages: int = 0
    max_bytes: int = 0


@dataclass
class MetricsConfig:
    listen: str = "127.0.0.1:9925"
    # Where each process keeps its values (memory-mapped files). "" = a private directory on
    # /dev/shm (memory), so a full data disk cannot touch them; else <data_dir>/run/metrics.
    directory: str = ""


@dataclass
class LogConfig:
    format: str = "text"    # text | json
    # stderr | file (log/mailforge.log, for logrotate) | syslog (/dev/log) | stderr+file (both:
    # what `init` writes for a server run from a terminal; `mailforge logs` reads the file)
    target: str = "stderr"
    level: str = "info"     # debug | info | warning | error


@dataclass
class ClusterConfig:
    """Many nodes behind one load balancer (README, "Scaling out")."""

    # Valkey/Redis that holds the counters every limit needs across nodes (connections per IP
    # and per service, failed logins and blocks, outbound counts): "redis://[:password@]host:port/db"
    # or "rediss://..." for TLS; "" = this node's counts only. Unreachable: the node falls
    # back to its own counts (fail open) and re-registers its connections when it is back.
    redis: str = ""
    # This node's name in the shared counts; "" = [server] hostname. Unique per node. Also
    # its name in the accounts' node table (`mailforge node add`): mailboxes owned by another
    # node are proxied (POP3, IMAP) or relayed (SMTP) to it.
    node: str = ""
    # A file (relative paths: under the data dir) whose first line is the cluster's master
    # secret, the same on every node, at least 16 characters, readable by the [server] user.
    # With it, a node proxies the POP3/IMAP sessions of mailboxes another node owns, logging
    # in there for the user with it, and accepts such logins from [server] proxy_trusted
    # peers. "" = neither: sessions of mailboxes owned elsewhere get a temporary error.
    secret_file: str = ""
    # The link a node logs in over and relays mail over at a mailbox's owner (Dovecot's proxy
    # starttls=yes, Postfix's `secure` level): "starttls": STARTTLS (POP3: STLS) on the
    # owner's internal port, its certificate verified against tls_ca_file for its host in the
    # node table, before the master secret or a message is sent (mail waits in the queue
    # otherwise); and as an owner, a proxied login is taken only inside TLS. "none": in the
    # clear (SMTP: opportunistic TLS), for an internal network that nobody else can read.
    tls: str = "none"
    # A PEM file (relative paths: under the data dir) of the CA(s) that signed the nodes'
    # [tls] cert, readable by the [server] user: only these are trusted on the link.
    tls_ca_file: str = ""

    @property
    def tls_link(self) -> bool:
        """Whether nodes log in and relay mail at owners only inside verified TLS."""
        return self.tls != "none"


@dataclass
class AccountsConfig:
    # "sqlite": accounts.sqlite3 in the data dir (one node); "postgresql": the database at dsn,
    # shared by every node (`mailforge accounts migrate` copies a SQLite file into it).
    backend: str = "sqlite"
    # libpq's "host=db1 dbname=mailforge user=mailforge" or a postgresql:// URL. Leave the
    # password out: it comes from password_file, else from libpq's PGPASSWORD or ~/.pgpass.
    dsn: str = ""
    # A file whose first line is the password (relative paths: under the data dir), readable
    # by the workers' [server] user; "" = none.
    password_file: str = ""
    # Connections each process keeps open at most (a worker's lookups run in its max_threads).
    pool_size: int = 4
    # Seconds a login or lookup waits for a connection before it fails temporarily (454, 451,
    # NO [UNAVAILABLE], -ERR [SYS/TEMP]) while the database is down or unreachable.
    timeout: float = 5.0


ACCOUNTS_BACKENDS = ("sqlite", "postgresql")

# Service name → default listen address when run unprivileged (DESIGN.md, config contract).
SERVICE_PORTS = {
    "smtp": 2525,
    "submission": 2587,
    "smtps": 2465,
    "pop3": 2110,
    "pop3s": 2995,
    "imap": 2143,
    "imaps": 2993,
    "autoconfig": 2080,
    "admin": 2880,
}
# Services whose protocol this build serves; the others are configurable but stay off.
IMPLEMENTED_SERVICES = ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps",
                        "autoconfig", "admin")
# What `mailforge init` turns on (it makes the certificate they need); a config that does not
# mention a service leaves it off. The mail services: autoconfig is the operator's choice.
INIT_SERVICES = ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
CLUSTER_TLS_MODES = ("none", "starttls")
RELAY_MODES = ("none", "authenticated", "networks", "open")
DNSSEC_MODES = ("validate", "trust-ad", "off")


def _service(port: int, enabled: bool, idle_timeout: float = ServiceConfig.idle_timeout
             ) -> typing.Callable[[], ServiceConfig]:
    return lambda: ServiceConfig(listen=[f"127.0.0.1:{port}"] if enabled else [],
                                 idle_timeout=idle_timeout)


# RFC 1939 3: a POP3 server's autologout timer "MUST be of at least 10 minutes' duration"
# (Dovecot's POP3 waits 10 minutes too); RFC 3501 5.4: an IMAP server's at least 30 minutes
# (Dovecot's IMAP too; an IDLE session is never idle: imapd.py).
POP3_IDLE_TIMEOUT = 600.0
IMAP_IDLE_TIMEOUT = 1800.0


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    smtp: ServiceConfig = field(default_factory=_service(2525, True))
    submission: ServiceConfig = field(default_factory=_service(2587, False))
    smtps: ServiceConfig = field(default_factory=_service(2465, False))
    pop3: ServiceConfig = field(
        default_factory=_service(2110, False, idle_timeout=POP3_IDLE_TIMEOUT))
    pop3s: ServiceConfig = field(
        default_factory=_service(2995, False, idle_timeout=POP3_IDLE_TIMEOUT))
    imap: ServiceConfig = field(
        default_factory=_service(2143, False, idle_timeout=IMAP_IDLE_TIMEOUT))
    imaps: ServiceConfig = field(
        default_factory=_service(2993, False, idle_timeout=IMAP_IDLE_TIMEOUT))
    # Client set-up over HTTP (Thunderbird autoconfig, Outlook autodiscover, an Apple profile)
    # naming hostname and the mail services' ports; off until listen names an address, e.g.
    # ["127.0.0.1:2080"] behind the web server that answers autoconfig.<domain> over HTTPS.
    # A web client sends its request at once: 30 s of silence is plenty.
    autoconfig: ServiceConfig = field(default_factory=lambda: ServiceConfig(idle_timeout=30.0))
    # The web administration console; `init` turns it on at 127.0.0.1:2880.
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    abuse: AbuseConfig = field(default_factory=AbuseConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    outbound_tls: OutboundTLSConfig = field(default_factory=OutboundTLSConfig)
    authentication: AuthenticationConfig = field(default_factory=AuthenticationConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    # Where the config was read from; relative paths in it are relative to its directory.
    path: Path = field(default=Path(DEFAULT_CONFIG_NAME), compare=False)

    @property
    def data_dir(self) -> Path:
        return (self.path.parent / self.server.data_dir).resolve()

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def badmail_dir(self) -> Path:
        return self.data_dir / "badmail"

    @property
    def dkim_dir(self) -> Path:
        return self.data_dir / "dkim"

    @property
    def tls_policy_dir(self) -> Path:
        """Cached MTA-STS policies and the TLS-RPT results of each day (tlspolicy/)."""
        return self.data_dir / "tls-policy"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def accounts_db(self) -> Path:
        return self.data_dir / "accounts.sqlite3"

    @property
    def control_socket(self) -> Path:
        return self.run_dir / "control.sock"

    @property
    def admin_socket(self) -> Path:
        """The supervisor's socket for the console's workers alone (process/supervisor.py)."""
        return self.run_dir / "admin.sock"

    @property
    def ratekeeper_socket(self) -> Path:
        return self.run_dir / "ratekeeper.sock"

    @property
    def authserv_id(self) -> str:
        """The name our Authentication-Results headers go by (RFC 8601 2.5)."""
        return self.authentication.authserv_id or self.server.hostname

    @property
    def node_name(self) -> str:
        return self.cluster.node or self.server.hostname

    def services(self) -> dict[str, ServiceConfig]:
        """Enabled services (a non-empty listen list), by name."""
        return {name: getattr(self, name) for name in SERVICE_PORTS if getattr(self, name).listen}


def config_path(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH


def load(path: Path | str) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "no such config file (run `mailforge init` first)") from None
    except PermissionError:
        raise ConfigError(path, "", "permission denied") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    return loads(text, path)


def loads(text: str, path: Path | str) -> Config:
    """The config in `text`, as if read from `path`: what `load` and `check-config` apply,
    also to a change the console proposes before it is written (config_edit.py)."""
    path = Path(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    config = from_dict(raw, path)
    config.path = path.absolute()
    return config


def from_dict(raw: dict, path: Path | str = "<config>") -> Config:
    sections = {f.name: f for f in dataclasses.fields(Config) if f.name != "path"}
    config = Config()
    for name, value in raw.items():
        if name not in sections:
            raise ConfigError(path, f"[{name}]", f"unknown section (known: {', '.join(sections)})")
        if not isinstance(value, dict):
            raise ConfigError(path, name, "expected a [section] table")
        setattr(config, name, _section(getattr(config, name), name, value, path))
    _validate(config, path)
    return config


def _section(default: object, name: str, values: dict, path: Path | str) -> object:
    fields = {f.name: f for f in dataclasses.fields(default)}
    hints = typing.get_type_hints(type(default))
    changes = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(path, f"[{name}] {key}", f"unknown key (known: {', '.join(fields)})")
        changes[key] = _coerce(value, hints[key], path, f"[{name}] {key}")
    return dataclasses.replace(default, **changes)


def _coerce(value: object, hint: object, path: Path | str, key: str) -> object:
    origin = typing.get_origin(hint)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, key, f"expected true or false, got {value!r}")
        return value
    if hint in (str, int, float):
        if not isinstance(value, hint) or isinstance(value, bool):
            raise ConfigError(path, key, f"expected {_type_name(hint)}, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(path, key, f"expected a list of {_type_name(item)}, got {value!r}")
        return [_coerce(v, item, path, key) for v in value]
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(path, key, f"expected a table, got {value!r}")
        return {str(k): _coerce(v, item, path, f"{key}.{k}") for k, v in value.items()}
    raise AssertionError(f"unsupported config type {hint}")


def _type_name(hint: object) -> str:
    return {str: "a string", int: "an integer", float: "a number"}.get(hint, str(hint))


def parse_hostport(text: str) -> tuple[str, int]:
    """'127.0.0.1:25', '[::1]:25' → (host, port); ValueError with a reason otherwise."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range 1-65535")
    if host != "*":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not _is_hostname(host):
                raise ValueError(f"{host!r} is not an IP address or host name") from None
    return host, port


def _is_hostname(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return all(0 < len(label) < 64 and label.replace("-", "").isalnum() for label in labels)


def _validate(config: Config, path: Path | str) -> None:
    if not _is_hostname(config.server.hostname):
        raise ConfigError(path, "[server] hostname", f"{config.server.hostname!r} is not a host name")
    if config.authentication.authserv_id and not _is_hostname(config.authentication.authserv_id):
        raise ConfigError(path, "[authentication] authserv_id",
                          f"{config.authentication.authserv_id!r} is not a host or domain name")
    for key in ("grace_period", "worker_timeout"):
        if getattr(config.server, key) <= 0:
            raise ConfigError(path, f"[server] {key}", "must be greater than 0")
    seen: dict[tuple[str, int], str] = {}
    for name in SERVICE_PORTS:
        service: ServiceConfig = getattr(config, name)
        for text in service.listen:
            try:
                address = parse_hostport(text)
            except ValueError as exc:
                raise ConfigError(path, f"[{name}] listen", str(exc)) from None
            if address in seen:
                raise ConfigError(path, f"[{name}] listen", f"{text} is also used by [{seen[address]}]")
            seen[address] = name
        if service.listen and name not in IMPLEMENTED_SERVICES:
            raise ConfigError(path, f"[{name}] listen", "this service is not implemented yet; use []")
        for key in ("workers", "max_threads"):
            if getattr(service, key) < 1:
                raise ConfigError(path, f"[{name}] {key}", "must be at least 1")
        for key in ("max_connections", "max_connections_per_ip"):
            if getattr(service, key) < 0:
                raise ConfigError(path, f"[{name}] {key}", "must be 0 (unlimited) or more")
        if service.idle_timeout <= 0:
            raise ConfigError(path, f"[{name}] idle_timeout", "must be greater than 0")
        if service.proxy_protocol and not config.server.proxy_trusted:
            raise ConfigError(path, f"[{name}] proxy_protocol",
                              "needs the load balancers' addresses in [server] proxy_trusted")
    _validate_admin(config.admin, path)
    for key in ("max_message_size", "max_recipients", "max_line_length", "max_sessions_per_user"):
        if getattr(config.limits, key) < 1:
            raise ConfigError(path, f"[limits] {key}", "must be at least 1")
    if config.limits.min_transfer_rate < 0:
        raise ConfigError(path, "[limits] min_transfer_rate", "must be 0 (no minimum) or more")
    if config.limits.max_line_length < 512:
        raise ConfigError(path, "[limits] max_line_length", "must be at least 512 (RFC 5321 4.5.3.1.4)")
    if config.relay.mode not in RELAY_MODES:
        raise ConfigError(path, "[relay] mode", f"expected one of {', '.join(RELAY_MODES)}")
    _check_networks(config.relay.networks, path, "[relay] networks")
    _check_networks(config.server.proxy_trusted, path, "[server] proxy_trusted")
    if not set(config.server.recipient_delimiter) <= set(ATEXT_SYMBOLS):
        raise ConfigError(path, "[server] recipient_delimiter",
                          f"each character must be one of {ATEXT_SYMBOLS} (\"\" = off)")
    _validate_abuse(config.abuse, path)
    _validate_accounts(config.accounts, path)
    _validate_tls(config.tls, path)
    if config.delivery.workers < 1:
        raise ConfigError(path, "[delivery] workers", "must be at least 1")
    _validate_delivery(config.delivery, path)
    _validate_queue(config.queue, path)
    _validate_dns(config.dns, path)
    for key, port in (("[delivery] mx_port", config.delivery.mx_port),
                      ("[outbound_tls] mta_sts_port", config.outbound_tls.mta_sts_port)):
        if not 0 < port < 65536:
            raise ConfigError(path, key, "must be a port number, 1 to 65535")
    for domain, target in config.delivery.mx_override.items():
        _check_hostport(target, path, f"[delivery] mx_override.{domain}")
    for key, value in (("[delivery] smarthost", config.delivery.smarthost),
                       ("[metrics] listen", config.metrics.listen)):
        if value:
            _check_hostport(value, path, key)
    _validate_log(config.log, path)
    _validate_cluster(config.cluster, path)


def _validate_cluster(cluster: ClusterConfig, path: Path | str) -> None:
    if cluster.redis and not cluster.redis.startswith(REDIS_SCHEMES):
        raise ConfigError(path, "[cluster] redis",
                          f"expected a URL starting with {' or '.join(REDIS_SCHEMES)}")
    if any(c.isspace() for c in cluster.node):
        raise ConfigError(path, "[cluster] node", "must not contain white space")
    if cluster.tls not in CLUSTER_TLS_MODES:
        raise ConfigError(path, "[cluster] tls", f"expected one of {', '.join(CLUSTER_TLS_MODES)}")
    if cluster.tls_link and not cluster.tls_ca_file:
        raise ConfigError(path, "[cluster] tls_ca_file",
                          f'tls = "{cluster.tls}" needs the CA file that the nodes\' '
                          "certificates are verified with")


def _validate_admin(admin: AdminConfig, path: Path | str) -> None:
    if admin.session_lifetime <= 0:
        raise ConfigError(path, "[admin] session_lifetime", "must be greater than 0")
    if not admin.allow_plain_http:
        return
    for text in admin.listen:
        host = parse_hostport(text)[0]
        if host == "localhost":
            continue
        if host == "*" or not _is_ip(host) or not ipaddress.ip_address(host).is_loopback:
            raise ConfigError(path, "[admin] allow_plain_http",
                              f"plain HTTP only on loopback; {text} is not (use TLS there)")


def _validate_log(log: LogConfig, path: Path | str) -> None:
    from .logging import FORMATS, LEVELS, TARGETS

    for key, allowed in (("format", FORMATS), ("target", TARGETS), ("level", LEVELS)):
        if getattr(log, key) not in allowed:
            raise ConfigError(path, f"[log] {key}", f"expected one of {', '.join(allowed)}")


def _validate_delivery(delivery: DeliveryConfig, path: Path | str) -> None:
    if not delivery.retry_schedule or min(delivery.retry_schedule) <= 0:
        raise ConfigError(path, "[delivery] retry_schedule", "must list delays greater than 0")
    for key in ("max_queue_time", "quota_full_bounce_after", "connect_timeout", "command_timeout"):
        if getattr(delivery, key) <= 0:
            raise ConfigError(path, f"[delivery] {key}", "must be greater than 0")
    if delivery.delay_notice < 0:
        raise ConfigError(path, "[delivery] delay_notice", "must be 0 (never) or more")
    for key in ("max_per_destination", "messages_per_connection"):
        if getattr(delivery, key) < 1:
            raise ConfigError(path, f"[delivery] {key}", "must be at least 1")
    if delivery.smarthost_user and not delivery.smarthost:
        raise ConfigError(path, "[delivery] smarthost_user", "needs a smarthost")


def _validate_queue(queue: QueueConfig, path: Path | str) -> None:
    if queue.in_flow_delay < 0:
        raise ConfigError(path, "[queue] in_flow_delay", "must be 0 (off) or more")
    for key in ("in_flow_backlog", "max_messages", "max_bytes"):
        if getattr(queue, key) < 0:
            raise ConfigError(path, f"[queue] {key}", "must be 0 or more")


def _validate_dns(dns: DnsConfig, path: Path | str) -> None:
    if dns.dnssec not in DNSSEC_MODES:
        raise ConfigError(path, "[dns] dnssec", f"expected one of {', '.join(DNSSEC_MODES)}")
    for text in dns.nameservers:
        try:
            parse_nameserver(text)
        except ValueError as exc:
            raise ConfigError(path, "[dns] nameservers", str(exc)) from None
    for key in ("timeout", "lifetime"):
        if getattr(dns, key) <= 0:
            raise ConfigError(path, f"[dns] {key}", "must be greater than 0")


def parse_nameserver(text: str) -> tuple[str, int]:
    """'192.0.2.1', '::1', '127.0.0.1:5353', '[::1]:5353' → (address, port); a resolver is
    named by address (a name would need a resolver to find it)."""
    try:
        return str(ipaddress.ip_address(text)), 53
    except ValueError:
        pass
    not_an_address = ValueError(f"{text!r} is not an IP address (with an optional :port)")
    if ":" not in text:
        raise not_an_address
    host, port = parse_hostport(text)
    if not _is_ip(host):
        raise not_an_address
    return host, port


def _check_networks(networks: list[str], path: Path | str, key: str) -> None:
    for net in networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(path, key, f"{net!r} is not a network") from None


def _validate_abuse(abuse: AbuseConfig, path: Path | str) -> None:
    for key in ("window", "block_time"):
        if getattr(abuse, key) <= 0:
            raise ConfigError(path, f"[abuse] {key}", "must be greater than 0")
    for key in ("tarpit_after", "tarpit_delay", "tarpit_max", "block_after"):
        if getattr(abuse, key) < 0:
            raise ConfigError(path, f"[abuse] {key}", "must be 0 or more")
    _check_networks(abuse.exempt_networks, path, "[abuse] exempt_networks")
    if abuse.notify:
        try:
            normalize_address(abuse.notify)
        except UsageError as exc:
            raise ConfigError(path, "[abuse] notify", str(exc)) from None


def _validate_accounts(accounts: AccountsConfig, path: Path | str) -> None:
    if accounts.backend not in ACCOUNTS_BACKENDS:
        raise ConfigError(path, "[accounts] backend",
                          f"expected one of {', '.join(ACCOUNTS_BACKENDS)}")
    if accounts.backend == "postgresql" and not accounts.dsn:
        raise ConfigError(path, "[accounts] dsn", 'backend "postgresql" needs the database\'s dsn')
    if accounts.pool_size < 1:
        raise ConfigError(path, "[accounts] pool_size", "must be at least 1")
    if accounts.timeout <= 0:
        raise ConfigError(path, "[accounts] timeout", "must be greater than 0")


def _validate_tls(tls: TLSConfig, path: Path | str) -> None:
    for key in ("cert", "key"):
        if not getattr(tls, key):
            raise ConfigError(path, f"[tls] {key}", "must name a file")
    for name in tls.san:
        if not _is_certificate_name(name):
            raise ConfigError(path, "[tls] san", f"{name!r} is not a host name, *.wildcard or IP address")
    for domain, files in tls.domains.items():
        key = f"[tls] domains.{domain}"
        if not (_is_certificate_name(domain) and not _is_ip(domain)):
            raise ConfigError(path, key, f"{domain!r} is not a host name or *.wildcard")
        if set(files) != {"cert", "key"} or not all(files.values()):
            raise ConfigError(path, key, 'expected {cert = "file", key = "file"}')


def _is_certificate_name(name: str) -> bool:
    return _is_ip(name) or _is_hostname(name.removeprefix("*."))


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _check_hostport(text: str, path: Path | str, key: str) -> None:
    try:
        parse_hostport(text)
    except ValueError as exc:
        raise ConfigError(path, key, str(exc)) from None


def render_toml(config: Config) -> str:
    """The whole config as TOML, every section and key present."""
    out = ["# mailforge configuration: every key is shown at its value; see README.md\n"]
    for f in dataclasses.fields(Config):
        if f.name == "path":
            continue
        out.append(f"[{f.name}]")
        section = getattr(config, f.name)
        for key, value in dataclasses.asdict(section).items():
            out.append(f"{key} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise AssertionError(f"cannot render {value!r}")
