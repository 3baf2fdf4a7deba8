"""Outbound message limits, the hacked-account regulator (issue 8), with 4 SMTP workers.

Every message goes on a new connection, so a sender's messages land on every worker; the limit
holds to the exact count because the count lives in the rate-keeper.
"""

from __future__ import annotations

import smtplib
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesParser

import pytest

from .conftest import DOMAIN, PASSWORD, USER, cli

ADMIN = f"admin@{DOMAIN}"
BOB = f"bob@{DOMAIN}"
CAROL = "carol@other.test"
DAVE = f"dave@{DOMAIN}"


@pytest.fixture(scope="module")
def limited_data(make_module_server):
    """The accounts and limits every test starts from, made once (eight CLI runs); not started."""
    server = make_module_server(server={"allow_plaintext_auth": True}, smtp={"workers": 4},
                                abuse={"notify": ADMIN})
    cli(server.conf, "domain", "add", "other.test")
    for user in (ADMIN, BOB, CAROL, DAVE):
        cli(server.conf, "user", "add", user, "--password-stdin", input=PASSWORD + "\n")
    cli(server.conf, "limits", "set", "--system", "--messages", "5", "--interval", "3600")
    cli(server.conf, "limits", "set", "--domain", DOMAIN, "--messages", "3", "--interval", "3600")
    cli(server.conf, "limits", "set", "--user", USER, "--messages", "4", "--interval", "3600")
    return server


@pytest.fixture
def limited(limited_data, tmp_path):
    """A server of its own on a copy of limited_data: the tests use up and change limits."""
    with limited_data.running_copy(tmp_path) as server:
        yield server


def send(server, user: str) -> int:
    """One message from a logged-in `user` on a new connection: the final reply code."""
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.login(user, PASSWORD)
        code, _ = client.mail(user)
        if code != 250:
            return code
        assert client.rcpt(BOB)[0] == 250
        return client.data(f"From: {user}\r\nSubject: hello\r\n\r\nhi\r\n".encode())[0]


def send_many(server, user: str, count: int) -> list[int]:
    with ThreadPoolExecutor(8) as pool:
        return sorted(pool.map(lambda _: send(server, user), range(count)))


def notices(server) -> list[str]:
    subjects = []
    for path in server.delivered(ADMIN):
        message = BytesParser().parsebytes(path.read_bytes(), headersonly=True)
        subjects.append(message["Subject"])
    return sorted(subjects)


def test_user_domain_and_system_limits_hold_to_the_exact_count(limited):
    # Concurrent senders race for the last slots: exactly the limit gets through.
    assert send_many(limited, USER, 10) == [250] * 4 + [451] * 6  # its own limit
    assert send_many(limited, BOB, 8) == [250] * 3 + [451] * 5    # the domain's
    assert send_many(limited, CAROL, 8) == [250] * 5 + [451] * 3  # the system's
    # One notice per sender and event, however many messages were refused.
    limited.wait_delivered(3, ADMIN)
    assert notices(limited) == sorted(f"Outbound limit reached by {u}" for u in (USER, BOB, CAROL))
    assert send(limited, USER) == 451
    assert len(notices(limited)) == 3
    show = cli(limited.conf, "limits", "show", USER).stdout
    assert "4 messages per 3600 s, then throttle (user setting)" in show


def test_resets_clear_lower_levels_in_order(limited):
    assert send_many(limited, USER, 5) == [250] * 4 + [451]
    # Without its own limit the user falls back on the domain's 3: still over.
    cli(limited.conf, "limits", "reset", "--domain", DOMAIN)
    assert "(domain setting)" in cli(limited.conf, "limits", "show", USER).stdout
    assert send(limited, USER) == 451
    # Without the domain's, the system's 5: one more message.
    cli(limited.conf, "limits", "reset", "--system")
    assert "(system setting)" in cli(limited.conf, "limits", "show", USER).stdout
    assert [send(limited, USER) for _ in range(2)] == [250, 451]


def test_the_disable_action_stops_the_account_until_enabled(limited):
    cli(limited.conf, "limits", "set", "--user", DAVE, "--messages", "2", "--interval", "3600",
        "--action", "disable")
    assert [send(limited, DAVE) for _ in range(3)] == [250, 250, 550]
    assert "sending disabled" in cli(limited.conf, "limits", "show", DAVE).stdout
    cli(limited.conf, "limits", "set", "--user", DAVE, "--messages", "100", "--interval", "3600")
    assert send(limited, DAVE) == 550  # a higher limit does not lift the disable
    cli(limited.conf, "user", "enable", DAVE)
    assert send(limited, DAVE) == 250
    limited.wait_delivered(1, ADMIN)
    assert notices(limited) == [f"Outbound limit reached by {DAVE}"]


def test_refusals_say_why(limited):
    cli(limited.conf, "limits", "set", "--user", DAVE, "--messages", "1", "--interval", "3600")
    assert send(limited, DAVE) == 250
    with smtplib.SMTP("127.0.0.1", limited.port, timeout=30) as client:
        client.login(DAVE, PASSWORD)
        code, text = client.mail(DAVE)
    assert (code, text) == (451, f"4.7.1 <{DAVE}>: sending limit reached, try again later".encode())


def test_limits_cli_errors_are_one_line(limited):
    result = cli(limited.conf, "limits", "set", "--domain", "nowhere.test", "--messages", "5",
                 "--interval", "60", check=False)
    assert result.returncode != 0 and "nowhere.test" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = cli(limited.conf, "limits", "set", "--messages", "5", "--interval", "60", check=False)
    assert result.returncode != 0


def test_a_removed_mailbox_or_domain_takes_its_limit_with_it(limited):
    """Added again (for someone else, say), a mailbox or domain starts from the limits above
    it, not from the one its predecessor had."""
    cli(limited.conf, "limits", "set", "--user", DAVE, "--messages", "1", "--interval", "3600")
    cli(limited.conf, "limits", "set", "--domain", "other.test", "--messages", "1", "--interval", "3600")
    cli(limited.conf, "user", "remove", DAVE)
    cli(limited.conf, "user", "remove", CAROL)
    cli(limited.conf, "domain", "remove", "other.test")
    listed = cli(limited.conf, "limits", "show").stdout
    assert "other.test" not in listed and DAVE not in listed
    cli(limited.conf, "domain", "add", "other.test")
    for user in (DAVE, CAROL):
        cli(limited.conf, "user", "add", user, "--password-stdin", input=PASSWORD + "\n")
    assert "(domain setting)" in cli(limited.conf, "limits", "show", DAVE).stdout
    assert "(system setting)" in cli(limited.conf, "limits", "show", CAROL).stdout
    assert [send(limited, DAVE) for _ in range(2)] == [250, 250]   # the domain's 3
    assert [send(limited, CAROL) for _ in range(2)] == [250, 250]  # the system's 5
