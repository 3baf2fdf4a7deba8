"""The delivery agent relaying to aiosmtpd sinks on loopback, with a fake clock: results per
recipient, retries, expiry, DSNs and what NOTIFY/RET/ENVID/ORCPT change in them."""

from __future__ import annotations

import email
import email.policy
import email.utils
import os
import shutil

import pytest

from mailforge.auth.accounts import Accounts
from mailforge.config import Config, DeliveryConfig
from mailforge.queue import dsn, retry
from mailforge.queue import spool as spool_module
from mailforge.queue.delivery import DeliveryAgent
from mailforge.queue.envelope import decode, encode
from mailforge.queue.notices import notice_id
from mailforge.queue.spool import queue_length
from tests.smtp_sinks import Behaviour, Sink
from tests.unit.test_delivery import NOW, Clock, delivered, enqueue

REMOTE = "remote.test"


@pytest.fixture(autouse=True)
def setup(monkeypatch):
    monkeypatch.setattr(spool_module, "SPILL_SIZE", 0)  # entries in files, to rewrite envelopes
    monkeypatch.setattr(retry, "JITTER", 0.0)


@pytest.fixture
def sink():
    instance = Sink(Behaviour(flaky=1))
    yield instance
    instance.stop()


@pytest.fixture
def config(tmp_path, sink):
    config = Config()
    config.server.hostname = "mx.example.test"
    config.path = tmp_path / "mailforge.toml"
    config.delivery = DeliveryConfig(retry_schedule=[10, 20], max_queue_time=100, delay_notice=0,
                                     mx_override={REMOTE: sink.address}, connect_timeout=2,
                                     command_timeout=2)
    return config


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def agent(config, clock, tmp_path_factory):
    template = tmp_path_factory.getbasetemp() / "outbound-accounts.sqlite3"
    if not template.exists():
        with Accounts(template, create=True) as accounts:
            accounts.directory.domain_add("example.test")
            accounts.directory.user_add("bob@example.test", "secret")
    shutil.copyfile(template, config.accounts_db)
    with Accounts(config.accounts_db) as accounts:
        yield DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, clock=clock)


def set_dsn(config, entry_id, **fields):
    """What the SMTP session records when the client asks for DSNs."""
    path = config.queue_dir / "active" / f"{entry_id}.env"
    env = decode(path.read_bytes())
    for key, value in fields.items():
        setattr(env, key, value)
    path.write_bytes(encode(env))


def queued_notices(config) -> dict[str, email.message.EmailMessage]:
    active = config.queue_dir / "active"
    found = {}
    for name in sorted(os.listdir(active)):
        if name.endswith(".env") and decode((active / name).read_bytes()).sender == "":
            raw = (active / name.replace(".env", ".msg")).read_bytes()
            found[name[:-4]] = email.message_from_bytes(raw, policy=email.policy.default)
    return found


def status_blocks(report: email.message.EmailMessage) -> list[dict[str, str]]:
    """The per-message block, then one per recipient, of the report's delivery-status part."""
    part = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    return [{key: " ".join(str(value).split()) for key, value in block.items()}
            for block in part.get_payload()]


BODY = b"Subject: outbound\r\n\r\n.dot line\r\nbody\r\n"


def test_relays_the_exact_message_and_delivers_locally_beside(config, agent, sink):
    entry_id = enqueue(config, BODY, ["bob@example.test", f"carol@{REMOTE}"])
    assert agent.step() == 1
    (got,) = sink.received
    assert got.sender == "alice@example.test" and got.recipients == [f"carol@{REMOTE}"]
    assert got.data == BODY  # no Return-Path or Delivered-To: those belong to final delivery
    assert len(delivered(config, "bob@example.test")) == 1
    assert queue_length(config.queue_dir) == 0 and not queued_notices(config)
    assert entry_id


