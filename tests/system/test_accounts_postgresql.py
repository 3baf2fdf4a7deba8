"""Accounts in a real PostgreSQL (a throw-away cluster, tests/pg_cluster.py): a server with
[accounts] backend = "postgresql" serves users added through the CLI, `accounts migrate`
moves a SQLite file into it, and while the database is down logins and lookups fail
temporarily, over real sockets, until it returns."""

from __future__ import annotations

import base64
import imaplib
import itertools
import poplib
import smtplib
import time

import pytest

from tests.pg_cluster import PASSWORD as PG_PASSWORD
from tests.pg_cluster import start_cluster
from tests.system.conftest import DOMAIN, PASSWORD, USER, add_alice, cli

# Seconds a login waits for a database connection before its temporary error: short, so the
# outage test's few failures cost little.
TIMEOUT = 1.0
_databases = itertools.count()
MESSAGE = b"Subject: over postgresql\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def cluster():
    instance = start_cluster()
    yield instance
    instance.remove()


def postgresql_settings(server, cluster) -> dict:
    """[accounts] for a new database of the cluster, its password in a file of the data dir."""
    (server.dir / "pg.password").write_text(PG_PASSWORD + "\n")
    return {"backend": "postgresql", "dsn": cluster.create_database(f"sys{next(_databases)}"),
            "password_file": "pg.password", "timeout": TIMEOUT}


def postgresql_server(make_server, cluster, **overrides):
    server = make_server(pop3_services=True, imap_services=True, accounts=False,
                         server={"allow_plaintext_auth": True}, **overrides)
    server.reconfigure({"accounts": postgresql_settings(server, cluster)})
    return server


def send(server, rcpt: str = USER) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.sendmail("carol@remote.test", [rcpt], MESSAGE)


def logins_work(server) -> None:
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as smtp:
        smtp.ehlo()
        assert smtp.login(USER, PASSWORD)[0] == 235
    pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
    pop.user(USER)
    assert pop.pass_(PASSWORD).startswith(b"+OK")
    pop.quit()
    imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
    assert imap.login(USER, PASSWORD)[0] == "OK"
    imap.logout()


def test_a_postgresql_server_serves_users_added_through_the_cli(make_server, cluster):
    server = postgresql_server(make_server, cluster)
    add_alice(server.conf)
    assert cli(server.conf, "user", "list").stdout.startswith(USER)
    server.start()
    send(server)
    server.wait_delivered(1)
    logins_work(server)
    pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
    pop.user(USER)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.pass_("wrong")
    pop.close()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(server, f"nobody@{DOMAIN}")
    assert refused.value.recipients[f"nobody@{DOMAIN}"][0] == 550


def test_migrate_moves_a_sqlite_database_and_its_users_work_after(make_server, cluster):
    server = make_server(pop3_services=True, imap_services=True,
                         server={"allow_plaintext_auth": True})  # alice, in SQLite
    cli(server.conf, "domain", "add", "other.test")
    cli(server.conf, "alias", "add", f"info@{DOMAIN}", USER)
    cli(server.conf, "limits", "set", "--user", USER, "--messages", "100", "--interval", "3600")
    target = postgresql_settings(server, cluster)
    server.reconfigure({"accounts": {"password_file": target["password_file"]}})
    migrate = ["accounts", "migrate", "--to", target["dsn"]]
    copied = cli(server.conf, *migrate).stdout
    assert copied.startswith("copied 2 domains, 1 mailboxes, 1 aliases, 1 limits and 1 settings into ")
    again = cli(server.conf, *migrate, check=False)
    assert (again.returncode, again.stderr) == (
        2, "mailforge: the target already holds accounts (2 domains, 1 mailboxes, 1 aliases, "
           "1 send_limits); --replace drops them first\n")
    assert cli(server.conf, *migrate, "--replace").stdout == copied
    server.reconfigure({"accounts": target})
    assert cli(server.conf, "alias", "list").stdout.split() == [f"info@{DOMAIN}", "->", USER]
    server.start()
    send(server, f"info@{DOMAIN}")
    server.wait_delivered(1)
    logins_work(server)


def test_a_database_outage_gives_temporary_errors_then_service_resumes(make_server, cluster):
    server = postgresql_server(make_server, cluster, delivery={"retry_schedule": [1.0]})
    add_alice(server.conf)
    server.start()
    workers = sorted(server.children())
    # A message whose RCPT was answered before the outage is accepted, and its delivery
    # (which looks the recipient up again) waits for the database.
    smtp = smtplib.SMTP("127.0.0.1", server.port, timeout=30)
    smtp.ehlo()
    smtp.mail("carol@remote.test")
    assert smtp.rcpt(USER)[0] == 250
    cluster.stop()
    try:
        assert smtp.data(MESSAGE)[0] == 250
        smtp.mail("carol@remote.test")
        code, text = smtp.rcpt(USER)
        assert (code, text[:5]) == (451, b"4.3.0")
        smtp.rset()
        code, text = smtp.docmd("AUTH", "PLAIN " + plain(USER, PASSWORD))
        assert (code, text[:5]) == (454, b"4.7.0")
        smtp.quit()
        pop = poplib.POP3("127.0.0.1", server.pop3_port, timeout=30)
        pop.user(USER)
        with pytest.raises(poplib.error_proto, match=r"-ERR \[SYS/TEMP\]"):
            pop.pass_(PASSWORD)
        pop.quit()
        imap = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=30)
        with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\]"):
            imap.login(USER, PASSWORD)
        imap.logout()
        time.sleep(0.5)  # the delivery attempt meets the outage too
        assert server.delivered() == []
    finally:
        cluster.start()
    server.wait_delivered(1)
    logins_work(server)
    assert sorted(server.children()) == workers  # no worker died of it
    assert "accounts database" in server.log()


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_a_domain_administrator_left_without_domains_sees_an_empty_list(make_server, cluster):
    """Its last domain removed (its grant with it), it has no domains: in PostgreSQL an empty
    `IN ()` is a syntax error, not the empty listing SQLite gives."""
    from tests.system.console_client import ConsoleClient

    server = postgresql_server(make_server, cluster, admin_console=True)
    add_alice(server.conf)
    cli(server.conf, "domain", "add", "gone.test")
    cli(server.conf, "admin", "add", "former", "--password-stdin", "--role", "domain",
        "--domain", "gone.test", input="former pw\n")
    cli(server.conf, "domain", "remove", "gone.test")
    server.start()
    former = ConsoleClient(server.admin_port, server.ca_file)
    assert former.login("former", "former pw").status == 303
    listing = former.get("/users")
    assert listing.status == 200 and USER not in listing.text
