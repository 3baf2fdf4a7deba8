"""The web console's speed with many mailboxes: the dashboard and the user list.

    python -m bench.console [--users 10000] [--requests 200] [--timeout 600]

Starts mailforge in a temp dir with the console (HTTPS) and SMTP on free loopback ports, makes
`--users` mailboxes in one domain, logs in, then asks each page `--requests` times over one
keep-alive connection: the dashboard (three questions to the supervisor, the metrics history,
certificates), the first page of the user list, a page deep in it, and a search. For each it
reports p50 and p99 of the time at the server (the Server-Timing header the console sets,
request in to response out) and at the client (loopback HTTPS round trip). Target: p99 at the
server under 100 ms for the dashboard and for the list with 10,000 users.

The mailboxes are made in-process through the accounts code with a cheap password hash and
no sync per insert (the production cost would take minutes to make 10,000, and no login is
measured here).
"""

from __future__ import annotations

import argparse
import http.client
import re
import ssl
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from bench import peers

TARGET_MS = 100.0
DOMAIN = "bench.test"
ADMIN, PASSWORD = "bench", "bench console password"
TIMING = re.compile(r"app;dur=([0-9.]+)")


def make_server(root: Path, users: int, console_port: int, smtp_port: int) -> Path:
    from mailforge.auth import passwords
    from mailforge.auth.accounts import Accounts

    cmd, log = peers.mailforge_command(), root / "setup.log"
    conf = root / "mailforge.toml"
    peers.run_checked(cmd + ["init", "--dir", str(root), "--hostname", "localhost"], log)
    changes = peers.mailforge_settings(smtp_port, 1, 1000)
    changes["admin"] = {"listen": [f"{peers.LOOPBACK}:{console_port}"]}
    changes["metrics"] = {"listen": f"{peers.LOOPBACK}:{peers.free_port()}"}
    peers.set_toml_keys(conf, changes)
    passwords.SCRYPT_LOG2_N = 4  # see the module's docstring
    with Accounts(root / "accounts.sqlite3") as accounts:
        with accounts.database.read() as db:
            db.execute("PRAGMA synchronous = OFF")  # a throwaway file: no sync per mailbox
        accounts.directory.domain_add(DOMAIN)
        for n in range(users):
            accounts.directory.user_add(f"user{n:05d}@{DOMAIN}", "x")
    peers.run_checked(cmd + ["-c", str(conf), "admin", "add", ADMIN, "--password-stdin"], log,
                      stdin=PASSWORD.encode() + b"\n")
    return conf


class Session:
    """One keep-alive HTTPS connection with the console's cookies."""

    def __init__(self, port: int, ca_file: Path) -> None:
        self.conn = http.client.HTTPSConnection(peers.LOOPBACK, port, timeout=30,
                                                context=ssl.create_default_context(cafile=str(ca_file)))
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, float]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode()
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        timing = TIMING.search(response.headers.get("Server-Timing", ""))
        return response.status, text, float(timing[1]) if timing else float("nan")

    def login(self) -> None:
        _, page, _ = self.request("GET", "/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page)[1]
        status, _, _ = self.request("POST", "/login", {"login_token": token, "name": ADMIN,
                                                       "password": PASSWORD})
        if status != 303:
            raise RuntimeError(f"login answered {status}")


def measure(session: Session, path: str, requests: int, expect: str) -> tuple[list[float], list[float]]:
    server, client = [], []
    for _ in range(requests):
        started = time.perf_counter()
        status, text, at_server = session.request("GET", path)
        client.append((time.perf_counter() - started) * 1000)
        if status != 200 or expect not in text:
            raise RuntimeError(f"GET {path} answered {status} without {expect!r}")
        server.append(at_server)
    return server, client


def p(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)
    pages = [("dashboard", "/", "Services"),
             ("users, page 1", "/users", f"user00000@{DOMAIN}"),
             ("users, middle page", f"/users?page={args.users // 100}", f"@{DOMAIN}"),
             ("users, search", f"/users?q=user{args.users - 1:05d}", f"user{args.users - 1:05d}@")]
    with tempfile.TemporaryDirectory(prefix="mailforge-console-bench-") as tmp:
        root = Path(tmp)
        console_port, smtp_port = peers.free_port(), peers.free_port()
        started = time.monotonic()
        conf = make_server(root, args.users, console_port, smtp_port)
        print(f"made {args.users} mailboxes in {time.monotonic() - started:.1f} s")
        proc = peers.spawn(peers.mailforge_command() + ["-c", str(conf), "serve"], root / "serve.log", cwd=root)
        try:
            peers.wait_ready(proc, smtp_port, root / "serve.log", timeout=min(args.timeout, 60))
            session = Session(console_port, root / "tls" / "cert.pem")
            session.login()
            measure(session, "/", 10, "Services")  # warm-up: imports, caches, first samples
            print(f"{'page':<22}{'server p50':>12}{'server p99':>12}{'client p50':>12}{'client p99':>12}  (ms, {args.requests} requests)")
            worst = 0.0
            for name, path, expect in pages:
                server, client = measure(session, path, args.requests, expect)
                worst = max(worst, p(server, 0.99))
                print(f"{name:<22}{p(server, 0.5):>12.1f}{p(server, 0.99):>12.1f}"
                      f"{p(client, 0.5):>12.1f}{p(client, 0.99):>12.1f}")
            print(f"worst p99 at the server: {worst:.1f} ms (target under {TARGET_MS:.0f} ms): "
                  f"{'met' if worst < TARGET_MS else 'MISSED'}")
        finally:
            peers.stop_process(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
