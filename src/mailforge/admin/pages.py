"""The console's pages: each a GET that shows and, where it changes something, a POST whose
form carries the CSRF token (web.authenticate checks it) and whose work is an Operations call.
After a POST the page is shown again with what happened, or why not."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import config_edit, tuning_report
from ..auth.api import AccountsUnavailable
from ..errors import MailforgeError
from ..queue.admin import DEFERRED, DELIVERING, SEGMENT, WAITING
from . import operations
from .history import CHARTED
from .link import SupervisorUnavailable
from .web import (ACCOUNTS_UNAVAILABLE, LOGIN_COOKIE, LOGIN_FORM_LIFETIME, SESSION_COOKIE,
                  actor_of, client_ip, console_of, log_unavailable_before_login, new_login_token,
                  page_number, refusal, render, same_secret, set_cookie)

routes = web.RouteTableDef()
QUEUE_STATES = (DEFERRED, WAITING, DELIVERING, SEGMENT)
# Sections the services form offers, in the order of the config file.
SERVICE_SECTIONS = ("smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps", "autoconfig",
                    "admin", "relay", "abuse")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_routes(routes)


async def perform(request: web.Request, call: Callable[..., str], *args: Any) -> tuple[str, str, int]:
    """Run an Operations action: (done message, error message, HTTP status)."""
    try:
        return await console_of(request).blocking(call, actor_of(request), *args), "", 200
    except MailforgeError as exc:
        return "", *refusal(request, exc)
    except SupervisorUnavailable as exc:
        return "", str(exc), 503


async def form_of(request: web.Request) -> dict[str, str]:
    return {key: value for key, value in (await request.post()).items() if isinstance(value, str)}


# -- login

@routes.get("/login")
async def login_page(request: web.Request, error: str = "", status: int = 200) -> web.Response:
    # The one the browser holds, if any: a second login page (another tab, the favicon's
    # redirect here) must not make the first one's form stale.
    token = request.cookies.get(LOGIN_COOKIE) or new_login_token()
    response = render(request, "login.html", status=status, login_token=token, error=error)
    set_cookie(response, LOGIN_COOKIE, token, LOGIN_FORM_LIFETIME)
    return response


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    console, ip = console_of(request), client_ip(request)
    form = await form_of(request)
    if not same_secret(form.get("login_token", ""), request.cookies.get(LOGIN_COOKIE, "")):
        return web.Response(status=403, text="login form expired or forged; reload the page")
    blocked = await console.ratekeeper.blocked_for(ip)
    if blocked:
        return _blocked(blocked)
    try:
        admin = await console.blocking(console.accounts.admins.check_admin_password,
                                       form.get("name", ""), form.get("password", ""))
        if admin is not None:
            secret, _ = await console.blocking(console.accounts.admins.open_session, admin.name,
                                               console.config.admin.session_lifetime)
            await console.blocking(console.accounts.admins.record, admin.name, ip, "login", "")
    except AccountsUnavailable as exc:
        log_unavailable_before_login(request, exc)
        return await login_page(request, ACCOUNTS_UNAVAILABLE, 503)
    if admin is None:
        verdict = await console.guard.count_failure("admin", ip, "failed console login")
        await asyncio.sleep(verdict.delay)
        if verdict.blocked_for:
            return _blocked(verdict.blocked_for)
        return await login_page(request, "wrong name or password", 401)
    operations.audit_log.info("admin %s from %s: login", admin.name, ip)
    response = web.HTTPSeeOther("/" if admin.is_system else "/users")
    set_cookie(response, SESSION_COOKIE, secret, console.config.admin.session_lifetime)
    response.del_cookie(LOGIN_COOKIE, path="/")
    raise response


def _blocked(seconds: float) -> web.Response:
    response = web.Response(status=403, text=f"too many failed logins from your address; "
                            f"blocked for {seconds:.0f} s")
    response.force_close()
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    console, actor = console_of(request), actor_of(request)
    await console.blocking(console.accounts.admins.close_session, request.cookies[SESSION_COOKIE])
    await console.blocking(console.accounts.admins.record, actor.admin.name, actor.client, "logout", "")
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


# -- dashboard

@routes.get("/")
async def dashboard(request: web.Request) -> web.Response:
    if not actor_of(request).admin.is_system:
        raise web.HTTPSeeOther("/users")
    return render(request, "dashboard.html", **await dashboard_data(request))


async def dashboard_data(request: web.Request) -> dict[str, Any]:
    """What the dashboard shows; the API's /api/status answers the same."""
    console, actor = console_of(request), actor_of(request)
    try:
        status, blocks, limited = await console.blocking(
            lambda: (console.ops.status(actor), console.ops.blocks(actor),
                     console.ops.limited_senders(actor)))
    except (SupervisorUnavailable, MailforgeError) as exc:
        status, blocks, limited = None, [], []
        error = str(exc)
    else:
        error = ""
    charts, totals = [], {}
    if console.history is not None:
        totals = await console.blocking(console.history.fresh)
        charts = [console.history.series(name) for name in CHARTED]
    now = datetime.datetime.now(datetime.timezone.utc)
    certificates = [{"key": key, "until": until.strftime("%Y-%m-%d"), "days": (until - now).days}
                    for key, until in console.prepared.certificates]
    return {"server": status, "error": error, "blocks": blocks, "limited": limited,
            "charts": charts, "totals": totals, "certificates": certificates,
            "keys": console.prepared.keys, "sampled": time.strftime("%H:%M:%S")}


