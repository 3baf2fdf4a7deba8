"""Start and stop the servers the bench tools measure: loopback only, each stopped by pid.

Every peer is a context manager yielding a `Target`; leaving it stops the server (SIGTERM, a
grace period, then SIGKILL to the server and every descendant it had), whatever happened.
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
BENCH_DOMAIN = "bench.test"
# How long a server gets to come up, and to exit on SIGTERM before SIGKILL.
START_TIMEOUT = 60.0
STOP_GRACE = 10.0
# A server that answers its greeting but never logs "ready" is taken as ready after this long.
GREETING_SETTLE = 1.0

# The anchor Postfix instance lives at fixed paths chosen by setup_postfix.sh.
POSTFIX = Path("/usr/sbin/postfix")
POSTFIX_CONF = Path("/tmp/anchor/postfix")
POSTFIX_QUEUE = Path("/tmp/anchor/postfix-queue")
POSTFIX_QUEUE_DIRS = ("maildrop", "incoming", "active", "deferred", "defer", "hold", "corrupt")
POSTFIX_PORT = 2525
POSTFIX_RCPT = "user@bench.test"
POSTFIX_MAILDIR_NEW = Path("/tmp/anchor/vmail/bench.test/user/new")
POSTCONF = Path("/usr/sbin/postconf")
# `bench.load relay` sends to this domain: local to no peer, so each relays it to the sink.
RELAY_RCPT = "user@relay.bench.test"
MAILFORGE_RCPT = "bench1@bench.test"
# Past this many users, `user add` runs in parallel once per bench run and later servers get a
# copy of the accounts DB and Maildirs it made (1,000 take ~5 minutes one after another here).
SERIAL_USERS = 50
# What the POP3 load logs in with (the SMTP load never logs in).
MAILFORGE_PASSWORD = "bench-password"
SERVICES = ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps")
# What a server says first on each protocol the bench drives: proof that it serves.
GREETINGS = {"smtp": b"220", "pop3": b"+OK", "imap": b"* OK"}

# The anchor Dovecot instance, at the fixed paths and ports chosen by setup_dovecot.sh.
DOVECOT = Path("/usr/sbin/dovecot")
DOVECOT_CONF = Path("/tmp/anchor/dovecot/dovecot.conf")
DOVECOT_HOMES = Path("/tmp/anchor/dmail")
DOVECOT_POP3_PORT = 2110
DOVECOT_IMAP_PORT = 2143
DOVECOT_USERS = 50  # bench1..bench50@bench.test
DOVECOT_PASSWORD = "pass"
DOVECOT_USERS_FILE = Path("/tmp/anchor/dovecot/users")
DOVEADM = Path("/usr/bin/doveadm")
# The anchor writes {PLAIN} passwords; the bench replaces them with salted SHA512-CRYPT hashes
# whose check costs about what mailforge's scrypt (ln=14, r=8) costs on these machines
# (~60 ms of CPU each, measured side by side; see bench/README.md). "plain" keeps the anchor's.
DOVECOT_SCHEMES = {"sha512-crypt": ["-s", "SHA512-CRYPT", "-r", "140000"], "plain": []}
VMAIL_UID = VMAIL_GID = 5000


class PeerUnavailable(Exception):
    """The peer cannot run on this machine (not installed, port taken): skip it with this note."""


@dataclass
class Target:
    name: str
    host: str
    port: int
    rcpt: str
    pid: int
    # Where accepted messages end up once delivered; None when the peer has no Maildir.
    maildir_new: Path | None
    config: Path | None = None
    # What the report should say about how the server ran (e.g. mailforge's implementation).
    info: str = ""
    # Accounts a reading client (POP3) logs in as, all with `password`; each has the same mailbox.
    users: tuple[str, ...] = ()
    password: str = ""
    # How clients secure the line: "plain", "tls" (implicit, from the connect) or "starttls";
    # the started peers are plain, another server may want either (bench/remote.py).
    tls_mode: str = "plain"
    ssl_context: ssl.SSLContext | None = None
    # SMTP clients AUTH PLAIN as users[0] before sending (submission servers require it).
    auth: bool = False
    # For a relaying peer: how many messages the sink it relays to has taken so far.
    relayed: Callable[[], int] | None = None
    # An SMTP load spread over mailboxes (`--mailboxes N`): the recipients, taken in turn, and
    # the new/ directories of their Maildirs; empty: `rcpt` and `maildir_new` alone.
    rcpts: tuple[str, ...] = ()
    maildirs_new: tuple[Path, ...] = ()

    def recipients(self) -> tuple[str, ...]:
        return self.rcpts or (self.rcpt,)

    def delivered_dirs(self) -> tuple[Path, ...]:
        if self.maildirs_new:
            return self.maildirs_new
        return () if self.maildir_new is None else (self.maildir_new,)


def anchors_dir(explicit: str | None = None) -> Path:
    """`--anchors`, else $MAILFORGE_ANCHORS, else `<repo>/../shared/anchors`."""
    if explicit:
        return Path(explicit)
    if os.environ.get("MAILFORGE_ANCHORS"):
        return Path(os.environ["MAILFORGE_ANCHORS"])
    return Path(__file__).resolve().parent.parent.parent / "shared" / "anchors"


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit towards `wanted` (children inherit it); the result."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        # Root may raise the hard limit too; others get as far as the hard limit allows.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((LOOPBACK, port)) == 0


def mailforge_command() -> list[str]:
    """The `mailforge` script installed beside this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "mailforge"
    found = str(beside) if beside.exists() else shutil.which("mailforge")
    if not found:
        raise PeerUnavailable("no `mailforge` command beside the interpreter or on PATH")
    return [found]


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid, from /proc (children of all its threads)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in _listdir(f"/proc/{parent}/task"):
            with contextlib.suppress(OSError):
                kids = [int(k) for k in Path(f"/proc/{parent}/task/{task}/children").read_text().split()]
                found.extend(kids)
                pending.extend(kids)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time used so far by pid and its descendants, the reaped ones included.

    A child reaped between two readings moves from its own entry into its parent's
    cutime/cstime, so the difference of two readings stays right (Postfix's smtpd come and go).
    """
    return sum(tree_cpu_split(pid))


def tree_cpu_split(pid: int) -> tuple[float, float]:
    """tree_cpu_seconds as (user, system): the interpreter's share against the kernel's."""
    user = system = 0
    for member in (pid, *descendants(pid)):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 after the name.
            ticks = [int(f) for f in fields[11:15]]
            user += ticks[0] + ticks[2]
            system += ticks[1] + ticks[3]
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def stop_process(proc: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """SIGTERM, wait `grace`, then SIGKILL the process and the descendants it had, by pid."""
    family = descendants(proc.pid)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=grace)
    # Workers normally exit with their parent; any that did not are killed by their own pid.
    for pid in family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def spawn(argv: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """Start a server with its output in `log`: a pipe nobody reads would block it once full."""
    with open(log, "ab") as out:
        # Its own session, so a Ctrl-C aimed at the bench reaches the server only through us.
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **kwargs)


def run_checked(argv: list[str], log: Path, stdin: bytes | None = None, timeout: float = 60) -> None:
    result = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
    with open(log, "ab") as out:
        out.write(b"$ " + " ".join(argv).encode() + b"\n" + result.stdout + result.stderr)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"`{' '.join(argv[-3:])}` exited {result.returncode}: "
                           f"{detail[-1] if detail else 'no output'}")


def log_tail(log: Path, lines: int = 5) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_ready(proc: subprocess.Popen, port: int, log: Path, timeout: float = START_TIMEOUT,
               greeting: bytes = GREETINGS["smtp"]) -> None:
    """Until the log says `ready`, or a `greeting` has been answered for GREETING_SETTLE s.

    A prefork server's port accepts as soon as the supervisor binds it, before any worker
    serves, so a TCP connect alone proves nothing; a greeting does.
    """
    deadline = time.monotonic() + timeout
    greeted_at: float | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode} while starting:\n{log_tail(log)}")
        if _logged_ready(log):
            return
        if greeted_at is None and _greets(port, greeting):
            greeted_at = time.monotonic()
        if greeted_at is not None and time.monotonic() - greeted_at >= GREETING_SETTLE:
            return
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout:.0f}s:\n{log_tail(log)}")


def _logged_ready(log: Path) -> bool:
    try:
        return any(word == "ready" for word in log.read_text(errors="replace").lower().split())
    except OSError:
        return False


def _greets(port: int, greeting: bytes) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            return sock.recv(512).startswith(greeting)
    except OSError:
        return False


def fill_maildir(maildir: Path, messages: Sequence[bytes], owner: tuple[int, int] | None = None) -> None:
    """A Maildir holding exactly `messages` in new/, as a delivery agent leaves them.

    Written before the server starts, so no tmp/ step is needed; `owner` (uid, gid) for a
    server that reads the mail as another user (Dovecot's vmail).
    """
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    for serial, message in enumerate(messages):
        (maildir / "new" / f"{stamp}.M{serial}P{os.getpid()}.bench").write_bytes(message)
    if owner is not None:
        for path in (maildir.parent, maildir, *maildir.rglob("*")):
            os.chown(path, *owner)


def count_files(directory: Path | None) -> int:
    if directory is None:
        return 0
    try:
        with os.scandir(directory) as entries:
            return sum(1 for _ in entries)
    except FileNotFoundError:
        return 0


# --- mailforge --------------------------------------------------------------------------------

def set_toml_keys(path: Path, changes: dict[str, dict[str, object]]) -> None:
    """Rewrite single-line `key = value` entries inside the named sections of a TOML file.

    No TOML writer is a dependency, and rewriting lines keeps every comment `mailforge init`
    wrote. Keys missing from a present section are added after its header; the result is
    parsed back to prove the edit landed.
    """
    lines = path.read_text().splitlines()
    pending = {section: dict(keys) for section, keys in changes.items()}
    section = ""
    out: list[str] = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            section = stripped.strip("[]").strip()
            out.append(line)
            out.extend(f"{k} = {json.dumps(v)}" for k, v in pending.get(section, {}).items()
                       if not _section_has(lines, section, k))
            continue
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        if key and key in pending.get(section, {}):
            out.append(f"{key} = {json.dumps(pending[section][key])}")
        else:
            out.append(line)
    path.write_text("\n".join(out) + "\n")
    parsed = tomllib.loads(path.read_text())
    for name, keys in changes.items():
        for key, value in keys.items():
            if name in parsed and parsed[name].get(key) != value:
                raise RuntimeError(f"could not set [{name}] {key} in {path}")


def _section_has(lines: list[str], section: str, key: str) -> bool:
    current = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            current = stripped.strip("[]").strip()
        elif current == section and stripped.split("=", 1)[0].strip() == key:
            return True
    return False


def mailforge_settings(port: int, workers: int, max_connections: int,
                       idle_timeout: float | None = None, service: str = "smtp",
                       max_threads: int | None = None,
                       delivery_workers: int | None = None) -> dict[str, dict[str, object]]:
    """`service` alone on `port`; every other listener off so no default port can collide."""
    served: dict[str, object] = {"listen": [f"{LOOPBACK}:{port}"], "workers": workers,
                                 "max_connections": max_connections,
                                 "max_connections_per_ip": max_connections}
    if idle_timeout is not None:
        served["idle_timeout"] = idle_timeout
    if max_threads is not None:
        served["max_threads"] = max_threads
    changes: dict[str, dict[str, object]] = {s: {"listen": []} for s in (*SERVICES, "admin")
                                             if s != service}
    changes[service] = served
    changes["metrics"] = {"listen": ""}
    if delivery_workers is not None:
        changes["delivery"] = {"workers": delivery_workers}
    if service in ("pop3", "imap"):
        # USER/PASS and LOGIN without TLS on loopback, as the Dovecot anchor allows (disable_plaintext_auth
        # = no): the bench measures POP3, not a TLS handshake.
        changes["server"] = {"allow_plaintext_auth": True}
    return changes


def relay_settings(sink_port: int) -> dict[str, dict[str, object]]:
    """Relay for loopback clients, everything remote through the sink (as a smarthost)."""
    return {"relay": {"mode": "networks"},
            "delivery": {"smarthost": f"{LOOPBACK}:{sink_port}"}}


@contextlib.contextmanager
def run_sink() -> Iterator[tuple[int, Callable[[], int]]]:
    """bench/sink.py on a free port: (port, how many messages it has taken)."""
    with tempfile.TemporaryDirectory(prefix="sink-bench-") as tmp:
        root = Path(tmp)
        port, count_file, log = free_port(), root / "count", root / "sink.log"
        proc = spawn([sys.executable, str(Path(__file__).with_name("sink.py")), "--port", str(port),
                      "--count-file", str(count_file)], log)

        def taken() -> int:
            try:
                return int(count_file.read_text() or 0)
            except (OSError, ValueError):
                return 0
        try:
            wait_ready(proc, port, log)
            yield port, taken
        finally:
            stop_process(proc)


def mailforge_status(conf: Path) -> dict:
    """`mailforge status --json`, or {} when it fails: the figures do not depend on it."""
    try:
        result = subprocess.run(mailforge_command() + ["-c", str(conf), "status", "--json"],
                                capture_output=True, timeout=10)
        return json.loads(result.stdout) if result.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return {}


def worker_pids(status: dict, service: str = "smtp") -> list[int]:
    workers = status.get("services", {}).get(service, {}).get("workers", [])
    return [w["pid"] for w in workers if isinstance(w, dict) and "pid" in w]


def bench_users(count: int) -> list[str]:
    """bench1@bench.test … bench<count>@bench.test."""
    return [f"bench{n}@{BENCH_DOMAIN}" for n in range(1, count + 1)]


# users → a data dir holding their accounts DB and Maildirs, made by `user add` once per run.
_users_made: dict[tuple[str, ...], Path] = {}
ACCOUNTS_DB = "accounts.sqlite3"


def add_users(cmd: list[str], conf: Path, users: Sequence[str], log: Path) -> None:
    """`mailforge user add` for each of `users`; many of them in parallel, once per run."""
    if len(users) <= SERIAL_USERS:
        for user in users:
            _add_user(cmd, conf, user, log)
        return
    root, domain_store = conf.parent, Path("store") / BENCH_DOMAIN
    made = _users_made.get(tuple(users))
    if made is None:
        with concurrent.futures.ThreadPoolExecutor(2 * (os.cpu_count() or 1)) as pool:
            list(pool.map(lambda user: _add_user(cmd, conf, user, log), users))
        made = Path(tempfile.mkdtemp(prefix="mailforge-bench-users-"))
        atexit.register(shutil.rmtree, made, True)
        # Every `user add` has exited, so the DB is whole in its main file (no WAL left).
        shutil.copyfile(root / ACCOUNTS_DB, made / ACCOUNTS_DB)
        shutil.copytree(root / domain_store, made / domain_store)
        _users_made[tuple(users)] = made
        return
    shutil.copyfile(made / ACCOUNTS_DB, root / ACCOUNTS_DB)
    shutil.copytree(made / domain_store, root / domain_store, dirs_exist_ok=True)


def _add_user(cmd: list[str], conf: Path, user: str, log: Path) -> None:
    run_checked(cmd + ["-c", str(conf), "user", "add", user, "--password-stdin"], log,
                stdin=MAILFORGE_PASSWORD.encode() + b"\n")


@contextlib.contextmanager
def run_mailforge(workers: int = 2, max_connections: int = 1000, idle_timeout: float | None = None,
                  port: int | None = None, pure_python: bool = False, service: str = "smtp",
                  users: Sequence[str] = (MAILFORGE_RCPT,),
                  mailbox: Sequence[bytes] = (), max_threads: int | None = None,
                  relay_to: tuple[int, Callable[[], int]] | None = None,
                  delivery_workers: int | None = None,
                  extra: dict[str, dict[str, object]] | None = None) -> Iterator[Target]:
    """mailforge serving `service` alone; every one of `users` has `mailbox` in its Maildir.
    With `relay_to` (a sink's port and counter) it relays RELAY_RCPT's mail to that sink;
    `extra` ({section: {key: value}}) is set in its config last."""
    cmd = mailforge_command()
    with tempfile.TemporaryDirectory(prefix="mailforge-bench-") as tmp:
        root = Path(tmp)
        log = root / "setup.log"
        conf = root / "mailforge.toml"
        port = port or free_port()
        run_checked(cmd + ["init", "--dir", str(root)], log)
        present = set(tomllib.loads(conf.read_text()))
        settings = mailforge_settings(port, workers, max_connections, idle_timeout, service,
                                      max_threads, delivery_workers)
        for section, keys in [*(relay_settings(relay_to[0]).items() if relay_to else ()),
                              *(extra or {}).items()]:
            settings.setdefault(section, {}).update(keys)
        set_toml_keys(conf, {k: v for k, v in settings.items() if k in present})
        run_checked(cmd + ["-c", str(conf), "domain", "add", BENCH_DOMAIN], log)
        add_users(cmd, conf, users, log)
        for user in users if mailbox else ():
            fill_maildir(mailforge_maildir(root, user), mailbox)
        # Its own log: only the server's own words may say "ready".
        serve_log = root / "serve.log"
        env = dict(os.environ, MAILFORGE_PUREPYTHON="1") if pure_python else None
        proc = spawn(cmd + ["-c", str(conf), "serve"], serve_log, cwd=root, env=env)
        try:
            wait_ready(proc, port, serve_log, greeting=GREETINGS[service])
            status = mailforge_status(conf)
            info = (f"implementation {status.get('implementation', '?')}, "
                    f"{service.upper()} workers: {len(worker_pids(status, service))}, "
                    f"delivery workers: {len(status.get('delivery', []))}") if status else ""
            name = "mailforge-pure" if pure_python else "mailforge"
            if relay_to is not None:
                yield Target(name, LOOPBACK, port, RELAY_RCPT, proc.pid, None, conf, info,
                             relayed=relay_to[1])
                return
            # An SMTP load goes to every user in turn (one user: bench1 alone, as always).
            rcpts = tuple(users) if service == "smtp" else ()
            yield Target(name, LOOPBACK, port, MAILFORGE_RCPT, proc.pid,
                         mailforge_maildir(root, MAILFORGE_RCPT) / "new", conf, info,
                         tuple(users), MAILFORGE_PASSWORD, rcpts=rcpts,
                         maildirs_new=tuple(mailforge_maildir(root, u) / "new" for u in rcpts))
        finally:
            stop_process(proc)


def run_imap_peer(name: str, workers: int, mailbox: Sequence[bytes],
                  anchors: str | None) -> contextlib.AbstractContextManager[Target]:
    """`name`'s IMAP service (mailforge with `workers` IMAP workers, or the anchor Dovecot)
    with one user, MAILFORGE_RCPT, whose INBOX holds `mailbox`."""
    if name == "mailforge":
        return run_mailforge(workers=workers, service="imap", mailbox=mailbox)
    if name == "dovecot":
        return run_dovecot(anchors_dir(anchors), 1, mailbox, service="imap")
    raise SystemExit(f"unknown peer {name!r}")


def mailforge_maildir(root: Path, address: str) -> Path:
    """Where `mailforge init --dir root` keeps a user's Maildir (store/<domain>/<local>)."""
    local, _, domain = address.rpartition("@")
    return root / "store" / domain / local / "Maildir"


# --- aiosmtpd (anchor) -------------------------------------------------------------------------

@contextlib.contextmanager
def run_aiosmtpd(anchors: Path) -> Iterator[Target]:
    script = anchors / "aiosmtpd_maildir.py"
    if not script.exists():
        raise PeerUnavailable(f"no anchor script at {script} (set --anchors or $MAILFORGE_ANCHORS)")
    with tempfile.TemporaryDirectory(prefix="aiosmtpd-bench-") as tmp:
        root = Path(tmp)
        log = root / "bench.log"
        port = free_port()
        maildir = root / "Maildir"
        proc = spawn([sys.executable, str(script), "--port", str(port), "--maildir", str(maildir),
                      "--mode", "thread"], log)
        try:
            wait_ready(proc, port, log)
            yield Target("aiosmtpd", LOOPBACK, port, "user@bench.test", proc.pid, maildir / "new")
        finally:
            stop_process(proc)


# --- Postfix (anchor) --------------------------------------------------------------------------

def drop_postfix_queue() -> None:
    """Empty the stopped anchor instance's queue: mail an earlier run left undelivered would
    otherwise be delivered during this one and count as this run's.

    `postsuper -d ALL` would be the tool, but with Postfix stopped it cannot open the anchor's
    maillog_file; the files are only this bench instance's.
    """
    for sub in POSTFIX_QUEUE_DIRS:
        for path in (POSTFIX_QUEUE / sub).rglob("*"):
            if path.is_file():
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def run_postfix(anchors: Path,
                relay_to: tuple[int, Callable[[], int]] | None = None) -> Iterator[Target]:
    """The anchor Postfix; with `relay_to` its outbound transport is turned on, every remote
    domain relayed to that sink (relayhost), the rest of its set-up left at its defaults."""
    if not POSTFIX.exists():
        raise PeerUnavailable(f"{POSTFIX} is not installed (apt-get install postfix, "
                              "debconf 'No configuration')")
    if os.geteuid() != 0:
        raise PeerUnavailable("the anchor Postfix set-up needs root")
    if port_in_use(POSTFIX_PORT):
        raise PeerUnavailable(f"port {POSTFIX_PORT} is taken; the anchor Postfix needs it")
    with tempfile.TemporaryDirectory(prefix="postfix-bench-") as tmp:
        log = Path(tmp) / "bench.log"
        run_checked(["bash", str(anchors / "setup_postfix.sh")], log)
        if relay_to is not None:
            run_checked([str(POSTCONF), "-c", str(POSTFIX_CONF), "-e", "default_transport = smtp",
                         "relay_transport = smtp", f"relayhost = [{LOOPBACK}]:{relay_to[0]}"], log)
        drop_postfix_queue()
        # start-fg keeps master our child, so it can be stopped by its pid like the others.
        proc = spawn([str(POSTFIX), "-c", str(POSTFIX_CONF), "start-fg"], log)
        try:
            wait_ready(proc, POSTFIX_PORT, log)
            if relay_to is not None:
                yield Target("postfix", LOOPBACK, POSTFIX_PORT, RELAY_RCPT, proc.pid, None,
                             relayed=relay_to[1])
            else:
                yield Target("postfix", LOOPBACK, POSTFIX_PORT, POSTFIX_RCPT, proc.pid,
                             POSTFIX_MAILDIR_NEW)
        finally:
            # `postfix stop` lets master end its own children; stop_process covers a stuck one.
            with contextlib.suppress(Exception):
                subprocess.run([str(POSTFIX), "-c", str(POSTFIX_CONF), "stop"],
                               capture_output=True, timeout=STOP_GRACE)
            stop_process(proc)



# --- Dovecot (anchor) --------------------------------------------------------------------------

def hash_dovecot_passwords(doveadm_options: list[str]) -> None:
    """Every user's {PLAIN} password in the anchor's users file replaced by a hash `doveadm pw`
    makes with these options (a salt of its own each)."""
    lines = DOVECOT_USERS_FILE.read_text().splitlines(keepends=True)
    plain = "{PLAIN}" + DOVECOT_PASSWORD
    hashed = []
    for line in lines:
        if plain in line:
            stored = subprocess.run([str(DOVEADM), "pw", *doveadm_options, "-p", DOVECOT_PASSWORD],
                                    capture_output=True, text=True, check=True, timeout=60)
            line = line.replace(plain, stored.stdout.strip())
        hashed.append(line)
    DOVECOT_USERS_FILE.write_text("".join(hashed))

def add_data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep both peers' mail here (a journaled file system: see "
                             "bench/README.md) instead of the temp dir")


def keep_mail_in(data_dir: Path | None) -> Path | None:
    """mailforge's data dirs (made in the temp dir) under `data_dir` from now on; its path
    made absolute, for dovecot_in."""
    if data_dir is None:
        return None
    data_dir = data_dir.resolve()
    tempfile.tempdir = str(data_dir)
    return data_dir


@contextlib.contextmanager
def dovecot_in(data_dir: Path | None, started: contextlib.AbstractContextManager[Target]
               ) -> Iterator[Target]:
    """`started` (a run_dovecot) with the anchor's homes under `data_dir` (dovecot_homes_in)."""
    with dovecot_homes_in(data_dir), started as target:
        yield target


@contextlib.contextmanager
def dovecot_homes_in(data_dir: Path | None) -> Iterator[None]:
    """The anchor Dovecot's homes (DOVECOT_HOMES, named in its config) under `data_dir` for
    the block, through a symlink removed after it (the anchor's set-up makes the directory
    again); None: where they are."""
    if data_dir is None:
        yield
        return
    homes = data_dir / "dovecot-homes"
    homes.mkdir(exist_ok=True)
    os.chown(homes, VMAIL_UID, VMAIL_GID)

    def replace_homes(by: Path | None) -> None:
        if DOVECOT_HOMES.is_symlink():
            DOVECOT_HOMES.unlink()
        else:
            shutil.rmtree(DOVECOT_HOMES, ignore_errors=True)
        if by is not None:
            DOVECOT_HOMES.parent.mkdir(parents=True, exist_ok=True)
            DOVECOT_HOMES.symlink_to(by)

    replace_homes(homes)
    try:
        yield
    finally:
        replace_homes(None)
        shutil.rmtree(homes, ignore_errors=True)


@contextlib.contextmanager
def run_dovecot(anchors: Path, users: int, mailbox: Sequence[bytes],
                service: str = "pop3", scheme: str = "sha512-crypt") -> Iterator[Target]:
    """The anchor Dovecot, POP3 on 127.0.0.1:2110 and IMAP on 127.0.0.1:2143 (the Target is
    the `service` one); bench1..bench<users> each hold `mailbox`, their passwords stored in
    `scheme` (DOVECOT_SCHEMES)."""
    if not DOVECOT.exists():
        raise PeerUnavailable(f"{DOVECOT} is not installed "
                              "(apt-get install dovecot-pop3d dovecot-imapd)")
    if os.geteuid() != 0:
        raise PeerUnavailable("the anchor Dovecot set-up needs root")
    if users > DOVECOT_USERS:
        raise PeerUnavailable(f"the anchor has {DOVECOT_USERS} users; --clients needs one each")
    for port in (DOVECOT_POP3_PORT, DOVECOT_IMAP_PORT):
        if port_in_use(port):
            raise PeerUnavailable(f"port {port} is taken; the anchor Dovecot needs it")
    script = anchors / "setup_dovecot.sh"
    if not script.exists():
        raise PeerUnavailable(f"no anchor script at {script} (set --anchors or $MAILFORGE_ANCHORS)")
    addresses = tuple(f"bench{n}@{BENCH_DOMAIN}" for n in range(1, users + 1))
    with tempfile.TemporaryDirectory(prefix="dovecot-bench-") as tmp:
        log = Path(tmp) / "bench.log"
        run_checked(["bash", str(script)], log)
        if DOVECOT_SCHEMES[scheme]:
            hash_dovecot_passwords(DOVECOT_SCHEMES[scheme])
        for address in addresses:
            # Dovecot keeps its index and uidlist in the Maildir: an earlier run's would be
            # this run's warm cache, and its messages would change the mailbox.
            home = DOVECOT_HOMES / address.split("@")[0]
            shutil.rmtree(home, ignore_errors=True)
            fill_maildir(home / "Maildir", mailbox, owner=(VMAIL_UID, VMAIL_GID))
        # -F keeps the master our child, so it is stopped by its pid like the others.
        proc = spawn([str(DOVECOT), "-F", "-c", str(DOVECOT_CONF)], log)
        try:
            port = DOVECOT_IMAP_PORT if service == "imap" else DOVECOT_POP3_PORT
            wait_ready(proc, port, log, greeting=GREETINGS[service])
            yield Target("dovecot", LOOPBACK, port, addresses[0], proc.pid,
                         None, DOVECOT_CONF, users=addresses, password=DOVECOT_PASSWORD)
        finally:
            stop_process(proc)
