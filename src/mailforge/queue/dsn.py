"""Delivery status notifications: RFC 3464 multipart/report messages, RFC 3461 rules.

A report is built in the queue's own form (LF line ends, see spool.py) so that it is queued
and delivered like any message. Reports about non-ASCII addresses use RFC 6533's
message/global-delivery-status and message/global.
"""

from __future__ import annotations

import email.utils
import re
import secrets
from dataclasses import dataclass

# RFC 3461 4.1: the NOTIFY keywords; NEVER stands alone.
NOTIFY_KEYWORDS = ("SUCCESS", "FAILURE", "DELAY")
NEVER = "NEVER"
RET_VALUES = ("FULL", "HDRS")
# RFC 3461 4.4: ENVID is at most 100 characters; ORCPT's address part at most 500.
MAX_ENVID = 100
MAX_ORCPT = 500
# A returned message bigger than this comes back as its headers only (Postfix's
# bounce_size_limit): a bounce must not double the load a big message put on the sender.
RETURN_LIMIT = 50_000

# RFC 3464 2.1.2's address types: rfc822 holds ASCII addresses only, RFC 6533 3's utf-8 the rest.
RFC822, UTF8 = "rfc822", "utf-8"
FAILED, DELAYED, DELIVERED, RELAYED = "failed", "delayed", "delivered", "relayed"
EXPANDED = "expanded"
SUBJECTS = {
    FAILED: "Undelivered Mail Returned to Sender",
    DELAYED: "Delayed Mail (still being retried)",
    DELIVERED: "Successful Mail Delivery Report",
    RELAYED: "Successful Mail Delivery Report",
    EXPANDED: "Successful Mail Delivery Report",
}
EXPLANATIONS = {
    FAILED: "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients. It's attached below.",
    DELAYED: "Your message could not be delivered yet to one or more recipients.\n"
             "Delivery will be retried until the time given below; you need not\n"
             "resend it.",
    DELIVERED: "Your message was delivered to the destination mailbox(es) below.",
    RELAYED: "Your message was relayed to a mail server that does not send\n"
             "delivery reports; this is the last notice you will get about it.",
    EXPANDED: "Your message was delivered to the alias below, which passed it on to\n"
              "several addresses; you may still hear of failures among them.",
}
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
_XTEXT_HEX_BYTES = re.compile(rb"\+([0-9A-F]{2})")
# RFC 6533 3's EmbeddedUnicodeChar; ABNF's hex digits are case-insensitive.
_EMBEDDED_CHAR = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


class DSNParamError(ValueError):
    """A DSN parameter we refuse at receipt (the session answers 501)."""


def xtext_encode(text: str) -> str:
    """RFC 3461 4: '+' and '=' and bytes outside '!'..'~' become +XX."""
    return "".join(chr(b) if 33 <= b <= 126 and b not in (43, 61) else f"+{b:02X}"
                   for b in text.encode())


def xtext_decode(text: str, unitext: bool = False) -> str:
    """RFC 3461 4's xtext decoded; `unitext`: UTF-8 characters may stand as they are too, as
    in RFC 6533 3's utf-8-addr-unitext (its \\x{HEX} is utf8_addr_decode's)."""
    if (any(ord(c) < 33 or ord(c) == 127 or c == "=" or (ord(c) > 127 and not unitext)
            for c in text) or "+" in _XTEXT_HEX.sub("", text)):
        raise DSNParamError(f"bad xtext {text[:40]!r}")
    return _XTEXT_HEX_BYTES.sub(lambda m: bytes((int(m.group(1), 16),)), text.encode()).decode(
        "utf-8", "replace")


def utf8_addr_encode(address: str, seven_bit: bool) -> str:
    """RFC 6533 3: `address` as utf-8-addr-unitext, or as the 7-bit utf-8-addr-xtext
    (`seven_bit`) that also writes each non-ASCII character as \\x{HEX}. Controls, space, '\\',
    '+' and '=' become \\x{HEX} in both: they are no QCHAR."""
    return "".join(c if _qchar(c) or (not seven_bit and ord(c) > 127) else f"\\x{{{ord(c):02X}}}"
                   for c in address)


def _qchar(c: str) -> bool:
    return 33 <= ord(c) <= 126 and c not in "\\+="


def utf8_addr_decode(text: str) -> str:
    """A utf-8-addr-xtext or -unitext (RFC 6533 3) back to the address it encodes."""
    if "\\" in _EMBEDDED_CHAR.sub("", text):
        raise DSNParamError(f"bad utf-8 address {text[:40]!r}")
    return _EMBEDDED_CHAR.sub(_embedded_char, text)


