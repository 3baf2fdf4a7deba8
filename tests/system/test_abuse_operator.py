"""What an operator sees of the brute-force blocks and how they lift one (issue 20):
`mailforge abuse list|unblock`, loopback exempt by default, a reload that exempts a blocked
address, the refusal that says how long, and the count in `status` and the metrics.

Each blocked client is a loopback alias bound as the source address (127.0.0.5 and so on need
no set-up on Linux), with [abuse] exempt_networks = [] so that loopback counts.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import tomllib

import pytest

from .conftest import PASSWORD, cli, free_port
from .test_abuse import imap_login, pop3_login, smtp_auth
from .test_metrics_logs import scrape, value, wait_for

BLOCK_AFTER = 3
QUICK = {"tarpit_after": BLOCK_AFTER, "block_after": BLOCK_AFTER, "block_time": 600.0}
COUNTED = {**QUICK, "exempt_networks": []}
BLOCKED_WORDS = re.compile(rb"blocked for (\d+) s after repeated failures")


def block(server, source: str) -> None:
    """BLOCK_AFTER failed logins from `source`, over SMTP then POP3: blocked."""
    assert smtp_auth(server, "wrong", source=source) == 535
    for _ in range(BLOCK_AFTER - 1):
        assert pop3_login(server, "wrong", source=source).startswith(b"-ERR [AUTH]")
    assert smtp_auth(server, PASSWORD, source=source) == 421


def blocks(server) -> list[dict]:
    return json.loads(cli(server.conf, "abuse", "list", "--json").stdout)


def smtp_greeting(server, source: str) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=20,
                                  source_address=(source, 0)) as sock:
        return sock.makefile("rb").readline()


def blocked_gauge(server) -> float:
    return value(scrape(server.metrics_port), "mailforge_abuse_blocked_addresses")


@pytest.fixture
def counted(make_server):
    """Loopback counted, every login service on, metrics served."""
    metrics_port = free_port()
    server = make_server(pop3_services=True, imap_services=True,
                         server={"allow_plaintext_auth": True}, abuse=COUNTED,
                         metrics={"listen": f"127.0.0.1:{metrics_port}"})
    server.metrics_port = metrics_port
    server.start()
    return server


def test_a_block_is_listed_explained_and_lifted_at_once(counted):
    block(counted, "127.0.0.5")
    # Every service refuses it, saying for how long and why.
    refusals = [smtp_greeting(counted, "127.0.0.5"),
                pop3_login(counted, PASSWORD, source="127.0.0.5"),
                imap_login(counted, PASSWORD, source="127.0.0.5")]
    assert [r[:7] for r in refusals] == [b"421 4.7", b"-ERR [S", b"* BYE ["]
    assert all(0 < int(BLOCKED_WORDS.search(r).group(1)) <= 600 for r in refusals), refusals

    (listed,) = blocks(counted)
    assert listed["address"] == "127.0.0.5"
    assert listed["services"] == ["pop3", "smtp"]
    assert listed["failures"] == BLOCK_AFTER
    assert listed["why"] == f"{BLOCK_AFTER} failed logins in 600 s"
    assert 590 <= listed["seconds_left"] <= 600 and listed["since"] < listed["until"]
    table = cli(counted.conf, "abuse", "list").stdout
    assert "127.0.0.5" in table and "pop3,smtp" in table and "failed logins" in table
    assert "1 address blocked now" in cli(counted.conf, "status").stdout
    assert counted.status()["ratekeeper"]["abuse"]["blocked_now"] == 1
    assert blocked_gauge(counted) == 1

    lifted = cli(counted.conf, "abuse", "unblock", "127.0.0.5")
    assert lifted.stdout.strip() == "lifted the block on 127.0.0.5"
    # At once, on every service, and the failures before it are forgiven.
    assert smtp_auth(counted, PASSWORD, source="127.0.0.5") == 235
    assert pop3_login(counted, PASSWORD, source="127.0.0.5").startswith(b"+OK")
    assert imap_login(counted, PASSWORD, source="127.0.0.5").startswith(b"a OK")
    assert blocks(counted) == []
    assert cli(counted.conf, "abuse", "list").stdout.strip() == "no address is blocked"
    assert blocked_gauge(counted) == 0
    assert "block lifted on 127.0.0.5" in counted.log()


def test_unblock_all_and_bad_requests(counted):
    block(counted, "127.0.0.6")
    block(counted, "127.0.0.7")
    assert sorted(b["address"] for b in blocks(counted)) == ["127.0.0.6", "127.0.0.7"]
    assert cli(counted.conf, "abuse", "unblock", "--all").stdout.strip() == \
        "lifted 2 blocks: 127.0.0.6, 127.0.0.7"
    assert smtp_auth(counted, PASSWORD, source="127.0.0.7") == 235
    for args, words in ((["127.0.0.6"], "127.0.0.6 is not blocked"),
                        (["mail.example.test"], "not an IP address: 'mail.example.test'")):
        refused = cli(counted.conf, "abuse", "unblock", *args, check=False)
        assert refused.returncode == 2
        assert refused.stderr.strip() == f"mailforge: {words}" + (
            " (`mailforge abuse list` shows the blocks)" if "not blocked" in words else "")


def test_exempting_a_blocked_address_and_reloading_lifts_its_block(make_server):
    server = make_server(pop3_services=True, server={"allow_plaintext_auth": True}, abuse=COUNTED)
    server.start()
    block(server, "127.0.0.8")
    block(server, "127.0.0.9")
    server.reconfigure({"abuse": {**COUNTED, "exempt_networks": ["127.0.0.8/32"]}})
    server.proc.send_signal(signal.SIGHUP)
    # A refused connection counts no failure: asking again and again costs nothing.
    wait_for(lambda: smtp_auth(server, PASSWORD, source="127.0.0.8") == 235)
    assert smtp_auth(server, PASSWORD, source="127.0.0.9") == 421  # not covered: still blocked
    assert [b["address"] for b in blocks(server)] == ["127.0.0.9"]
    assert "lifted the blocks on 127.0.0.8, now in [abuse] exempt_networks" in server.log()


def test_loopback_is_exempt_by_default(make_server, tmp_path):
    cli(tmp_path / "none.toml", "init", "--dir", str(tmp_path / "fresh"), "--hostname", "mx.test")
    written = tomllib.loads((tmp_path / "fresh" / "mailforge.toml").read_text())
    assert written["abuse"]["exempt_networks"] == ["127.0.0.0/8", "::1/128"]
    server = make_server(server={"allow_plaintext_auth": True}, abuse=QUICK)  # the default list
    server.start()
    assert [smtp_auth(server, "wrong", source="127.0.0.5") for _ in range(BLOCK_AFTER + 2)] == \
        [535] * (BLOCK_AFTER + 2)
    assert smtp_auth(server, PASSWORD, source="127.0.0.5") == 235
