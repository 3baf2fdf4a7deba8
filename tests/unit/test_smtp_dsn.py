"""RFC 3461 parameters at receipt, and the Received: hop count, by transcript."""

import pytest

from mailforge.protocols.hops import MAX_HOPS, HopCounter
from mailforge.queue.dsn import (FAILED, DSNParamError, Original, RecipientStatus, build_report,
                                 orcpt_param, parse_orcpt, utf8_addr_decode, utf8_addr_encode,
                                 without_success, xtext_decode, xtext_encode)
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


def test_utf8_addresses_in_their_xtext_and_unitext_forms():
    """RFC 6533 3: QCHARs stay; '\\', '+', '=', space and controls become \\x{HEX}, and in the
    7-bit utf-8-addr-xtext every non-ASCII character too."""
    address = "jö rg+a=b\\c😀@x.test"
    assert utf8_addr_encode(address, seven_bit=True) == (
        "j\\x{F6}\\x{20}rg\\x{2B}a\\x{3D}b\\x{5C}c\\x{1F600}@x.test")
    assert utf8_addr_encode(address, seven_bit=False) == (
        "jö\\x{20}rg\\x{2B}a\\x{3D}b\\x{5C}c😀@x.test")
    for seven_bit in (True, False):
        assert utf8_addr_decode(utf8_addr_encode(address, seven_bit)) == address
    assert utf8_addr_decode("j\\x{f6}rg@x.test") == "jörg@x.test"
    for bad in ("a\\b@x.test", "a\\x{}@x.test", "a\\x{D800}@x.test", "a\\x{110000}@x.test"):
        with pytest.raises(DSNParamError):
            utf8_addr_decode(bad)


def test_a_utf8_orcpt_is_kept_decoded_and_passed_on_in_the_form_the_next_hop_takes():
    assert parse_orcpt("UTF-8;j\\x{F6}rg\\x{2B}1@x.test") == "utf-8;jörg+1@x.test"
    assert parse_orcpt("rfc822;j\\x{F6}rg@x.test") == "rfc822;j\\x{F6}rg@x.test"  # no escape there
    for bad in ("utf-8;a\\x{0A}b@x.test", "utf-8;a\\b@x.test"):
        with pytest.raises(DSNParamError):
            parse_orcpt(bad)
    assert orcpt_param("utf-8;jörg+1@x.test", smtputf8=False) == "utf-8;j\\x{F6}rg\\x{2B}1@x.test"
    assert orcpt_param("utf-8;jörg+1@x.test", smtputf8=True) == "utf-8;jörg\\x{2B}1@x.test"
    assert orcpt_param("rfc822;a+b@x.test", smtputf8=True) == "rfc822;a+2Bb@x.test"


def test_a_utf8_orcpt_in_utf8_is_taken_as_unitext_under_smtputf8_only():
    """RFC 6533 3: utf-8-addr-unitext is for SMTPUTF8 transactions; the 7-bit forms stay."""
    assert parse_orcpt("utf-8;jörg\\x{2B}1@x.test", smtputf8=True) == "utf-8;jörg+1@x.test"
    assert parse_orcpt("UTF-8;j\\x{F6}rg@x.test", smtputf8=True) == "utf-8;jörg@x.test"
    assert parse_orcpt("rfc822;a+40b", smtputf8=True) == "rfc822;a@b"
    for bad in ("utf-8;jö=rg@x.test", "utf-8;jö\\rg@x.test", "utf-8;jö\x85rg@x.test"):
        with pytest.raises(DSNParamError):
            parse_orcpt(bad, smtputf8=True)
    for bad in ("utf-8;jörg@x.test", "rfc822;jörg@x.test"):
        with pytest.raises(DSNParamError):
            parse_orcpt(bad, smtputf8=False)
    m = session()
    run(m, [(b"EHLO x", b"250"), (b"MAIL FROM:<a@b.test> SMTPUTF8", b"250"),
            ("RCPT TO:<alice@example.test> ORCPT=utf-8;jörg@example.test".encode(), b"250 2.1.5")])
    assert m.transaction.orcpt == {"alice@example.test": "utf-8;jörg@example.test"}
    run(m, [(b"RSET", b"250"), (b"MAIL FROM:<a@b.test>", b"250"),
            ("RCPT TO:<alice@example.test> ORCPT=utf-8;jörg@example.test".encode(),
             b"501 5.5.4 Bad ORCPT")])


def test_a_report_gives_each_recipient_its_own_address_type():
    """RFC 6533 3: utf-8 addresses in message/global-delivery-status as utf-8-addr-unitext; an
    ASCII recipient beside them stays rfc822."""
    statuses = [RecipientStatus("jörg@x.test", FAILED, "5.1.1", orcpt="utf-8;a=b@y.test"),
                RecipientStatus("a+b@x.test", FAILED, "5.1.1")]
    original = Original("Q1", "s@x.test", 0.0, b"Subject: hi\n\nbody\n")
    report = build_report(original, statuses, "mx.test", 0.0).decode()
    assert "Content-Type: message/global-delivery-status\n" in report
    assert ("\nOriginal-Recipient: utf-8; a\\x{3D}b@y.test\nFinal-Recipient: utf-8; jörg@x.test\n"
            in report)
    assert "\nFinal-Recipient: rfc822; a+b@x.test\n" in report


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