def _embedded_char(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:  # a surrogate would not encode as UTF-8
        raise DSNParamError(f"\\x{{{match.group(1)}}} names no character")
    return chr(code)


def typed_address(address: str) -> str:
    """`addr-type;address`, as the envelope keeps an ORCPT, for an address of ours."""
    return f"{RFC822 if address.isascii() else UTF8};{address}"


def orcpt_param(orcpt: str, smtputf8: bool) -> str:
    """An envelope's `addr-type;address` as the value of ORCPT (RFC 3461 4.2): the address in
    xtext, or a utf-8 one (RFC 6533 3) as utf-8-addr-unitext in an SMTPUTF8 transaction and
    as the 7-bit utf-8-addr-xtext in any other."""
    addr_type, _, address = orcpt.partition(";")
    if addr_type == UTF8:
        return f"{UTF8};{utf8_addr_encode(address, seven_bit=not smtputf8)}"
    return f"{addr_type};{xtext_encode(address)}"


def _report_address(typed: str) -> str:
    """`addr-type;address` as a report's Original- or Final-Recipient field gives it: a utf-8
    address as utf-8-addr-unitext (RFC 6533 3), any other as it is (RFC 3464 2.3.1)."""
    addr_type, _, address = typed.partition(";")
    if addr_type == UTF8:
        address = utf8_addr_encode(address, seven_bit=False)
    return f"{addr_type}; {address}"


def parse_notify(value: str) -> str:
    keywords = [k.upper() for k in value.split(",")]
    if keywords == [NEVER]:
        return NEVER
    if not keywords or len(set(keywords)) != len(keywords) or not set(keywords) <= set(NOTIFY_KEYWORDS):
        raise DSNParamError("NOTIFY takes NEVER, or SUCCESS, FAILURE and DELAY joined by commas")
    return ",".join(k for k in NOTIFY_KEYWORDS if k in keywords)


def parse_orcpt(value: str, smtputf8: bool = False) -> str:
    """`addr-type;xtext` → `addr-type;address` (decoded, a utf-8 address's \\x{HEX} too), as
    the envelope keeps it. In an SMTPUTF8 transaction a utf-8 address may also come as
    utf-8-addr-unitext (RFC 6533 3): its non-ASCII characters as they are."""
    addr_type, sep, address = value.partition(";")
    if not sep or not addr_type or not address or len(address) > MAX_ORCPT:
        raise DSNParamError("ORCPT takes addr-type;address")
    utf8 = addr_type.lower() == UTF8
    if utf8 and not address.isascii() and not smtputf8:
        raise DSNParamError("a utf-8 ORCPT in UTF-8 needs SMTPUTF8; without it, write "
                            "each non-ASCII character as \\x{HEX}")
    decoded = xtext_decode(address, unitext=utf8)
    if utf8:
        decoded = utf8_addr_decode(decoded)
    # RFC 3461 4.2: printable characters only. A decoded CR or LF would end the
    # Original-Recipient line of a report and let the client write fields of its own.
    if not decoded.isprintable():
        raise DSNParamError("ORCPT's address holds control characters")
    return f"{addr_type.lower()};{decoded}"


def parse_envid(value: str) -> str:
    envid = xtext_decode(value)
    if len(envid) > MAX_ENVID:
        raise DSNParamError(f"ENVID is longer than {MAX_ENVID} characters")
    # RFC 3461 4.4: printable US-ASCII only; it is written as is into the report's
    # Original-Envelope-Id field, where a decoded line end would start a field of the client's.
    if not (envid.isascii() and envid.isprintable()):
        raise DSNParamError("ENVID must be printable US-ASCII once decoded")
    return envid


def parse_ret(value: str) -> str:
    if value.upper() not in RET_VALUES:
        raise DSNParamError("RET takes FULL or HDRS")
    return value.upper()


def wants(notify: str, event: str) -> bool:
    """Does a recipient's NOTIFY ask for a report of `event` (FAILURE, DELAY, SUCCESS)?
    Without NOTIFY, failures and delays are reported (RFC 3461 4.1)."""
    if not notify:
        return event in ("FAILURE", "DELAY")
    return event in notify.split(",")


def without_success(notify: str) -> str:
    """A NOTIFY that asked for SUCCESS, once that success is reported: NEVER if nothing is
    left (an empty NOTIFY would mean the default, FAILURE and DELAY)."""
    return ",".join(k for k in notify.split(",") if k != "SUCCESS") or NEVER


@dataclass
class RecipientStatus:
    recipient: str
    action: str  # FAILED, DELAYED, DELIVERED, RELAYED or EXPANDED
    status: str  # RFC 3463, e.g. "5.1.1"
    diagnostic: str = ""  # the remote reply ("550 5.1.1 ...") or our own reason
    remote_mta: str = ""
    orcpt: str = ""  # addr-type;address, when the client gave ORCPT
    # A delayed recipient's give-up time (RFC 3464 2.3.9 Will-Retry-Until), its own: a full
    # mailbox is given up on sooner than the rest (quota_full_bounce_after).
    retry_until: float | None = None


@dataclass
class Original:
    """What a report says about the message it reports on."""

    queue_id: str
    sender: str
    received_at: float
    message: bytes  # queue form, delivery headers stripped
    envid: str = ""
    ret: str = ""


def build_report(original: Original, statuses: list[RecipientStatus], reporting_mta: str,
                 now: float) -> bytes:
    """An RFC 3464 report in queue form (LF line ends), headers and all."""
    action = statuses[0].action
    utf8 = not all(s.recipient.isascii() and s.orcpt.isascii() for s in statuses)
    boundary = f"{original.queue_id}/{secrets.token_hex(8)}"
    date = email.utils.formatdate(now, localtime=True)
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{original.sender}>",
        f"Subject: {SUBJECTS[action]}",
        f"Date: {date}",
        f"Message-ID: <{original.queue_id}.{action}.{secrets.token_hex(4)}@{reporting_mta}>",
        "Auto-Submitted: auto-replied",  # RFC 3834: no vacation replies to this
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\n\tboundary="{boundary}"',
    ]
    parts = [
        "Content-Description: Notification\nContent-Type: text/plain; charset=utf-8\n\n"
        + _human_text(original, statuses, reporting_mta),
        "Content-Description: Delivery report\nContent-Type: "
        + ("message/global-delivery-status" if utf8 else "message/delivery-status")
        + "\n\n" + _machine_text(original, statuses, reporting_mta, now),
    ]
    returned = _returned_part(original, utf8, action)
    text = "\n".join(headers) + "\n\nThis is a MIME-encapsulated message.\n\n"
    text += "".join(f"--{boundary}\n{part}\n" for part in parts) + f"--{boundary}\n"
    return text.encode() + returned + f"\n--{boundary}--\n".encode()


