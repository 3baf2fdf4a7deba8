"""Async SMTP client for outbound delivery: one connection, several messages over it.

EHLO (HELO when EHLO is refused), STARTTLS: opportunistic (no certificate check, as Postfix's
`may` level: an active attacker can strip it, a passive one reads nothing) unless the host's
TLS policy (tlspolicy/: DANE, MTA-STS, [cluster] tls for an owner node) requires TLS and
checks it, AUTH for a smarthost, SIZE, 8BITMIME, SMTPUTF8 and DSN when offered, PIPELINING
of MAIL/RCPT/DATA (RFC 2920) when offered. Each recipient gets its own reply: its RCPT
refusal, or the answer to the message's final dot.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass, field

from ..protocols.connection.proxy import V2_LOCAL_HEADER
from ..protocols.connection.upstream import sent_past_starttls
from ..protocols.smtp import JUNK_PARAM
from ..tlspolicy.policy import HostSecurity, TLSPolicyFailure, handshake_failure
from .dsn import orcpt_param, xtext_encode
from .routing import Host

# RFC 3463 enhanced status code at the start of a reply's text.
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
# A reply may run to many lines; this bounds what a hostile server can make us hold.
MAX_REPLY_LINES = 100
MAX_LINE = 4096


class SMTPClientError(Exception):
    """The conversation cannot go on: connection refused, dropped, timed out or refused."""

    def __init__(self, text: str, reply: Reply | None = None, status: str = "") -> None:
        super().__init__(text)
        self.reply = reply
        # The enhanced status code a deferral or bounce for it carries.
        self.status = status or (reply.status if reply is not None else "4.4.1")

    @property
    def permanent(self) -> bool:
        return self.reply is not None and self.reply.code >= 500


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(line.strip() for line in self.lines)

    @property
    def status(self) -> str:
        """The enhanced status code (RFC 3463), or one made from the basic code."""
        match = _ENHANCED.match(self.lines[0] if self.lines else "")
        if match and match.group(1) == str(self.code)[0]:
            return ".".join(match.groups())
        return f"{self.code // 100}.0.0"

    def describe(self) -> str:
        return f"{self.code} {self.text}"


@dataclass
class Message:
    """One message to send over a connection, to the recipients routed there."""

    id: str
    sender: str
    recipients: list[str]
    data: bytes  # the message as on the wire, CRLF line ends, before dot-stuffing
    smtputf8: bool = False
    body_8bit: bool = False
    envid: str = ""
    ret: str = ""
    notify: dict[str, str] = field(default_factory=dict)
    orcpt: dict[str, str] = field(default_factory=dict)
    requiretls: bool = False  # RFC 8689: only over validated TLS to a REQUIRETLS server
    tls_optional: bool = False  # RFC 8689 5 "TLS-Required: No": TLS policy failures may pass
    junk: bool = False  # DMARC quarantined it here: an owner node files it as junk too


def dot_stuff(data: bytes) -> bytes:
    """DATA form: dots doubled at line starts, a final CRLF, then the end-of-data line."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


