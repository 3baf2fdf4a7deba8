"""The web console over real HTTPS against a real `mailforge serve`: its security promises.
CSRF (missing or wrong → 403, nothing changed), the usual headers and cookie attributes, a
domain administrator confined to its domains on pages and API, brute force on the login page
blocked through the rate-keeper and lifted from the console, every action in the audit log;
and as root, the console worker as the service account, sandboxed, with the keys hidden."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import smtplib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailforge.admin.web import ACCOUNTS_UNAVAILABLE
from mailforge.process import control

from tests.ports import free_port

from .conftest import DOMAIN, cli
from .console_client import ConsoleClient
from .test_privileges import account, open_root, proc_status, root_only  # noqa: F401 (fixtures)

BOSS, HOST = ("boss", "boss secret"), ("host", "host secret")
OTHER = "other.test"
BLOCK_AFTER = 3
# Loopback's own address is exempt (the operator's browser); brute force comes from .2.
ABUSE = {"exempt_networks": ["127.0.0.1/32"], "block_after": BLOCK_AFTER, "tarpit_after": 100}


@pytest.fixture(scope="module")
def console_data(make_module_server):
    """The accounts and administrators every console test starts from, made once; not started."""
    # Mail for remote.test goes to a port nobody listens on: it stays queued, deferred.
    server = make_module_server(admin_console=True, abuse=ABUSE,
                                relay={"mode": "networks", "networks": ["127.0.0.0/8"]},
                                delivery={"mx_override": {"remote.test": f"127.0.0.1:{free_port()}"},
                                          "connect_timeout": 1})
    cli(server.conf, "domain", "add", OTHER)
    cli(server.conf, "user", "add", f"carol@{OTHER}", "--password-stdin", input="pw\n")
    cli(server.conf, "admin", "add", BOSS[0], "--password-stdin", input=BOSS[1] + "\n")
    cli(server.conf, "admin", "add", HOST[0], "--password-stdin", "--role", "domain",
        "--domain", DOMAIN, input=HOST[1] + "\n")
    return server


@pytest.fixture
def console(console_data, tmp_path):
    """A server of its own on a copy of console_data: the tests change accounts and the queue."""
    with console_data.running_copy(tmp_path) as server:
        yield server


def client(server, source: str = "127.0.0.1") -> ConsoleClient:
    return ConsoleClient(server.admin_port, server.ca_file, source)


def domains(server) -> list[str]:
    return cli(server.conf, "domain", "list").stdout.split()


def test_csrf_headers_cookies_and_a_domain_administrators_walls(console):
    boss = client(console)
    answer = boss.login(*BOSS)
    assert answer.status == 303 and answer.headers["Location"] == "/"
    cookie = next(c for c in answer.headers.get_all("Set-Cookie") if c.startswith("mf_session="))
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/"):
        assert attribute in cookie, cookie
    page = boss.get("/domains")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Strict-Transport-Security"] and page.headers["Cache-Control"] == "no-store"

    # CSRF: missing or wrong → 403 and nothing changed; the page's own token works.
    token = boss.csrf
    assert boss.post("/domains", {"name": "forged.test"}, csrf=False).status == 403
    boss.csrf = "x" * len(token)
    assert boss.post("/domains", {"name": "forged.test"}).status == 403
    assert boss.post("/users", {"address": f"eve@{DOMAIN}", "password": "pw"}).status == 403
    assert "forged.test" not in domains(console)
    assert "eve@" not in cli(console.conf, "user", "list").stdout
    boss.csrf = token
    assert boss.post("/domains", {"name": "real.test"}).status == 200
    assert "real.test" in domains(console)
    # Without a session, a post is refused too (no redirect to follow blindly).
    assert client(console).post("/domains", {"name": "anon.test"}, csrf=False).status == 403

    # A domain administrator sees and touches only its own domain, on pages and API.
    host = client(console)
    assert host.login(*HOST).headers["Location"] == "/users"
    listing = host.get("/users").text
    assert f"alice@{DOMAIN}" in listing and OTHER not in listing
    assert host.get(f"/users?domain={OTHER}").status == 403
    assert host.get("/aliases?domain=" + OTHER).status == 403
    for path in ("/services", "/security"):
        assert host.get(path).status == 403
    assert host.get("/").status == 303
    assert host.post("/users", {"address": f"mallory@{OTHER}", "password": "pw"}).status == 403
    assert host.post("/users/action", {"address": f"carol@{OTHER}", "action": "disable"}).status == 403
    assert host.post("/aliases", {"source": f"x@{OTHER}", "target": f"alice@{DOMAIN}"}).status == 403
    assert host.post("/domains/remove", {"name": OTHER}).status == 403
    assert "mallory@" not in cli(console.conf, "user", "list").stdout
    assert "disabled" not in cli(console.conf, "user", "list", OTHER).stdout
    assert host.post("/users", {"address": f"dave@{DOMAIN}", "password": "pw"}).status == 200

    api_token = cli(console.conf, "admin", "token", HOST[0]).stdout.strip()
    assert host.api("GET", f"/api/users?domain={OTHER}", api_token).status == 403
    assert host.api("POST", "/api/users", api_token, {"address": f"m@{OTHER}", "password": "p"}).status == 403
    assert host.api("POST", f"/api/users/carol@{OTHER}/disable", api_token, {}).status == 403
    assert host.api("GET", "/api/status", api_token).status == 403
    mine = host.api("GET", "/api/users", api_token).json()
    assert {u["address"] for u in mine["users"]} == {f"alice@{DOMAIN}", f"dave@{DOMAIN}"}
    assert host.api("GET", "/api/domains", api_token).json() == {"domains": [DOMAIN]}
    assert client(console).api("GET", "/api/domains", "mft_wrong").status == 401
    assert client(console).get("/api/domains").status == 401

    boss_token = cli(console.conf, "admin", "token", BOSS[0]).stdout.strip()
    quota = boss.api("POST", f"/api/users/alice@{DOMAIN}/quota", boss_token, {"size": "10M", "messages": 5})
    assert quota.json() == {"done": f"quota 10M/5: alice@{DOMAIN}"}
    assert "limit: 10485760 octets, 5 messages" in cli(console.conf, "quota", "show", f"alice@{DOMAIN}").stdout
    assert boss.api("POST", f"/api/users/alice@{DOMAIN}/quota", boss_token, {"size": "lots"}).status == 400

    # Outbound limits: the system administrator's alone (a user's own would lift the domain's).
    limit = {"messages": 5, "interval": 60, "at_limit": "disable"}
    assert host.api("POST", f"/api/users/alice@{DOMAIN}/limit", api_token, limit).status == 403
    assert host.api("POST", f"/api/domains/{DOMAIN}/settings", api_token, limit).status == 403
    assert boss.api("POST", f"/api/users/alice@{DOMAIN}/limit", boss_token, limit).status == 200
    assert "5 messages per 60 s, then disable (user setting)" in cli(
        console.conf, "limits", "show", f"alice@{DOMAIN}").stdout
    assert "5 messages per 60 s" in boss.get("/security").text
    # APOP and public folders: the domain administrator's own domain only.
    assert host.api("POST", f"/api/users/alice@{DOMAIN}/apop", api_token, {"secret": "s3"}).status == 200
    assert host.api("POST", f"/api/domains/{DOMAIN}/settings", api_token, {"public": "on"}).status == 200
    assert host.api("POST", f"/api/domains/{OTHER}/settings", api_token, {"public": "on"}).status == 403
    assert "public folders of example.test: on" in cli(console.conf, "public", "show", DOMAIN).stdout

    audit = boss.get("/audit").text
    for entry in ("domain add", "real.test", f"dave@{DOMAIN}", "login", "user apop"):
        assert entry in audit
    assert "admin host from 127.0.0.1: user add dave@example.test" in console.log()


def test_brute_force_on_the_login_page_is_blocked_and_lifted_from_the_console(console):
    attacker = client(console, "127.0.0.2")
    answers = [attacker.login("boss", f"guess {n}").status for n in range(BLOCK_AFTER)]
    assert answers == [401] * (BLOCK_AFTER - 1) + [403]
    # Blocked now: the right password does not help, and a new connection is turned away
    # before the console reads it.
    refused = attacker.get("/login")
    assert refused.status == 403 and "failed logins" in refused.text
    blocks = json.loads(cli(console.conf, "abuse", "list", "--json").stdout)
    assert [(b["address"], b["services"]) for b in blocks] == [("127.0.0.2", ["admin"])]
    assert "failed console logins" in blocks[0]["why"]  # counted as a noun, "3 ... logins"

    boss = client(console)
    boss.login(*BOSS)
    assert "127.0.0.2" in boss.get("/security").text
    assert "lifted the block on 127.0.0.2" in boss.post("/security/unblock", {"address": "127.0.0.2"}).text
    assert attacker.login(*BOSS).status == 303
    assert "unblock" in boss.get("/audit").text


@root_only
def test_the_console_worker_runs_as_the_service_account_sandboxed_without_keys(account, open_root):
    from .conftest import Server

    user, group = account
    server = Server(open_root, admin_console=True, metrics={"listen": ""})
    try:
        cli(server.conf, "init", "--system", "--dir", str(server.dir), "--user", user, "--group", group)
        cli(server.conf, "admin", "add", BOSS[0], "--password-stdin", input=BOSS[1] + "\n")
        server.start()
        (pid,) = server.worker_pids("admin")
        fields = proc_status(pid)
        uid = pwd.getpwnam(user).pw_uid
        assert fields["Uid"].split() == [str(uid)] * 4
        assert fields["Groups"] == "" and fields["CapEff"] == "0000000000000000"
        assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("1", "2")
        # The worker's view of the key file: an empty file nobody may read; the rest of the
        # system still sees the key.
        key = server.config.data_dir / "tls" / "key.pem"
        hidden = os.stat(f"/proc/{pid}/root{key}")
        assert (hidden.st_size, hidden.st_mode & 0o777, hidden.st_uid) == (0, 0, 0)
        assert key.stat().st_size > 0
        # It serves: HTTPS with the server's certificate, a login works, and the dashboard
        # reaches the supervisor through the admin socket, which it owns...
        boss = client(server)
        assert boss.login(*BOSS).status == 303
        dashboard = boss.get("/").text
        assert f"{pid} · " in dashboard and "hidden from the console" in dashboard
        assert server.config.admin_socket.stat().st_uid == uid
        # ...and which turns away every other process, root's included.
        with pytest.raises((OSError, ValueError)):
            control.request(server.config.admin_socket, "status", timeout=5)
    finally:
        server.stop()


def test_the_queue_page_lists_filters_shows_retries_and_deletes(console):
    with smtplib.SMTP("127.0.0.1", console.port, timeout=10) as smtp:
        smtp.sendmail(f"alice@{DOMAIN}", ["far@remote.test"], b"Subject: away\r\n\r\nhi\r\n")
        smtp.sendmail(f"alice@{DOMAIN}", ["other@remote.test"], b"Subject: second\r\n\r\nhi\r\n")
    boss = client(console)
    boss.login(*BOSS)
    deadline = time.monotonic() + 30
    while (not any(e["state"] == "deferred" and e["recipients"] == ["far@remote.test"]
                   for e in json.loads(cli(console.conf, "queue", "list", "--json").stdout))
           and time.monotonic() < deadline):
        time.sleep(0.2)
    page = boss.get("/queue?recipient=far@&state=deferred").text
    assert "far@remote.test" in page and "other@remote.test" not in page
    (queue_id,) = {e["id"] for e in json.loads(cli(console.conf, "queue", "list", "--json").stdout)
                   if e["recipients"] == ["far@remote.test"]}
    shown = boss.get(f"/queue?show={queue_id}").text
    assert "Subject: away" in shown and "attempts" in shown
    # Deleted first: once retried it may be in a delivery worker's hands, which a delete
    # must not pull it out of (it answers "try again in a moment").
    assert f"deleted {queue_id}, unsent" in boss.post("/queue", {"action": "delete", "id": queue_id}).text
    remaining = json.loads(cli(console.conf, "queue", "list", "--json").stdout)
    assert [e["recipients"] for e in remaining] == [["other@remote.test"]]
    other_id = remaining[0]["id"]
    assert f"{other_id} due now" in boss.post("/queue", {"action": "retry", "id": other_id}).text
    assert boss.post("/queue", {"action": "delete", "id": "nosuch"}).status == 400
    host = client(console)
    host.login(*HOST)
    assert host.get("/queue").status == 403
    assert "queue delete" in boss.get("/audit").text


def test_the_tuning_page_shows_the_report_bench_tune_saved(console):
    boss = client(console)
    boss.login(*BOSS)
    empty = boss.get("/tuning")
    assert empty.status == 200 and 'id="none"' in empty.text and "python -m bench.tune" in empty.text
    assert boss.get("/tuning/plot.png").status == 404

    # One point, SMTP alone: a real load on a server of its own, its report in the console's.
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(repo), os.environ.get("PYTHONPATH")))))
    run = subprocess.run([sys.executable, "-m", "bench.tune", "--quick", "--workers", "1",
                          "--protocols", "smtp", "--out", str(console.dir / "tuning.png"),
                          "--report", str(console.dir / "tuning")],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr

    page = boss.get("/tuning")
    rows = re.findall(r"<tr><td>(.*?)</td></tr>", page.text)
    assert [row.split("</td><td>")[:5] for row in rows] == [["smtp", "1", "4", "40", "0"]], page.text
    assert 'src="/tuning/plot.png"' in page.text
    assert "img-src 'self'" in page.headers["Content-Security-Policy"]
    plot = boss.request("GET", "/tuning/plot.png")
    assert plot.headers["Content-Type"] == "image/png" and plot.text[1:4] == "PNG"
    host = client(console)
    host.login(*HOST)
    assert host.get("/tuning").status == 403 and host.get("/tuning/plot.png").status == 403


def test_a_system_administrator_edits_administrators_as_the_cli_does(console):
    boss, host = client(console), client(console)
    boss.login(*BOSS)
    assert host.login(*HOST).status == 303
    assert host.get("/admins").status == 403
    assert host.post("/admins/action", {"name": BOSS[0], "action": "remove"}).status == 403
    assert boss.post("/admins/action", {"name": HOST[0], "action": "remove"}, csrf=False).status == 403
    page = boss.get("/admins")
    assert page.status == 200 and 'id="admin-host"' in page.text

    # A new password: the old one and the sessions made with it stop working.
    answer = boss.post("/admins/action", {"name": HOST[0], "action": "password", "password": "new pw"})
    assert answer.status == 200 and "password: host" in answer.text
    assert host.get("/users").status == 303
    assert client(console).login(HOST[0], HOST[1]).status == 401
    assert client(console).login(HOST[0], "new pw").status == 303

    # Role and domains, checked as `mailforge admin add` checks them.
    bad = boss.post("/admins/action", {"name": HOST[0], "action": "role", "role": "domain", "domains": ""})
    assert bad.status == 400 and "needs --domain" in bad.text
    moved = boss.post("/admins/action", {"name": HOST[0], "action": "role", "role": "domain",
                                         "domains": f"{DOMAIN}, {OTHER}"})
    assert moved.status == 200
    rows = [line.split()[:3] for line in cli(console.conf, "admin", "list").stdout.splitlines()]
    assert ["host", "domain", f"{DOMAIN},{OTHER}"] in rows
    last = boss.post("/admins/action", {"name": BOSS[0], "action": "remove"})
    assert last.status == 400 and "last system administrator" in last.text
    assert boss.post("/admins/action", {"name": HOST[0], "action": "remove"}).status == 200
    assert "host" not in cli(console.conf, "admin", "list").stdout
    audit = boss.get("/audit").text
    for action in ("admin password", "admin role", "admin remove"):
        assert action in audit


def test_a_removed_domain_takes_its_administrators_grant_with_it(console):
    """Removed and later added again (for another customer, say), a domain is not its old
    domain administrator's any more."""
    cli(console.conf, "domain", "add", "gone.test")
    cli(console.conf, "admin", "add", "former", "--password-stdin", "--role", "domain",
        "--domain", "gone.test", input="former pw\n")
    boss, former = client(console), client(console)
    boss.login(*BOSS)
    assert former.login("former", "former pw").status == 303
    assert former.get("/users?domain=gone.test").status == 200
    assert boss.post("/domains/remove", {"name": "gone.test"}).status == 200
    assert boss.post("/domains", {"name": "gone.test"}).status == 200
    assert former.get("/users?domain=gone.test").status == 403
    assert former.post("/users", {"address": "eve@gone.test", "password": "pw"}).status == 403
    assert "gone.test" not in cli(console.conf, "admin", "list").stdout