def _human_text(original: Original, statuses: list[RecipientStatus], reporting_mta: str) -> str:
    action = statuses[0].action
    lines = [f"This is the mail system at host {reporting_mta}.", "",
             EXPLANATIONS[action], ""]
    for s in statuses:
        lines.append(f"<{s.recipient}>: {s.diagnostic or s.status}")
        if s.retry_until is not None:
            until = email.utils.formatdate(s.retry_until, localtime=True)
            lines.append(f"    retried until {until}")
    return "\n".join(lines) + "\n"


def _machine_text(original: Original, statuses: list[RecipientStatus], reporting_mta: str,
                  now: float) -> str:
    fields = [f"Reporting-MTA: dns; {reporting_mta}", f"X-Mailforge-Queue-ID: {original.queue_id}"]
    if original.envid:
        fields.append(f"Original-Envelope-Id: {original.envid}")
    fields.append(f"Arrival-Date: {email.utils.formatdate(original.received_at, localtime=True)}")
    blocks = ["\n".join(fields)]
    for s in statuses:
        block = []
        if s.orcpt:
            block.append(f"Original-Recipient: {_report_address(s.orcpt)}")
        block += [f"Final-Recipient: {_report_address(typed_address(s.recipient))}",
                  f"Action: {s.action}", f"Status: {s.status}"]
        if s.remote_mta:  # its host name: the address and port are for our logs
            block.append(f"Remote-MTA: dns; {s.remote_mta.split('[')[0]}")
        if s.diagnostic and s.remote_mta:
            block.append(f"Diagnostic-Code: smtp; {_one_line(s.diagnostic)}")
        elif s.diagnostic:
            block.append(f"X-Mailforge-Reason: {_one_line(s.diagnostic)}")
        block.append(f"Last-Attempt-Date: {email.utils.formatdate(now, localtime=True)}")
        if s.retry_until is not None:
            until = email.utils.formatdate(s.retry_until, localtime=True)
            block.append(f"Will-Retry-Until: {until}")
        blocks.append("\n".join(block))
    return "\n\n".join(blocks) + "\n"


def _returned_part(original: Original, utf8: bool, action: str) -> bytes:
    """The original message (RET=FULL, the default for failures) or its headers."""
    message = original.message
    end = message.find(b"\n\n")
    header = message if end < 0 else message[:end + 1]
    # RFC 6533 4 (RFC 6532 3.7): UTF-8 header fields may travel only in message/global and
    # message/global-headers; message/rfc822 and text/rfc822-headers hold ASCII header fields.
    utf8 = utf8 or not header.isascii()
    full = (original.ret == "FULL" or (not original.ret and action == FAILED))
    if full and len(message) <= RETURN_LIMIT:
        kind = "message/global" if utf8 else "message/rfc822"
        description = "Undelivered Message" if action == FAILED else "Message"
        content = message
    else:
        kind = "message/global-headers" if utf8 else "text/rfc822-headers"
        description, content = "Message Headers", header
    encoding = "" if content.isascii() else "Content-Transfer-Encoding: 8bit\n"
    head = f"Content-Description: {description}\nContent-Type: {kind}\n{encoding}\n"
    return head.encode() + content.rstrip(b"\n") + b"\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())
