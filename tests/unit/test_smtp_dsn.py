"""RFC 3461 parameters at receipt, and the Received: hop count, by transcript."""

import pytest

from mailforge.protocols.hops import MAX_HOPS, HopCounter
from mailforge.queue.dsn import (DSNParamError, parse_orcpt, without_success, xtext_decode,
                                 xtext_encode)
from tests.unit.test_smtp_machine import run, session


def test_dsn_is_advertised_and_parameters_are_kept():
    m = session()
    assert b"250-DSN\r\n" in m.handle(b"EHLO client.test").text
    run(m, [(b"MAIL FROM:<bob@remote.test> RET=hdrs ENVID=QQ+2B314", b"250 2.1.0"),
            (b"RCPT TO:<alice@example.test> NOTIFY=delay,FAILURE ORCPT=rfc822;Al+2Bice@example.test",
             b"250 2.1.5"),
            (b"RCPT TO:<x@elsewhere.test> NOTIFY=NEVER", b"554 5.7.1")])
    t = m.transaction
    assert (t.ret, t.envid) == ("HDRS", "QQ+314")
    assert t.notify == {"alice@example.test": "FAILURE,DELAY"}
    assert t.orcpt == {"alice@example.test": "rfc822;Al+ice@example.test"}


@pytest.mark.parametrize("line, expected", [
    (b"MAIL FROM:<a@b.test> RET=ALL", b"501 5.5.4 Bad RET"),
    (b"MAIL FROM:<a@b.test> ENVID=" + b"x" * 101, b"501 5.5.4 Bad ENVID"),
    (b"MAIL FROM:<a@b.test> ENVID=bad+zz", b"501 5.5.4 Bad ENVID"),
    (b"MAIL FROM:<a@b.test> RET", b"555 5.5.4"),
])
def test_bad_mail_parameters(line, expected):
    run(session(), [(b"EHLO x", b"250"), (line, expected)])


@pytest.mark.parametrize("param, expected", [
    (b"NOTIFY=NEVER,SUCCESS", b"501 5.5.4 Bad NOTIFY"),
    (b"NOTIFY=SOMETIMES", b"501 5.5.4 Bad NOTIFY"),
    (b"NOTIFY=SUCCESS,SUCCESS", b"501 5.5.4 Bad NOTIFY"),
    (b"ORCPT=rfc822", b"501 5.5.4 Bad ORCPT"),
    (b"FOO=1", b"555 5.5.4"),
])
def test_bad_rcpt_parameters(param, expected):
    run(session(), [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250"),
                    (b"RCPT TO:<alice@example.test> " + param, expected)])


def test_helo_sessions_take_no_dsn_parameters():
    run(session(), [(b"HELO x", b"250"), (b"MAIL FROM:<> RET=FULL", b"555"),
                    (b"MAIL FROM:<>", b"250"), (b"RCPT TO:<alice@example.test> NOTIFY=NEVER", b"555")])


@pytest.mark.parametrize("notify, expected", [
    ("SUCCESS", "NEVER"), ("SUCCESS,FAILURE", "FAILURE"),
    ("SUCCESS,FAILURE,DELAY", "FAILURE,DELAY"),
])
def test_success_taken_off_a_notify_leaves_never_rather_than_the_default(notify, expected):
    assert without_success(notify) == expected


def test_xtext_round_trip():
    for text in ("plain", "a+b=c d", "jörg@x", "\x01"):
        assert xtext_decode(xtext_encode(text)) == text
    with pytest.raises(DSNParamError):
        xtext_decode("a=b")
    assert parse_orcpt("RFC822;a+40b") == "rfc822;a@b"


def header_section(hops: int) -> bytes:
    return b"".join(b"Received: from h%d by x; date\r\n\tcontinued\r\n" % i for i in range(hops))


@pytest.mark.parametrize("hops", [0, 1, MAX_HOPS, MAX_HOPS + 1])
def test_hop_counter_byte_by_byte(hops):
    message = header_section(hops) + b"Subject: x\r\n\r\nReceived: in the body does not count\r\n"
    whole, bytewise = HopCounter(), HopCounter()
    whole.feed(message)
    for i in range(len(message)):
        bytewise.feed(message[i:i + 1])
    assert whole.hops == bytewise.hops == hops
    assert whole.exceeded is (hops > MAX_HOPS)


def test_too_many_hops_is_refused_with_554_5_4_6():
    m = session()
    run(m, [(b"EHLO x", b"250"), (b"MAIL FROM:<>", b"250"), (b"RCPT TO:<alice@example.test>", b"250")])
    assert m.too_many_hops().text.startswith(b"554 5.4.6")
    assert not m.in_transaction