def test_a_page_number_past_any_page_or_not_ascii_is_a_page_not_a_traceback(console):
    boss = client(console)
    boss.login(*BOSS)
    token = cli(console.conf, "admin", "token", BOSS[0]).stdout.strip()
    for page in ("99999999999999999999", "%C2%B2"):  # past SQLite's integers; "²", a digit to isdigit()
        assert boss.get(f"/users?page={page}").status == 200
        assert boss.api("GET", f"/api/users?page={page}", token).status == 200


def test_an_unreadable_metrics_file_costs_a_sample_not_the_dashboard(make_server):
    """A process's metrics file is empty for a moment while it is made (metrics.py
    claim_process_files): read then, it must not fail the dashboard, nor stop the console
    worker's tick (its heartbeat: the supervisor would kill it as hung)."""
    server = make_server(admin_console=True,
                         metrics={"listen": f"127.0.0.1:{free_port()}", "directory": "metrics"})
    cli(server.conf, "admin", "add", BOSS[0], "--password-stdin", input=BOSS[1] + "\n")
    server.start()
    (directory,) = (server.config.data_dir / "metrics").iterdir()
    (directory / "counter_999999.db").touch()
    boss = client(server)
    boss.login(*BOSS)
    assert boss.get("/").status == 200
    (directory / "counter_999999.db").unlink()
    assert boss.get("/").status == 200