class SMTPClient:
    def __init__(self, helo_name: str, timeout: float,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.helo_name = helo_name
        self.timeout = timeout
        self.tls_context = tls_context
        self.extensions: dict[str, str] = {}
        self.host: Host | None = None
        self.tls = False
        self.security: HostSecurity | None = None  # the TLS requirement of this connection
        self.validated = False  # TLS met a policy that authenticates the server
        self.broken = False  # a read failed: the conversation is over, QUIT is pointless
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def label(self) -> str:
        """The host as DSNs and logs name it (RFC 3464 Remote-MTA)."""
        assert self.host is not None
        return self.host.label

    async def connect(self, host: Host, connect_timeout: float, use_tls: bool = True,
                      security: HostSecurity | None = None) -> None:
        """Greeted, and in TLS where offered; where `security` requires TLS, in TLS that meets
        it or TLSPolicyFailure."""
        self.host, self.security = host, security
        required = security is not None and bool(security.kind)
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(host.address, host.port, limit=MAX_LINE * 4),
                connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise SMTPClientError(f"cannot connect to {self.label}: {_reason(exc)}") from None
        if host.proxy_protocol:
            self._writer.write(V2_LOCAL_HEADER)
        greeting = await self._read("greeting")
        if greeting.code != 220:
            raise SMTPClientError(f"{self.label} greeted with {greeting.describe()}", greeting)
        await self._hello()
        if required and "STARTTLS" not in self.extensions:
            raise TLSPolicyFailure("starttls-not-supported", f"{self.label} offers no STARTTLS")
        if use_tls and self.tls_context is not None and "STARTTLS" in self.extensions:
            await self._starttls()

    async def _hello(self) -> None:
        reply = await self.command(f"EHLO {self.helo_name}")
        if reply.code == 250:
            self.extensions = _extensions(reply.lines[1:])
            return
        reply = await self.command(f"HELO {self.helo_name}")
        if reply.code != 250:
            raise SMTPClientError(f"{self.label} refused HELO: {reply.describe()}", reply)
        self.extensions = {}

    async def _starttls(self) -> None:
        security = self.security if self.security is not None and self.security.kind else None
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            if security is not None:
                raise TLSPolicyFailure("starttls-not-supported",
                                       f"{self.label} refused STARTTLS: {reply.describe()}")
            return  # offered but refused: go on in the clear, as opportunistic TLS does
        assert self._reader is not None and self._writer is not None and self.host is not None
        # Opportunistic TLS goes on regardless: such an attacker could strip it anyway.
        if security is not None and sent_past_starttls(self._reader):
            raise TLSPolicyFailure("validation-failure",
                                   f"{self.label} sent more after agreeing to STARTTLS")
        context = security.context if security is not None else self.tls_context
        name = (security.server_name if security is not None else "") or self.host.name
        try:
            await asyncio.wait_for(self._writer.start_tls(
                context, server_hostname=name), self.timeout)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self.broken = True
            text = f"TLS handshake with {self.label} failed: {_reason(exc)}"
            if security is not None:
                raise TLSPolicyFailure(handshake_failure(exc), text) from None
            raise TLSFailed(text) from None
        if security is not None:
            security.check(self._writer.get_extra_info("ssl_object"))
            self.validated = security.validated
        self.tls = True
        await self._hello()  # RFC 3207 4.2: forget what was learnt before TLS

    async def authenticate(self, user: str, password: str, require_tls: bool) -> None:
        if require_tls and not self.tls:
            raise SMTPClientError(f"{self.label} offers no TLS; not sending the smarthost password "
                                  "in the clear (smarthost_require_tls)")
        offered = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in offered:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            reply = await self.command(f"AUTH PLAIN {token}")
        elif "LOGIN" in offered:
            reply = await self.command("AUTH LOGIN")
            for secret in (user, password):
                if reply.code != 334:
                    break
                reply = await self.command(base64.b64encode(secret.encode()).decode())
        else:
            raise SMTPClientError(f"{self.label} offers neither AUTH PLAIN nor LOGIN")
        if reply.code != 235:
            # Kept temporary: a wrong password in our config is fixed by the operator, not the sender.
            raise SMTPClientError(f"{self.label} refused AUTH: {reply.describe()}")

    async def send(self, message: Message) -> dict[str, Reply]:
        """Each recipient's final reply. SMTPClientError when the connection failed."""
        mail = f"MAIL FROM:<{message.sender}>{self._mail_params(message)}"
        rcpts = [f"RCPT TO:<{r}>{self._rcpt_params(message, r)}" for r in message.recipients]
        if "PIPELINING" in self.extensions:
            self._write(*([mail] + rcpts + ["DATA"]))
            mail_reply = await self._read("MAIL FROM")
            rcpt_replies = [await self._read("RCPT TO") for _ in rcpts]
            data_reply = await self._read("DATA")
        else:
            mail_reply = await self.command(mail)
            if mail_reply.code != 250:
                return await self._abandon(message, mail_reply)
            rcpt_replies = [await self.command(line) for line in rcpts]
            if not any(r.code in (250, 251) for r in rcpt_replies):
                return await self._abandon(message, rcpt_replies=rcpt_replies)
            data_reply = await self.command("DATA")
        if mail_reply.code != 250:
            return await self._abandon(message, mail_reply)
        results = dict(zip(message.recipients, rcpt_replies))
        accepted = [r for r, reply in results.items() if reply.code in (250, 251)]
        if data_reply.code != 354:
            # Without an accepted recipient the server refuses DATA (RFC 2920 3.1): keep the
            # recipients' own refusals.
            for rcpt in accepted:
                results[rcpt] = data_reply
            await self._reset()
            return results
        assert self._writer is not None
        self._writer.write(dot_stuff(message.data))
        final = await self._read("end of DATA")
        for rcpt in accepted:
            results[rcpt] = final
        return results

    async def _abandon(self, message: Message, mail_reply: Reply | None = None,
                       rcpt_replies: list[Reply] | None = None) -> dict[str, Reply]:
        await self._reset()
        if mail_reply is not None:
            return dict.fromkeys(message.recipients, mail_reply)
        assert rcpt_replies is not None
        return dict(zip(message.recipients, rcpt_replies))

    async def _reset(self) -> None:
        reply = await self.command("RSET")
        if reply.code != 250:
            raise SMTPClientError(f"{self.label} refused RSET: {reply.describe()}", reply)

    def _mail_params(self, message: Message) -> str:
        params = ["REQUIRETLS"] if message.requiretls else []
        # Only to a mailbox's owner (its internal port), and one that knows the parameter: an
        # older node would refuse the message for it.
        if (message.junk and self.host is not None and self.host.proxy_protocol
                and JUNK_PARAM in self.extensions):
            params.append(JUNK_PARAM)
        if "SIZE" in self.extensions:
            params.append(f"SIZE={len(message.data)}")
        if message.body_8bit and "8BITMIME" in self.extensions:
            params.append("BODY=8BITMIME")
        if self._smtputf8(message):
            params.append("SMTPUTF8")
        if "DSN" in self.extensions:
            if message.ret:
                params.append(f"RET={message.ret}")
            if message.envid:
                params.append(f"ENVID={xtext_encode(message.envid)}")
        return "".join(" " + p for p in params)

    def _rcpt_params(self, message: Message, rcpt: str) -> str:
        if "DSN" not in self.extensions:
            return ""
        params = ""
        if message.notify.get(rcpt):
            params += f" NOTIFY={message.notify[rcpt]}"
        if message.orcpt.get(rcpt):
            params += f" ORCPT={orcpt_param(message.orcpt[rcpt], self._smtputf8(message))}"
        return params

    def _smtputf8(self, message: Message) -> bool:
        """Does the transaction for `message` declare SMTPUTF8 (RFC 6531 3.4)?"""
        return message.smtputf8 and "SMTPUTF8" in self.extensions

    def needs_utf8_refused(self, message: Message) -> bool:
        """RFC 6531 3.4: non-ASCII addresses cannot go to a server without SMTPUTF8."""
        addresses = [message.sender, *message.recipients]
        return "SMTPUTF8" not in self.extensions and not all(a.isascii() for a in addresses)

    async def command(self, line: str) -> Reply:
        self._write(line)
        return await self._read(line.split(" ", 1)[0])

    def _write(self, *lines: str) -> None:
        assert self._writer is not None
        self._writer.write("".join(line + "\r\n" for line in lines).encode())

    async def _read(self, step: str) -> Reply:
        assert self._reader is not None and self._writer is not None
        try:
            await asyncio.wait_for(self._writer.drain(), self.timeout)
            return await asyncio.wait_for(self._read_reply(), self.timeout)
        except TimeoutError:
            self.broken = True
            raise SMTPClientError(f"timeout waiting for {self.label} after {step}") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.broken = True
            raise SMTPClientError(f"lost connection with {self.label} after {step}: "
                                  f"{_reason(exc)}") from None

    async def _read_reply(self) -> Reply:
        assert self._reader is not None
        lines: list[str] = []
        code = 0
        while len(lines) < MAX_REPLY_LINES:
            raw = await self._reader.readuntil(b"\n")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                raise SMTPClientError(f"{self.label} sent a garbled reply: {line[:80]!r}")
            code = int(line[:3])
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(code, tuple(lines))
        raise SMTPClientError(f"{self.label} sent a reply of over {MAX_REPLY_LINES} lines")

    async def quit(self) -> None:
        """Polite end; the connection is closed whatever the server says."""
        try:
            if self._writer is not None and not self._writer.is_closing() and not self.broken:
                await self.command("QUIT")
        except SMTPClientError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class TLSFailed(SMTPClientError):
    """STARTTLS was offered but the handshake failed: worth one retry in the clear."""


def says_tls_not_required(data: bytes) -> bool:
    """RFC 8689 5: a "TLS-Required: No" header field in the message's header section."""
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"tls-required":
            return value.strip().lower() == b"no"
    return False


def _extensions(lines: tuple[str, ...] | list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        keyword, _, params = line.strip().partition(" ")
        found[keyword.upper()] = params
    return found


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed"
    return str(exc) or type(exc).__name__
