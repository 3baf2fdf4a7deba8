"""The JSON API under /api/, for scripts: the pages' actions (operations.py) with a bearer
token (`mailforge admin token NAME`) instead of the session cookie. Answers are JSON; a
refused action is {"error": "..."} with 400 (bad input, a null among them), 403 (not yours)
or 503 (the supervisor or the accounts database did not answer)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..config_edit import form_text
from ..errors import MailforgeError
from .link import SupervisorUnavailable
from .web import actor_of, console_of, page_number, refusal

routes = web.RouteTableDef()


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_routes(routes)


async def call(request: web.Request, action: Callable[..., Any], *args: Any) -> web.Response:
    try:
        result = await console_of(request).blocking(action, actor_of(request), *args)
    except MailforgeError as exc:
        error, status = refusal(request, exc)
        return web.json_response({"error": error}, status=status)
    except SupervisorUnavailable as exc:
        return web.json_response({"error": str(exc)}, status=503)
    if isinstance(result, str):
        result = {"done": result}
    return web.json_response(result, dumps=lambda value: json.dumps(value, default=_plain))


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


async def body(request: web.Request, lists: bool = False) -> dict[str, Any]:
    """The request's JSON object; `lists`: its values may be lists (the services' settings)."""
    try:
        data = await request.json()
    except ValueError:
        raise _bad_body("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise _bad_body("the body must be a JSON object")
    # The actions take text: str(None) would store "None" (as a password, an APOP secret, a
    # domain...). A field is given as a value or left out; null is neither.
    nulls = [key for key, value in data.items() if value is None]
    if nulls:
        raise _bad_body(f"{', '.join(nulls)}: null is not a value; give one or leave the field out")
    # Nor a list or an object where the action takes text: str(["pw"]) would be the password.
    nested = [key for key, value in data.items()
              if isinstance(value, dict) or (isinstance(value, list) and not lists)]
    if nested:
        raise _bad_body(f"{', '.join(nested)}: a JSON {'object' if lists else 'list or object'} "
                        "is not a value here; give text or a number")
    return data


def _bad_body(error: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": error}), content_type="application/json")


@routes.get("/api/status")
async def status(request: web.Request) -> web.Response:
    ops = console_of(request).ops
    return await call(request, lambda actor: {"status": ops.status(actor), "blocks": ops.blocks(actor),
                                              "limited": ops.limited_senders(actor)})


@routes.get("/api/domains")
async def domains(request: web.Request) -> web.Response:
    return await call(request, lambda actor: {"domains": console_of(request).ops.domains(actor)})


@routes.post("/api/domains")
async def domain_add(request: web.Request) -> web.Response:
    return await call(request, console_of(request).ops.domain_add, str((await body(request)).get("name", "")))


@routes.delete("/api/domains/{name}")
async def domain_remove(request: web.Request) -> web.Response:
    return await call(request, console_of(request).ops.domain_remove, request.match_info["name"])


@routes.post("/api/domains/{name}/settings")
async def domain_settings(request: web.Request) -> web.Response:
    """{"public": "on" or "off"}, or {"messages": N, "interval": S, "at_limit": ...}: its limit."""
    data = {key: form_text(value) for key, value in (await body(request)).items()}
    return await call(request, console_of(request).ops.domain_settings, request.match_info["name"], data)


@routes.get("/api/users")
async def users(request: web.Request) -> web.Response:
    query = request.query
    return await call(request, console_of(request).ops.users, query.get("domain", ""),
                      query.get("q", ""), page_number(query.get("page", "")))


@routes.post("/api/users")
async def user_add(request: web.Request) -> web.Response:
    data = await body(request)
    return await call(request, console_of(request).ops.user_add, str(data.get("address", "")),
                      str(data.get("password", "")))


@routes.post("/api/users/{address}/{action}")
async def user_action(request: web.Request) -> web.Response:
    data = {key: str(value) for key, value in (await body(request)).items()}
    return await call(request, console_of(request).ops.user_action, request.match_info["address"],
                      request.match_info["action"], data)


@routes.get("/api/aliases")
async def aliases(request: web.Request) -> web.Response:
    return await call(request, lambda actor: {"aliases": console_of(request).ops.aliases(
        actor, request.query.get("domain", ""))})


@routes.post("/api/aliases")
async def alias_add(request: web.Request) -> web.Response:
    data = await body(request)
    return await call(request, console_of(request).ops.alias_add, str(data.get("source", "")),
                      str(data.get("target", "")))


@routes.get("/api/queue")
async def queue(request: web.Request) -> web.Response:
    query = request.query
    return await call(request, lambda actor: {"queue": console_of(request).ops.queue(
        actor, query.get("sender", ""), query.get("recipient", ""), query.get("state", ""))})


@routes.post("/api/queue/{action}")
async def queue_action(request: web.Request) -> web.Response:
    """flush, or retry/delete with {"id": ...}."""
    entry_id = str((await body(request)).get("id", ""))
    return await call(request, console_of(request).ops.queue_action, request.match_info["action"], entry_id)


@routes.get("/api/blocks")
async def blocks(request: web.Request) -> web.Response:
    return await call(request, lambda actor: {"blocks": console_of(request).ops.blocks(actor)})


@routes.delete("/api/blocks/{address}")
async def unblock(request: web.Request) -> web.Response:
    return await call(request, console_of(request).ops.unblock, request.match_info["address"])


@routes.post("/api/services/{section}")
async def configure(request: web.Request) -> web.Response:
    """The body's values as the form's text (strings) or as JSON of the key's type."""
    fields = {key: value if isinstance(value, str) else form_text(value)
              for key, value in (await body(request, lists=True)).items()}
    return await call(request, console_of(request).ops.configure, request.match_info["section"], fields)

