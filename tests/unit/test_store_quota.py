"""Quota: maildirsize accounting, OverQuota, the SMTP 552 at RCPT and delivery deferral."""

import asyncio
import concurrent.futures
import os

import pytest

from mailforge.auth.accounts import Accounts
from mailforge.auth.api import Lookup, RecipientStatus
from mailforge.config import Config
from mailforge.protocols.session import Action
from mailforge.protocols.smtp import SMTPMachine, SMTPSettings
from mailforge.queue.delivery import DeliveryAgent
from mailforge.queue.envelope import Envelope
from mailforge.queue.spool import Spool, queue_length
from mailforge.store import quota
from mailforge.store.api import DELETED, FlagMode, OverQuota
from mailforge.store.folders import MaildirMailbox, open_mailbox
from mailforge.store.maildir import mailbox_path
from mailforge.store.quota import Limits

ADDRESS = "bob@example.test"
BODY = b"Subject: x\n\n" + b"y" * 88  # 100 octets on disk


def test_usage_follows_appends_and_expunges(tmp_path):
    mailbox = MaildirMailbox(tmp_path, ADDRESS, Limits(1000, 5))
    assert mailbox.quota() == quota.Quota(0, 0, 1000, 5)
    mailbox.append("INBOX", BODY)
    mailbox.append("Sent", BODY)
    assert mailbox.quota().used_bytes == 200 and mailbox.quota().used_messages == 2
    assert (mailbox.root / "maildirsize").read_text().splitlines()[0] == "1000S,5C"
    folder = mailbox.select("INBOX")
    folder.set_flags([1], [DELETED], FlagMode.ADD)
    folder.expunge()
    assert mailbox.quota().used_messages == 1 and mailbox.quota().used_bytes == 100


def test_over_quota_append_and_copy_are_refused(tmp_path):
    mailbox = MaildirMailbox(tmp_path, ADDRESS, Limits(250))
    mailbox.append("INBOX", BODY)
    mailbox.append("INBOX", BODY)
    with pytest.raises(OverQuota):
        mailbox.append("INBOX", BODY)
    with pytest.raises(OverQuota):
        mailbox.select("INBOX").copy([1], "Trash")
    counted = MaildirMailbox(tmp_path, ADDRESS, Limits(None, 2))
    with pytest.raises(OverQuota):
        counted.append("Drafts", b"x\n")


def test_lost_or_stale_maildirsize_is_counted_again(tmp_path):
    mailbox = MaildirMailbox(tmp_path, ADDRESS, Limits(10_000))
    mailbox.append("INBOX", BODY)
    os.unlink(mailbox.root / "maildirsize")
    body = b"z" * 50
    (mailbox.root / "new" / f"1700000000.Qa.host,S={len(body)}").write_bytes(body)
    assert mailbox.quota().used_bytes == 150
    # Other limits than the file's first line: counted again with the new line.
    assert header_after_quota(MaildirMailbox(tmp_path, ADDRESS, Limits(20_000))) == "20000S,0C"
    (mailbox.root / "maildirsize").write_text("10000S,0C\n-5000 -3\n")
    assert mailbox.quota().used_bytes == 150


def header_after_quota(mailbox):
    mailbox.quota()
    return (mailbox.root / "maildirsize").read_text().splitlines()[0]


def test_mailbox_full_asks_the_accounts_limits(tmp_path):
    class Limited:
        def quota_limits(self, address):
            return (150, None) if address == ADDRESS else (None, None)

    assert not quota.mailbox_full(tmp_path, Limited(), ADDRESS)
    MaildirMailbox(tmp_path, ADDRESS).append("INBOX", BODY)
    assert not quota.mailbox_full(tmp_path, Limited(), ADDRESS)
    MaildirMailbox(tmp_path, ADDRESS).append("INBOX", BODY)
    assert quota.mailbox_full(tmp_path, Limited(), ADDRESS)
    assert not quota.mailbox_full(tmp_path, Limited(), "carol@example.test")


def test_smtp_answers_452_at_rcpt_for_a_full_mailbox():
    settings = SMTPSettings("mx.test", max_message_size=1000, max_recipients=3,
                            max_line_length=2048)
    machine = SMTPMachine(settings, None, "127.0.0.1")
    machine.handle(b"EHLO client.test")
    machine.handle(b"MAIL FROM:<a@remote.test>")
    assert machine.handle(b"RCPT TO:<bob@example.test>").action is Action.LOOK_UP_RECIPIENT
    assert machine.recipient_found(Lookup(RecipientStatus.OK, [ADDRESS]), over_quota=True).text == (
        b"452 4.2.2 <bob@example.test>: Mailbox full\r\n")
    machine.handle(b"RCPT TO:<carol@example.test>")
    assert machine.recipient_found(Lookup(RecipientStatus.OK, ["carol@example.test"]), over_quota=False
                                   ).text.startswith(b"250")


@pytest.fixture
def config(tmp_path):
    config = Config()
    config.path = tmp_path / "mailforge.toml"
    with Accounts(config.accounts_db, create=True) as accounts:
        accounts.directory.domain_add("example.test")
        accounts.directory.user_add(ADDRESS, "secret")
        accounts.mailbox_settings.set_quota(ADDRESS, 250)  # one message with its trace header
    return config


def enqueue(config, message):
    async def main():
        with concurrent.futures.ThreadPoolExecutor(2) as executor:
            spool = Spool(config.queue_dir, executor)
            file = spool.create("a@remote.test", [ADDRESS])
            file.write(message)
            await file.commit(Envelope("", "a@remote.test", [ADDRESS], 1.7e9, "192.0.2.1", "c"))
            await spool.close()
    asyncio.run(main())


def test_delivery_defers_over_quota_and_imap_sees_the_limit(config):
    with Accounts(config.accounts_db) as accounts:
        agent = DeliveryAgent(config, accounts.directory, accounts.mailbox_settings)
        enqueue(config, BODY)
        enqueue(config, BODY)
        agent.step()
        assert len(os.listdir(mailbox_path(config.store_dir, ADDRESS) / "new")) == 1
        assert queue_length(config.queue_dir) == 1  # waits for space
        mailbox = open_mailbox(config.store_dir, accounts.mailbox_settings, ADDRESS)
        assert mailbox.quota().limit_bytes == 250
        with pytest.raises(OverQuota):
            mailbox.append("INBOX", BODY)