def test_the_next_page_keeps_a_search_with_url_characters(console):
    """The pager's links carry the search as a URL's query: "+" (a subaddress) must come
    back as "+", not as a space that matches nobody."""
    from mailforge.auth.accounts import open_accounts

    with open_accounts(console.config) as accounts:
        for n in range(51):
            accounts.directory.user_add(f"list+{n:02}@{DOMAIN}", "pw")
    boss = client(console)
    boss.login(*BOSS)
    first = boss.get("/users?q=%2B")
    assert "page 1 of 2" in first.text
    link = re.search(r'<a href="([^"]+)" id="next">', first.text)[1].replace("&amp;", "&")
    assert f"list+50@{DOMAIN}" in boss.get(link).text


def test_a_json_null_is_refused_not_stored_as_the_text_none(console):
    """A script's null (an unset variable) must not become the password, the APOP secret or
    the domain "None"."""
    from mailforge.auth.accounts import open_accounts

    boss = client(console)
    token = cli(console.conf, "admin", "token", BOSS[0]).stdout.strip()
    alice = f"alice@{DOMAIN}"
    assert boss.api("POST", f"/api/users/{alice}/apop", token, {"secret": "s3"}).status == 200
    for path, payload in ((f"/api/users/{alice}/apop", {"secret": None}),
                          (f"/api/users/{alice}/password", {"password": None}),
                          ("/api/domains", {"name": None}),
                          ("/api/users", {"address": f"nul@{DOMAIN}", "password": None})):
        answer = boss.api("POST", path, token, payload)
        assert answer.status == 400 and "null" in answer.json()["error"], (path, answer.text)
    assert "none" not in domains(console)
    assert f"nul@{DOMAIN}" not in cli(console.conf, "user", "list").stdout
    with open_accounts(console.config) as accounts:
        digest = hashlib.md5(b"<1.2@host>None").hexdigest()
        assert not accounts.credentials.verify_apop(alice, "<1.2@host>", digest)
        digest = hashlib.md5(b"<1.2@host>s3").hexdigest()
        assert accounts.credentials.verify_apop(alice, "<1.2@host>", digest)


