"""Real-world-shaped messages, in the CRLF form the store hands out, for the IMAP unit tests."""


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


# No MIME at all (RFC 822 as mailing list software still sends it).
PLAIN = crlf("""\
Return-Path: <owner@lists.example.org>
Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)
From: Terry Gray <gray@cac.washington.edu>
Subject: IMAP4rev1 WG mtg summary and minutes
To: imap@cac.washington.edu
cc: minutes@CNRI.Reston.VA.US,
 John Klensin <KLENSIN@MIT.EDU>
Message-Id: <B27397-0100000@cac.washington.edu>

Hello all,
the minutes are attached below.
""")

# What Thunderbird sends for an HTML message.
ALTERNATIVE = crlf("""\
From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.de>
To: "Smith, Anna" <anna@example.com>, bob@example.com
Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=
Date: Mon, 2 Mar 2026 10:00:00 +0100
Message-ID: <alt-1@example.de>
MIME-Version: 1.0
Content-Type: multipart/alternative;
 boundary="------------alt42"

This is a multi-part message in MIME format.
--------------alt42
Content-Type: text/plain; charset=UTF-8; format=flowed
Content-Transfer-Encoding: quoted-printable

Gr=C3=BC=C3=9Fe aus K=C3=B6ln, die Zugverbindung ist gebucht.
--------------alt42
Content-Type: text/html; charset=UTF-8
Content-Transfer-Encoding: 7bit

<html><body><p>Gr&uuml;&szlig;e aus K&ouml;ln</p></body></html>

--------------alt42--
""")

# Mixed: the alternative body, then a PDF named with RFC 2231 and an inline image.
MIXED = crlf("""\
From: Anna Smith <anna@example.com>
To: team: carol@example.com, Dave <dave@example.com>;, eve@example.com
Subject: Quarterly report
Date: Tue, 3 Mar 2026 09:15:00 +0000
Message-ID: <mixed-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain; charset=us-ascii

See the report attached.
--inner
Content-Type: text/html; charset=us-ascii

<p>See the report attached.</p>
--inner--

--outer
Content-Type: application/pdf;
 name*0*=UTF-8''Bericht%20Q1;
 name*1*=%E2%80%93final.pdf
Content-Disposition: attachment;
 filename="report.pdf"; size=12
Content-Transfer-Encoding: base64
Content-Description: The report
Content-Language: en, de

JVBERi0xLjQK
JSVFT0YK
--outer
Content-Type: image/png
Content-ID: <logo@example.com>
Content-Disposition: inline
Content-Location: http://example.com/logo.png
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--outer--
""")

# A forwarded message inside a message.
NESTED = crlf("""\
From: carol@example.com
To: anna@example.com
Subject: Fwd: Quarterly report
Date: Wed, 4 Mar 2026 12:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=b1

--b1
Content-Type: text/plain

Forwarding this.
--b1
Content-Type: message/rfc822

From: Anna Smith <anna@example.com>
Subject: Quarterly report
Message-ID: <mixed-2@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=b2

--b2
Content-Type: text/plain

Plain inner.
--b2
Content-Type: text/html

<b>HTML inner.</b>
--b2--

--b1--
""")

# Broken in the ways real mail is broken: a line that is no field, a folded line at the top,
# 8-bit in the header, a Content-Type without a subtype, no final CRLF.
MALFORMED = (b"  folded before any field\r\n"
             b"From: Mallory <mallory@example.net\r\n"
             b"this line has no colon\r\n"
             b"Subject: caf\xc3\xa9 \xff\r\n"
             b"Content-Type: text\r\n"
             b"\r\n"
             b"no final line end")

# A multipart whose closing delimiter never comes.
UNCLOSED = crlf("""\
Content-Type: multipart/mixed; boundary=zz

--zz
Content-Type: text/plain

first
--zz

second, to the end
""")
