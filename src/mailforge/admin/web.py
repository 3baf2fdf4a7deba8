"""The console's aiohttp application: routes, who is asking (session cookie or API token),
CSRF, the security headers every answer carries, and page rendering.

Pages are server-rendered (Jinja2, autoescaped) and need no script; charts are inline SVG.
A page's form posts carry the session's CSRF token, checked here before any handler runs, so a
forged or tokenless post changes nothing and gets 403. The API (/api/) takes a bearer token
instead of the cookie, so a browser cannot be made to call it for someone logged in.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jinja2
from aiohttp import web

from ..auth.accounts import Accounts
from ..auth.api import AccountsUnavailable, AdminLogin
from ..config import Config
from ..errors import MailforgeError
from ..policy.abuse import AbuseGuard
from ..ratekeeper.client import RateKeeperClient
from .history import MetricsHistory
from .isolation import Prepared
from .operations import Actor, Forbidden, Operations

log = logging.getLogger("mailforge.admin")

SESSION_COOKIE = "mf_session"
# The login form's own CSRF token (double submit: cookie and field must match): a login forged
# from another site would sign the victim in as the attacker.
LOGIN_COOKIE = "mf_login"
LOGIN_FORM_LIFETIME = 900
HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png", ".svg": "image/svg+xml"}
# No inline script or style at all, nothing from elsewhere, never framed (clickjacking).
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
# One year, as browsers' preload lists ask; only sent over TLS.
HSTS = "max-age=31536000"
PUBLIC_PATHS = ("/login", "/static/")
# What a domain administrator is told when the accounts database fails: its error names the
# database's host, name or path, the server's business alone.
ACCOUNTS_UNAVAILABLE = "the accounts database is unavailable, try again"
LOGIN, ACTOR, STARTED = "login", "actor", "started"  # request keys
# Past any listing: 50 million mailboxes at operations.PAGE_SIZE a page.
MAX_PAGE = 1_000_000
T = TypeVar("T")


@dataclass
class Console:
    """What every request handler shares in one worker."""

    config: Config
    accounts: Accounts
    ops: Operations
    ratekeeper: RateKeeperClient
    guard: AbuseGuard
    executor: ThreadPoolExecutor
    history: MetricsHistory | None  # None while [metrics] listen is off
    prepared: Prepared

    async def blocking(self, call: Callable[..., T], *args: Any) -> T:
        """Run a database, file or supervisor call on the worker's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, call, *args)

    @property
    def secure(self) -> bool:
        return self.prepared.tls_context is not None


CONSOLE = web.AppKey("console", Console)


def make_app(console: Console) -> web.Application:
    from . import api, pages

    app = web.Application(middlewares=[authenticate], client_max_size=64 * 1024)
    app[CONSOLE] = console
    app.on_response_prepare.append(_security_headers)
    pages.add_routes(app.router)
    api.add_routes(app.router)
    app.router.add_get("/static/{name}", _static)
    return app


async def _static(request: web.Request) -> web.Response:
    """From memory (isolation.prepare read them): the package may be unreadable by now."""
    name = request.match_info["name"]
    body = console_of(request).prepared.static.get(name)
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type=STATIC_TYPES.get(Path(name).suffix, "application/octet-stream"),
                        headers={"Cache-Control": "max-age=3600"})


def templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             auto_reload=False)  # compiled once, before the privilege drop
    env.filters["points"] = chart_points
    return env


def chart_points(values: list[float], width: int = 360, height: int = 60) -> str:
    """An SVG polyline's points for `values`, scaled to the box (the highest at the top)."""
    top = max(values, default=0) or 1
    step = width / max(len(values) - 1, 1)
    return " ".join(f"{i * step:.1f},{height - value / top * (height - 2) - 1:.1f}"
                    for i, value in enumerate(values))


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]


def actor_of(request: web.Request) -> Actor:
    return request[ACTOR]


def refusal(request: web.Request, exc: MailforgeError) -> tuple[str, int]:
    """An action's refusal as (what the asker is shown, HTTP status): its reason, 400; the
    accounts database failing is 503, with its details for system administrators only and
    always in the log."""
    if not isinstance(exc, AccountsUnavailable):
        return str(exc), 400
    actor = actor_of(request)
    log.error("admin %s from %s: %s %s failed: %s", actor.admin.name, actor.client,
              request.method, request.path, exc)
    return (str(exc) if actor.admin.is_system else ACCOUNTS_UNAVAILABLE), 503


def log_unavailable_before_login(request: web.Request, exc: AccountsUnavailable) -> None:
    """The accounts database failed before the asker was known (a login, a session or token
    lookup): its details go to the log only."""
    log.error("console request from %s: %s %s failed: %s", client_ip(request), request.method,
              request.path, exc)


