"""`bench.load` against a server it did not start: the --host options, the Target they make,
and the TLS and AUTH steps the load clients take when that Target asks for them."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ssl
from collections.abc import Iterator

from bench import peers
from bench.wire import expect, pop3_ok

# The IANA ports: (plain or STARTTLS, implicit TLS).
DEFAULT_PORTS = {"smtp": (25, 465), "pop3": (110, 995), "imap": (143, 993)}
# Stands for the client's number (1, 2, ...) in --user, so that each client has its own
# account (POP3 locks a maildrop per session; IMAP clients EXPUNGE their own messages).
CLIENT_NUMBER = "{n}"


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "another server", "load --host instead of starting the peers (no server CPU column)")
    group.add_argument("--host", help="the server to load")
    group.add_argument("--port", type=int, help="its port (default: the protocol's IANA port)")
    group.add_argument("--user", default="",
                       help=f"login, or the SMTP AUTH identity; {CLIENT_NUMBER} in it becomes "
                            "the client's number, giving each client its own account")
    group.add_argument("--password", default="")
    secure = group.add_mutually_exclusive_group()
    secure.add_argument("--tls", action="store_true", help="implicit TLS from the connect")
    secure.add_argument("--starttls", action="store_true",
                        help="upgrade with STARTTLS (SMTP, IMAP) or STLS (POP3)")
    group.add_argument("--insecure", action="store_true",
                       help="do not verify the server's certificate (self-signed test servers)")
    group.add_argument("--auth", action="store_true", help="SMTP: AUTH PLAIN as --user first")
    group.add_argument("--rcpt", help="SMTP: the recipient (default: --user)")


def check(opts: argparse.Namespace, ap: argparse.ArgumentParser) -> None:
    """Errors in the --host options that argparse alone cannot see."""
    if opts.host is None:
        if opts.port or opts.tls or opts.starttls or opts.auth or opts.rcpt:
            ap.error("--port, --tls, --starttls, --auth and --rcpt need --host")
        return
    if opts.command not in DEFAULT_PORTS:
        ap.error(f"--host is not supported for {opts.command}")
    needs_login = opts.command != "smtp" or opts.auth
    if needs_login and not (opts.user and opts.password):
        ap.error("--user and --password are needed to log in")
    if opts.command == "smtp" and not (opts.rcpt or opts.user):
        ap.error("--rcpt (or --user) is needed: whom to send to")


def client_users(user: str, clients: int) -> tuple[str, ...]:
    return tuple(user.replace(CLIENT_NUMBER, str(n)) for n in range(1, clients + 1))


def ssl_context(insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def target(opts: argparse.Namespace) -> peers.Target:
    mode = "tls" if opts.tls else "starttls" if opts.starttls else "plain"
    port = opts.port or DEFAULT_PORTS[opts.command][mode == "tls"]
    users = client_users(opts.user, opts.clients)
    return peers.Target(f"{opts.host}:{port}", opts.host, port, opts.rcpt or users[0], 0, None,
                        info=f"another server, {mode}" + (", AUTH PLAIN" if opts.auth else ""),
                        users=users, password=opts.password, tls_mode=mode,
                        ssl_context=None if mode == "plain" else ssl_context(opts.insecure),
                        auth=opts.auth)


def runner(opts: argparse.Namespace):
    """A bench.load Runner for --host: nothing to start or stop."""
    @contextlib.contextmanager
    def run() -> Iterator[peers.Target]:
        yield target(opts)
    return run


def sender(target: peers.Target, default: str) -> bytes:
    """Submission servers take mail only from the address the client logged in as."""
    return (target.users[0] if target.auth else default).encode()


async def open_stream(target: peers.Target, limit: int = 2 ** 16
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    tls = target.ssl_context if target.tls_mode == "tls" else None
    return await asyncio.open_connection(target.host, target.port, limit=limit, ssl=tls)


async def upgrade(writer: asyncio.StreamWriter, target: peers.Target) -> None:
    await writer.start_tls(target.ssl_context, server_hostname=target.host)


async def smtp_prepare(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       target: peers.Target, ehlo: list[bytes], client_name: bytes) -> list[bytes]:
    """STARTTLS and AUTH when the target asks for them; the EHLO reply that holds afterwards."""
    if target.tls_mode == "starttls":
        writer.write(b"STARTTLS\r\n")
        await expect(reader, 220, "STARTTLS")
        await upgrade(writer, target)
        # RFC 3207 4.2: what the server said before TLS no longer holds.
        writer.write(b"EHLO %s\r\n" % client_name)
        ehlo = await expect(reader, 250, "EHLO after STARTTLS")
    if target.auth:
        secret = base64.b64encode(b"\0%s\0%s" % (target.users[0].encode(), target.password.encode()))
        writer.write(b"AUTH PLAIN %s\r\n" % secret)
        await expect(reader, 235, "AUTH")
    return ehlo


async def pop3_prepare(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       target: peers.Target) -> None:
    if target.tls_mode == "starttls":
        writer.write(b"STLS\r\n")
        await pop3_ok(reader, "STLS")
        await upgrade(writer, target)