def test_the_accounts_database_failing_shows_its_details_to_system_administrators_only(console):
    """Its error names the database (here its path; a PostgreSQL host and database name): a
    domain administrator is told to try again, the log and the system administrator get it."""
    boss, host = client(console), client(console)
    boss.login(*BOSS)
    host.login(*HOST)
    host_token = cli(console.conf, "admin", "token", HOST[0]).stdout.strip()
    locker = sqlite3.connect(console.config.accounts_db, isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")  # writes wait for it, then fail: "database is locked"
        page = host.post("/users", {"address": f"dave@{DOMAIN}", "password": "pw"})
        assert page.status == 503 and ACCOUNTS_UNAVAILABLE in page.text, page.text
        api = host.api("POST", "/api/users", host_token, {"address": f"dave@{DOMAIN}", "password": "pw"})
        assert (api.status, api.json()) == (503, {"error": ACCOUNTS_UNAVAILABLE})
        for answer in (page.text, api.text):
            assert "locked" not in answer and str(console.config.data_dir) not in answer
        page = boss.post("/users", {"address": f"dave@{DOMAIN}", "password": "pw"})
        assert page.status == 503 and "database is locked" in page.text, page.text
        # A login writes its session: the login page says so (503), with no details.
        page = client(console).login(*HOST)
        assert page.status == 503 and ACCOUNTS_UNAVAILABLE in page.text, page.text
        assert "locked" not in page.text and 'name="password"' in page.text
    finally:
        locker.close()
    assert re.search(r"admin host from .*: POST /users failed: .*database is locked", console.log())
    assert re.search(r"console request from .*: POST /login failed: .*database is locked",
                     console.log())
    assert host.post("/users", {"address": f"dave@{DOMAIN}", "password": "pw"}).status == 200


def test_a_quota_past_what_the_database_holds_is_refused_not_a_traceback(console):
    """A quota of 10^25 octets (past a 64-bit integer) or "²" messages (a digit to
    str.isdigit, not to int) is the asker's mistake: 400 and its reason, the quota unchanged."""
    boss = client(console)
    boss.login(*BOSS)
    token = cli(console.conf, "admin", "token", BOSS[0]).stdout.strip()
    alice = f"alice@{DOMAIN}"
    for fields in ({"size": "9" * 25}, {"size": "10M", "messages": "9" * 25},
                   {"size": "10M", "messages": "²"}):
        answer = boss.api("POST", f"/api/users/{alice}/quota", token, fields)
        assert answer.status == 400 and "error" in answer.json(), (fields, answer.text)
        page = boss.post("/users/action", {"address": alice, "action": "quota", **fields})
        assert page.status == 400 and 'id="error"' in page.text, (fields, page.text)
    assert "no storage limit, no message limit" in cli(console.conf, "quota", "show", alice).stdout
    assert "Traceback" not in console.log()


def test_an_outbound_limit_the_database_cannot_hold_is_refused_not_a_traceback(console):
    """10^25 messages (past any integer column), or an interval of nan or inf seconds: 400
    and its reason, nothing stored. NaN once reached the database as NULL and came back as
    "the accounts database is unavailable" (503) with the database's path."""
    boss = client(console)
    boss.login(*BOSS)
    token = cli(console.conf, "admin", "token", BOSS[0]).stdout.strip()
    for fields in ({"messages": "9" * 25, "interval": "60"}, {"messages": "5", "interval": "nan"},
                   {"messages": "5", "interval": "inf"}, {"messages": "5", "interval": "1e400"}):
        answer = boss.api("POST", f"/api/users/alice@{DOMAIN}/limit", token, fields)
        assert answer.status == 400 and "error" in answer.json(), (fields, answer.text)
        page = boss.post("/domains/settings", {"name": DOMAIN, **fields})
        assert page.status == 400 and 'id="error"' in page.text, (fields, page.text)
    assert "No limit set" in boss.get("/security").text
    assert "Traceback" not in console.log()


def test_public_folders_take_on_or_off_and_nothing_else(console):
    """Any other value ("yes", "true", a typo, a number) is refused with 400 and leaves
    the setting as it was; it used to switch the folders off and audit the typo."""
    host = client(console)
    host.login(*HOST)
    token = cli(console.conf, "admin", "token", HOST[0]).stdout.strip()
    assert host.api("POST", f"/api/domains/{DOMAIN}/settings", token, {"public": "on"}).status == 200
    for value in ("yes", "ON ", 1):
        answer = host.api("POST", f"/api/domains/{DOMAIN}/settings", token, {"public": value})
        assert answer.status == 400 and "on or off" in answer.json()["error"], (value, answer.text)
    page = host.post("/domains/settings", {"name": DOMAIN, "public": "true"})
    assert page.status == 400 and "on or off" in page.text
    assert f"public folders of {DOMAIN}: on" in cli(console.conf, "public", "show", DOMAIN).stdout


def test_a_json_list_or_object_is_refused_not_stored_as_its_python_text(console):
    """As with null: ["pw"] must not become the password "['pw']", nor {"a": 1} a domain's
    name; only the services' settings take lists (listen)."""
    boss = client(console)
    token = cli(console.conf, "admin", "token", BOSS[0]).stdout.strip()
    alice = f"alice@{DOMAIN}"
    for path, payload in ((f"/api/users/{alice}/password", {"password": ["new pw"]}),
                          (f"/api/users/{alice}/apop", {"secret": {"s": 3}}),
                          ("/api/users", {"address": f"list@{DOMAIN}", "password": ["pw"]}),
                          ("/api/aliases", {"source": f"a@{DOMAIN}", "target": [alice]}),
                          ("/api/domains", {"name": {"x": "y.test"}}),
                          ("/api/services/smtp", {"max_connections": {"n": 5}})):
        answer = boss.api("POST", path, token, payload)
        assert answer.status == 400 and "JSON" in answer.json()["error"], (path, answer.text)
    assert f"list@{DOMAIN}" not in cli(console.conf, "user", "list").stdout
    from mailforge.auth.accounts import open_accounts
    with open_accounts(console.config) as accounts:
        assert not accounts.credentials.check_password(alice, "['new pw']")
        assert accounts.credentials.check_password(alice, "correct horse")


def test_a_domain_administrator_cannot_lift_an_outbound_limits_disable(console):
    """Outbound limits are the system administrator's: a mailbox a limit's "disable" action
    stopped (a spamming account) stays stopped when its domain's administrator enables it;
    a system administrator's enable lifts it, as `mailforge user enable` does."""
    from mailforge.auth.accounts import open_accounts

    alice = f"alice@{DOMAIN}"
    with open_accounts(console.config) as accounts:
        accounts.send_limits.send_disable(alice)
    host, boss = client(console), client(console)
    host.login(*HOST)
    boss.login(*BOSS)
    assert host.post("/users/action", {"address": alice, "action": "enable"}).status == 200
    with open_accounts(console.config) as accounts:
        assert accounts.send_limits.send_status(alice).disabled
    assert boss.post("/users/action", {"address": alice, "action": "enable"}).status == 200
    with open_accounts(console.config) as accounts:
        assert not accounts.send_limits.send_status(alice).disabled


def test_the_audit_log_names_an_alias_target_as_stored_not_as_typed(console):
    """"Alice@EXAMPLE.TEST" or '"ALICE"@example.test' is alice@example.test to the alias: the
    audit entries of alias add and remove name that, as the aliases page lists it, so that a
    search of the log for an address finds what was done to it."""
    from mailforge.auth.accounts import open_accounts

    boss = client(console)
    boss.login(*BOSS)
    alice = f"alice@{DOMAIN}"
    added = boss.post("/aliases", {"source": f"Team@{DOMAIN}", "target": f"Alice@{DOMAIN.upper()}"})
    assert added.status == 200 and f"added alias team@{DOMAIN} -&gt; {alice}" in added.text, added.text
    removed = boss.post("/aliases/remove", {"source": f"team@{DOMAIN}", "target": f'"ALICE"@{DOMAIN}'})
    assert removed.status == 200 and f"removed alias team@{DOMAIN} -&gt; {alice}" in removed.text
    with open_accounts(console.config) as accounts:
        entries = accounts.admins.recent(2)
    assert [(e.action, e.detail) for e in entries] == [("alias remove", f"team@{DOMAIN} -> {alice}"),
                                                       ("alias add", f"team@{DOMAIN} -> {alice}")]
    assert f"alias remove team@{DOMAIN} -> {alice}" in console.log()


def test_an_alias_target_tells_a_domain_administrator_nothing_of_another_domains_addresses(console):
    """A target in one of our domains must exist (a typo is caught), but answered that way to a
    domain administrator for a domain not its own, the check told whether an address of
    another customer exists. There, such a target is taken on trust as one outside our domains
    is: the same answer for carol (a mailbox) and nobody, and mail to the alias reaches carol.
    In its own domain, and for a system administrator everywhere, the check stays."""
    from mailforge.auth.accounts import open_accounts

    host, boss = client(console), client(console)
    host.login(*HOST)
    boss.login(*BOSS)
    token = cli(console.conf, "admin", "token", HOST[0]).stdout.strip()
    answers = []
    for local in ("carol", "nobody"):
        target = f"{local}@{OTHER}"
        page = host.post("/aliases", {"source": f"page-{local}@{DOMAIN}", "target": target})
        api = host.api("POST", "/api/aliases", token, {"source": f"api-{local}@{DOMAIN}", "target": target})
        answers.append((page.status, api.status, api.text.replace(local, "LOCAL")))
    assert answers[0] == answers[1], answers
    assert answers[0][:2] == (200, 200) and f"-> LOCAL@{OTHER}" in answers[0][2]
    with open_accounts(console.config) as accounts:
        assert accounts.directory.lookup_recipient(f"page-carol@{DOMAIN}").mailboxes == [f"carol@{OTHER}"]

    typo = host.post("/aliases", {"source": f"typo@{DOMAIN}", "target": f"alcie@{DOMAIN}"})
    assert typo.status == 400 and "neither a mailbox nor an alias" in typo.text
    precise = boss.post("/aliases", {"source": f"boss@{DOMAIN}", "target": f"nobody@{OTHER}"})
    assert precise.status == 400 and "neither a mailbox nor an alias" in precise.text


def test_a_password_no_login_can_carry_is_refused_with_its_reason(console):
    """NUL separates AUTH PLAIN's fields and is in no IMAP string; CR and LF end a POP3 PASS
    line. A mailbox's or an administrator's password holding one could be set but never
    typed at a login: 400 and why, nothing changed. Any other Unicode (a tab too) is the
    owner's choice."""
    from mailforge.auth.accounts import open_accounts

    boss = client(console)
    boss.login(*BOSS)
    token = cli(console.conf, "admin", "token", BOSS[0]).stdout.strip()
    alice, dave = f"alice@{DOMAIN}", f"dave@{DOMAIN}"
    for password in ("nul\0inside", "line\r\nbreak", "bare\nlf", "pw\r"):
        for path, payload in (("/api/users", {"address": dave, "password": password}),
                              (f"/api/users/{alice}/password", {"password": password})):
            answer = boss.api("POST", path, token, payload)
            assert answer.status == 400 and "NUL, CR or LF" in answer.json()["error"], (path, answer.text)
        page = boss.post("/admins/action", {"name": HOST[0], "action": "password", "password": password})
        assert page.status == 400 and "NUL, CR or LF" in page.text, page.text
    assert dave not in cli(console.conf, "user", "list").stdout
    assert client(console).login(*HOST).status == 303
    assert boss.api("POST", "/api/users", token, {"address": dave, "password": "pässwörd\tß"}).status == 200
    with open_accounts(console.config) as accounts:
        assert accounts.credentials.check_password(alice, "correct horse")
        assert accounts.credentials.check_password(dave, "pässwörd\tß")
