"""Delivery status notifications over the wire: RFC 3461 parameters a real `mailforge serve`
takes or refuses, and the reports it relays to aiosmtpd sinks (tests/smtp_sinks.py)."""

from __future__ import annotations

import smtplib

from .conftest import USER
from .test_outbound import sink  # noqa: F401  (a fixture for the tests)


def test_envid_and_orcpt_decoding_to_control_characters_are_refused(server):
    """RFC 3461 4.2, 4.4: a decoded line end would write fields into the report."""
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("client.test")
        code, text = client.docmd("MAIL FROM:<a@remote.test> ENVID=x+0D+0AReporting-MTA:+20dns;+20evil")
        assert (code, text[:11]) == (501, b"5.5.4 Bad E")
        assert client.docmd("MAIL FROM:<a@remote.test> ENVID=run+2D1+20a")[0] == 250
        code, text = client.docmd(f"RCPT TO:<{USER}> ORCPT=rfc822;a+0AAction:+20delivered")
        assert (code, text[:11]) == (501, b"5.5.4 Bad O")
        assert client.docmd(f"RCPT TO:<{USER}> ORCPT=rfc822;a+2Bb@remote.test")[0] == 250