def unavailable_before_login(request: web.Request, exc: AccountsUnavailable) -> web.Response:
    """503 and ACCOUNTS_UNAVAILABLE, for a request the database failed before login."""
    log_unavailable_before_login(request, exc)
    if request.path.startswith("/api/"):
        return web.json_response({"error": ACCOUNTS_UNAVAILABLE}, status=503)
    return web.Response(status=503, text=ACCOUNTS_UNAVAILABLE)


def client_ip(request: web.Request) -> str:
    """The client's address, as the brute-force defence, the audit trail and the logs know
    it: the peer's; or, when plain HTTP serves the reverse proxy on this machine that does
    TLS ([admin] allow_plain_http, loopback only), the address that proxy appended to
    X-Forwarded-For (the last: a client can write any before it). Else every client would
    be the proxy's loopback address, exempt from blocking as the operator's own browser."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    address = peer[0] if peer else "unknown"
    proxy = _address(address)
    if console_of(request).secure or proxy is None or not proxy.is_loopback:
        return address
    forwarded = request.headers.getall("X-Forwarded-For", [])
    client = _address(forwarded[-1].rsplit(",", 1)[-1].strip()) if forwarded else None
    return str(client) if client is not None else address


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(HEADERS)
    started = request.get(STARTED)
    if started is not None:  # the time at the server, for bench.console and browsers' tools
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    if console_of(request).secure:
        response.headers["Strict-Transport-Security"] = HSTS


@web.middleware
async def authenticate(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    request[STARTED] = time.perf_counter()
    if request.path.startswith(PUBLIC_PATHS):
        return await handler(request)
    console = console_of(request)
    api = request.path.startswith("/api/")
    try:
        login = await (_bearer(request, console) if api else _session(request, console))
    except AccountsUnavailable as exc:
        return unavailable_before_login(request, exc)
    if login is None:
        if api:
            return web.json_response({"error": "a valid bearer token is required"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther("/login")
        return web.Response(status=403, text="not logged in")
    if not api and request.method == "POST" and not await _csrf_ok(request, login.csrf):
        log.warning("admin %s from %s: %s refused: CSRF token missing or wrong",
                    login.admin.name, client_ip(request), request.path)
        return web.Response(status=403, text="CSRF token missing or wrong; nothing was changed")
    request[LOGIN] = login
    request[ACTOR] = Actor(login.admin, client_ip(request))
    try:
        return await handler(request)
    except Forbidden as exc:
        log.warning("admin %s from %s: %s %s refused: %s", login.admin.name, client_ip(request),
                    request.method, request.path, exc)
        if api:
            return web.json_response({"error": str(exc)}, status=403)
        return web.Response(status=403, text=str(exc))


async def _csrf_ok(request: web.Request, expected: str) -> bool:
    given = (await request.post()).get("csrf", "")
    return isinstance(given, str) and same_secret(given, expected)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time, and never true for an empty secret."""
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


async def _session(request: web.Request, console: Console) -> AdminLogin | None:
    secret = request.cookies.get(SESSION_COOKIE, "")
    return await console.blocking(console.accounts.admins.session, secret) if secret else None


async def _bearer(request: web.Request, console: Console) -> AdminLogin | None:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret:
        return None
    login = await console.blocking(console.accounts.admins.token, secret.strip())
    if login is None:
        # A wrong token is a failed login: counted, tarpitted and blocked like a password.
        verdict = await console.guard.count_failure("admin", client_ip(request), "refused API token")
        await asyncio.sleep(verdict.delay)
    return login


def render(request: web.Request, name: str, status: int = 200, **context: Any) -> web.Response:
    login = request.get(LOGIN)
    text = console_of(request).prepared.templates.get_template(name).render(
        admin=login.admin if login else None, csrf=login.csrf if login else "",
        path=request.path, **context)
    return web.Response(text=text, status=status, content_type="text/html")


def page_number(text: str) -> int:
    """A listing's ?page=: 0 for what is not ASCII digits ("²" is a digit to str.isdigit, not
    to int), at most MAX_PAGE (an offset past SQLite's integers is an OverflowError)."""
    if not (text.isascii() and text.isdigit()):
        return 0
    digits = text.lstrip("0")
    return MAX_PAGE if len(digits) > len(str(MAX_PAGE)) else min(int(digits or 0), MAX_PAGE)


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def set_cookie(response: web.StreamResponse, name: str, value: str, max_age: float) -> None:
    """Secure, HttpOnly, SameSite=Strict: never over plain HTTP to the browser (a reverse proxy
    on loopback does TLS), never to a script, never on a request another site started."""
    response.set_cookie(name, value, max_age=int(max_age), path="/", secure=True, httponly=True,
                        samesite="Strict")