# -- domains, mailboxes, aliases

@routes.get("/domains")
async def domains(request: web.Request, done: str = "", error: str = "", status: int = 200) -> web.Response:
    console = console_of(request)
    names = await console.blocking(console.ops.domains, actor_of(request))
    return render(request, "domains.html", status=status, domains=names, done=done, error=error)


@routes.post("/domains")
async def domain_add(request: web.Request) -> web.Response:
    form = await form_of(request)
    return await domains(request, *await perform(request, console_of(request).ops.domain_add,
                                                 form.get("name", "")))


@routes.post("/domains/remove")
async def domain_remove(request: web.Request) -> web.Response:
    form = await form_of(request)
    return await domains(request, *await perform(request, console_of(request).ops.domain_remove,
                                                 form.get("name", "")))


@routes.post("/domains/settings")
async def domain_settings(request: web.Request) -> web.Response:
    form = await form_of(request)
    return await domains(request, *await perform(request, console_of(request).ops.domain_settings,
                                                 form.get("name", ""), form))


@routes.get("/users")
async def users(request: web.Request, done: str = "", error: str = "", status: int = 200) -> web.Response:
    console, actor = console_of(request), actor_of(request)
    domain, search = request.query.get("domain", ""), request.query.get("q", "")
    page = page_number(request.query.get("page", "0"))
    try:
        listing = await console.blocking(console.ops.users, actor, domain, search, page)
    except MailforgeError as exc:
        error, status = refusal(request, exc)
        return render(request, "message.html", status=status, error=error)
    pages = max((listing.total + operations.PAGE_SIZE - 1) // operations.PAGE_SIZE, 1)
    names = await console.blocking(console.ops.domains, actor)
    return render(request, "users.html", status=status, listing=listing, domain=domain,
                  search=search, page=page, pages=pages, domains=names, done=done, error=error)


@routes.post("/users")
async def user_add(request: web.Request) -> web.Response:
    form = await form_of(request)
    return await users(request, *await perform(request, console_of(request).ops.user_add,
                                               form.get("address", ""), form.get("password", "")))


@routes.post("/users/action")
async def user_action(request: web.Request) -> web.Response:
    form = await form_of(request)
    return await users(request, *await perform(request, console_of(request).ops.user_action,
                                               form.get("address", ""), form.get("action", ""), form))


@routes.get("/aliases")
async def aliases(request: web.Request, done: str = "", error: str = "", status: int = 200) -> web.Response:
    console, actor = console_of(request), actor_of(request)
    domain = request.query.get("domain", "")
    try:
        rows = await console.blocking(console.ops.aliases, actor, domain)
    except MailforgeError as exc:
        error, status = refusal(request, exc)
        return render(request, "message.html", status=status, error=error)
    names = await console.blocking(console.ops.domains, actor)
    return render(request, "aliases.html", status=status, aliases=rows, domain=domain,
                  domains=names, done=done, error=error)


@routes.post("/aliases")
async def alias_add(request: web.Request) -> web.Response:
    form = await form_of(request)
    return await aliases(request, *await perform(request, console_of(request).ops.alias_add,
                                                 form.get("source", ""), form.get("target", "")))


@routes.post("/aliases/remove")
async def alias_remove(request: web.Request) -> web.Response:
    form = await form_of(request)
    return await aliases(request, *await perform(request, console_of(request).ops.alias_remove,
                                                 form.get("source", ""), form.get("target", "")))


# -- security, services, audit (system administrators)

@routes.get("/security")
async def security(request: web.Request, done: str = "", error: str = "", status: int = 200) -> web.Response:
    console, actor = console_of(request), actor_of(request)
    try:
        blocks, limited = await console.blocking(
            lambda: (console.ops.blocks(actor), console.ops.limited_senders(actor)))
    except (SupervisorUnavailable, MailforgeError) as exc:
        blocks, limited, error, status = [], [], str(exc), 503
    limits = await console.blocking(console.ops.send_limits, actor)
    return render(request, "security.html", status=status, blocks=blocks, limited=limited,
                  limits=limits, done=done, error=error)


@routes.post("/security/unblock")
async def unblock(request: web.Request) -> web.Response:
    form = await form_of(request)
    return await security(request, *await perform(request, console_of(request).ops.unblock,
                                                   form.get("address", "")))


@routes.get("/services")
async def services(request: web.Request, done: str = "", error: str = "", status: int = 200,
                   entered: dict[str, str] | None = None) -> web.Response:
    console = console_of(request)
    console.ops.require_system(actor_of(request))
    section = request.query.get("section", "smtp")
    if section not in SERVICE_SECTIONS:
        raise web.HTTPNotFound(text=f"no section [{section}] on this form")
    values = config_edit.form_fields(console.config, section)
    if entered:
        values.update(entered)  # a refused change is shown as typed, beside the reason
    return render(request, "services.html", status=status, sections=SERVICE_SECTIONS,
                  section=section, values=values, done=done, error=error)


@routes.post("/services")
async def services_save(request: web.Request) -> web.Response:
    form = await form_of(request)
    section = request.query.get("section", "smtp")
    fields = config_edit.changed_fields(console_of(request).config, section, form)
    done, error, status = await perform(request, console_of(request).ops.configure, section, fields)
    return await services(request, done, error, status, entered=None if done else fields)


@routes.get("/queue")
async def queue(request: web.Request, done: str = "", error: str = "", status: int = 200) -> web.Response:
    console, actor, query = console_of(request), actor_of(request), request.query
    filters = {key: query.get(key, "") for key in ("sender", "recipient", "state")}
    entries, badmail = await console.blocking(
        lambda: (console.ops.queue(actor, filters["sender"], filters["recipient"], filters["state"]),
                 console.ops.badmail(actor)))
    shown = None
    if query.get("show"):
        try:
            shown = await console.blocking(console.ops.queue_message, actor, query["show"])
        except MailforgeError as exc:
            error, status = str(exc), 400
    return render(request, "queue.html", status=status, entries=entries, badmail=badmail,
                  filters=filters, shown=shown, states=QUEUE_STATES, done=done, error=error)


@routes.post("/queue")
async def queue_action(request: web.Request) -> web.Response:
    form = await form_of(request)
    ops = console_of(request).ops
    if form.get("action") == "requeue":
        return await queue(request, *await perform(request, ops.badmail_requeue, form.get("id", "")))
    return await queue(request, *await perform(request, ops.queue_action, form.get("action", ""),
                                               form.get("id", "")))


@routes.get("/admins")
async def admins(request: web.Request, done: str = "", error: str = "", status: int = 200) -> web.Response:
    console = console_of(request)
    listing = await console.blocking(console.ops.admins, actor_of(request))
    return render(request, "admins.html", status=status, admins=listing, done=done, error=error)


@routes.post("/admins/action")
async def admin_action(request: web.Request) -> web.Response:
    form = await form_of(request)
    return await admins(request, *await perform(request, console_of(request).ops.admin_action,
                                                form.get("name", ""), form.get("action", ""), form))


@routes.get("/audit")
async def audit(request: web.Request) -> web.Response:
    console = console_of(request)
    entries = await console.blocking(console.ops.audit, actor_of(request))
    return render(request, "audit.html", entries=entries,
                  when=lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)))


@routes.get("/tuning")
async def tuning(request: web.Request) -> web.Response:
    console = console_of(request)
    report = await console.blocking(console.ops.tuning_report, actor_of(request))
    return render(request, "tuning.html", report=report,
                  directory=tuning_report.report_dir(console.config), config_file=console.config.path,
                  when=lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t)))


@routes.get("/tuning/plot.png")
async def tuning_plot(request: web.Request) -> web.Response:
    """Read at each request: a report may be made while the console runs."""
    console = console_of(request)
    body = await console.blocking(console.ops.tuning_plot, actor_of(request))
    if body is None:
        raise web.HTTPNotFound(text="no tuning plot was saved")
    return web.Response(body=body, content_type="image/png")