def test_mixed_results_bounce_retry_and_deliver(config, agent, sink, clock):
    rcpts = [f"ok@{REMOTE}", f"bad@{REMOTE}", f"later@{REMOTE}", f"flaky@{REMOTE}"]
    entry_id = enqueue(config, BODY, rcpts)
    agent.step()
    assert [r.recipients for r in sink.received] == [[f"ok@{REMOTE}"]]
    env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
    assert env.recipients == [f"later@{REMOTE}", f"flaky@{REMOTE}"]
    assert env.next_attempt == NOW + 10 and "451 4.2.0" in env.errors[f"later@{REMOTE}"]
    (bounce_id, bounce), = queued_notices(config).items()
    assert bounce_id == notice_id(entry_id, 0, dsn.FAILED, [f"bad@{REMOTE}"])
    assert bounce["To"] == "alice@example.test" and "Undelivered" in bounce["Subject"]
    assert bounce.get_content_type() == "multipart/report"
    assert bounce.get_param("report-type") == "delivery-status"
    per_message, per_rcpt = status_blocks(bounce)
    assert per_message["Reporting-MTA"] == "dns; mx.example.test"
    assert per_rcpt["Final-Recipient"] == f"rfc822; bad@{REMOTE}"
    assert per_rcpt["Action"] == "failed" and per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; 127.0.0.1"
    assert per_rcpt["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    returned = [p for p in bounce.walk() if p.get_content_type() == "message/rfc822"]
    assert returned and "Subject: outbound" in str(returned[0])

    clock.now += 11
    agent.step()  # the bounce goes to alice (unknown here: badmail); flaky now succeeds
    assert sorted(r.recipients[0] for r in sink.received) == [f"flaky@{REMOTE}", f"ok@{REMOTE}"]
    env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
    assert env.recipients == [f"later@{REMOTE}"] and env.next_attempt == clock.now + 20


def test_expiry_bounces_with_the_last_error(config, agent, clock):
    entry_id = enqueue(config, BODY, [f"later@{REMOTE}"])
    agent.step()
    clock.now += 10
    agent.step()
    env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
    # The schedule says 20 s, but the message expires at 100 s: it is tried then, not later.
    clock.now = env.next_attempt
    for _ in range(10):
        env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
        assert env.next_attempt <= NOW + 100
        clock.now = env.next_attempt
        agent.step()
        if not (config.queue_dir / "active" / f"{entry_id}.env").exists():
            break
    notices = queued_notices(config)
    bounce = notices[next(k for k in notices if k.startswith(f"{entry_id}-B"))]
    _, per_rcpt = status_blocks(bounce)
    assert per_rcpt["Action"] == "failed" and per_rcpt["Status"] == "4.4.7"
    assert "expired" in per_rcpt["X-Mailforge-Reason"] and "451 4.2.0" in per_rcpt["X-Mailforge-Reason"]


def test_notify_ret_envid_orcpt_shape_the_reports(config, agent, sink):
    ok, bad, quiet = f"ok@{REMOTE}", f"bad@{REMOTE}", f"badquiet@{REMOTE}"
    entry_id = enqueue(config, BODY, [ok, bad, quiet])
    set_dsn(config, entry_id, envid="ENV-42", ret="HDRS",
            notify={ok: "SUCCESS", bad: "FAILURE", quiet: "NEVER"},
            orcpt={bad: "rfc822;Original@example.test"})
    agent.step()
    notices = queued_notices(config)
    bounce_id = notice_id(entry_id, 0, dsn.FAILED, [bad])
    success_id = notice_id(entry_id, 0, dsn.RELAYED, [ok])
    assert set(notices) == {bounce_id, success_id}
    bounce, success = notices[bounce_id], notices[success_id]
    per_message, per_rcpt = status_blocks(bounce)
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert per_rcpt["Original-Recipient"] == "rfc822; Original@example.test"
    assert per_rcpt["Final-Recipient"] == f"rfc822; {bad}"  # not the NEVER one
    assert [p.get_content_type() for p in bounce.walk()][-1] == "text/rfc822-headers"
    _, relayed = status_blocks(success)
    assert relayed["Action"] == "relayed" and relayed["Final-Recipient"] == f"rfc822; {ok}"


def test_success_notice_for_local_delivery(config, agent):
    entry_id = enqueue(config, BODY, ["bob@example.test"])
    set_dsn(config, entry_id, notify={"bob@example.test": "SUCCESS,FAILURE"})
    agent.step()
    (notice,) = queued_notices(config).values()
    _, block = status_blocks(notice)
    assert block["Action"] == "delivered" and block["Status"] == "2.0.0"


def test_one_delay_notice(config, agent, clock):
    config.delivery.delay_notice = 15
    entry_id = enqueue(config, BODY, [f"later@{REMOTE}"])
    agent.step()
    assert not queued_notices(config)
    clock.now += 20
    agent.step()
    (delay_notice_id, notice), = queued_notices(config).items()
    delay_id = notice_id(entry_id, 1, dsn.DELAYED, [f"later@{REMOTE}"])
    assert delay_notice_id == delay_id and "Delayed" in notice["Subject"]
    _, block = status_blocks(notice)
    assert block["Action"] == "delayed" and block["Status"] == "4.2.0" and "Will-Retry-Until" in block
    clock.now += 30
    agent.step()  # still failing; the notice itself is delivered (to badmail/: alice is unknown)
    names = os.listdir(config.queue_dir / "active") + os.listdir(config.badmail_dir)
    assert {n.split(".")[0] for n in names if "-D" in n} == {delay_id}  # once per message


def test_a_delay_notice_announces_each_recipients_own_give_up_time(config, agent, clock):
    """RFC 3464 2.3.9: Will-Retry-Until is when delivery attempts stop, for that recipient: a
    full mailbox bounces after quota_full_bounce_after, the rest after max_queue_time."""
    config.delivery.delay_notice = 15
    config.delivery.quota_full_bounce_after = 30
    with Accounts(config.accounts_db) as accounts:
        accounts.mailbox_settings.set_quota("bob@example.test", None, 0)
    enqueue(config, BODY, ["bob@example.test", f"later@{REMOTE}"])
    agent.step()
    clock.now += 20
    agent.step()
    (notice,) = queued_notices(config).values()
    _, full, later = status_blocks(notice)
    assert full["Final-Recipient"] == "rfc822; bob@example.test"
    assert full["Will-Retry-Until"] == email.utils.formatdate(NOW + 30, localtime=True)
    assert later["Will-Retry-Until"] == email.utils.formatdate(NOW + 100, localtime=True)
    text = notice.get_payload()[0].get_content()
    assert f"retried until {email.utils.formatdate(NOW + 30, localtime=True)}" in text


def test_null_sender_refused_remotely_goes_to_badmail(config, agent, sink):
    entry_id = enqueue(config, BODY, [f"reject@{REMOTE}"], sender="")
    agent.step()
    assert queue_length(config.queue_dir) == 0 and not queued_notices(config)
    note = (config.badmail_dir / f"{entry_id}.0.0.reason").read_text()
    assert "554 5.7.1" in note


def test_a_bounce_to_a_remote_sender_is_relayed(config, agent, sink):
    enqueue(config, BODY, [f"bad@{REMOTE}"], sender=f"sender@{REMOTE}")
    agent.step()
    agent.step()
    (bounce,) = sink.received
    assert bounce.sender == "<>" and bounce.recipients == [f"sender@{REMOTE}"]
    assert b"multipart/report" in bounce.data and b"\r\n" in bounce.data
    assert queue_length(config.queue_dir) == 0


class NoSlotFree:
    """Every connection to every destination in use by other delivery workers."""

    async def take(self, key: str, wait: float) -> bool:
        return False

    async def give_back(self, key: str) -> None:
        raise AssertionError("nothing was taken")

    async def close(self) -> None:
        pass


def test_a_destination_with_no_connection_to_spare_is_no_attempt(config, clock):
    from mailforge.queue.delivery import BUSY_RETRY
    from mailforge.queue.outbound import Outbound, OutboundRunner

    runner = OutboundRunner(config, Outbound(config, slots=NoSlotFree()))
    with Accounts(config.accounts_db, create=True) as accounts:
        agent = DeliveryAgent(config, accounts.directory, accounts.mailbox_settings, clock=clock,
                              outbound=runner)
        entry_id = enqueue(config, BODY, [f"carol@{REMOTE}"])
        agent.step()
        env = decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes())
        assert env.attempts == 0 and env.next_attempt == NOW + BUSY_RETRY
        assert "the most connections (10)" in env.errors[f"carol@{REMOTE}"]
        assert not queued_notices(config)
        agent.close()


@pytest.mark.parametrize("requiretls", [True, False])
def test_the_bounce_of_a_requiretls_message_demands_validated_tls_too(config, agent, requiretls):
    """RFC 8689 4.4: the bounce holds the message's header (RET=FULL all of it), so it goes
    back to the sender as protected as the message came."""
    entry_id = enqueue(config, BODY, [f"bad@{REMOTE}"])
    set_dsn(config, entry_id, requiretls=requiretls)
    agent.step()
    (queued_id, _), = queued_notices(config).items()
    notice = decode((config.queue_dir / "active" / f"{queued_id}.env").read_bytes())
    assert notice.requiretls is requiretls


def test_notices_of_an_attempt_that_did_not_count_are_not_overwritten(config, agent, clock):
    """A recipient refused while another waits for a connection (no attempt: `attempts` stays)
    gets its bounce; the other's bounce, an attempt later, must not replace it in the queue."""
    from mailforge.queue.delivery import BUSY_RETRY
    from mailforge.queue.outbound import Outbound, OutboundRunner

    sender = f"later@{REMOTE}"  # the bounces wait in the queue: the sink defers them
    entry_id = enqueue(config, BODY, ["nobody@example.test", f"bad@{REMOTE}"], sender=sender)
    busy = DeliveryAgent(config, agent.recipients, agent.quotas, clock=clock,
                         outbound=OutboundRunner(config, Outbound(config, slots=NoSlotFree())))
    busy.step()
    busy.close()
    assert decode((config.queue_dir / "active" / f"{entry_id}.env").read_bytes()).attempts == 0
    clock.now += BUSY_RETRY
    agent.step()
    reported = {status_blocks(n)[1]["Final-Recipient"] for n in queued_notices(config).values()}
    assert reported == {"rfc822; nobody@example.test", f"rfc822; bad@{REMOTE}"}
