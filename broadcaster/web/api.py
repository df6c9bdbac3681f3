"""The HTTP API: routes generated from the command registry; one middleware turns errors into JSON.

A handler only translates: path, query and JSON body become the command's input; an audio body
is spooled to a temporary file within the size limit (never held whole in memory); a live WAV
body feeds a LiveSource as it arrives. Every error is {"error": code, "message": ...}; anything
unexpected is logged and answered 500 without internals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

import broadcaster.core.account_commands  # noqa: F401 - registers the account commands
import broadcaster.core.operations  # noqa: F401 - registers the commands
import broadcaster.scheduler.operations  # noqa: F401 - registers the schedule commands
from broadcaster import jsonio
from broadcaster.access.principal import Principal
from broadcaster.core.broadcast import ACTIVE
from broadcaster.core.commands import REGISTRY, Spec, call
from broadcaster.core.services import Services
from broadcaster.errors import BroadcasterError, InvalidInput, NotFound
from broadcaster.sources.live import LiveSource, WavStreamParser
from broadcaster.web.access import COOKIE, clear_session, make_middleware, set_session

log = logging.getLogger(__name__)
SERVICES = web.AppKey("services", Services)
MAX_UPLOAD_KEY = web.AppKey("max_upload", int)
PRINCIPAL = web.RequestKey("principal", Principal)  # set by the access middleware
MAX_UPLOAD = 64 * 1024 * 1024
MAX_JSON = 1024 * 1024


@web.middleware
async def timing_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """`Server-Timing: app;dur=…` (ms) on every answer not yet sent: how long the controller
    took, apart from the network and the client (a console's devtools show it; the
    benchmarks report it beside what their client saw)."""
    t0 = time.perf_counter()
    resp = await handler(request)
    if not resp.prepared:  # a stream (events, paging) has sent its headers already
        resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.2f}"
    return resp


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error becomes {"error": code, "message": ...} with its HTTP status; never a trace."""
    try:
        return await handler(request)
    except BroadcasterError as exc:
        return web.json_response(exc.to_dict(), status=exc.status)
    except web.HTTPRequestEntityTooLarge:
        return _too_large(request.app)
    except web.HTTPException as exc:
        if exc.status >= 400:
            return web.json_response(
                {
                    "error": exc.reason.lower().replace(" ", "_"),
                    "message": f"{exc.reason}: {request.method} {request.path}",
                },
                status=exc.status,
                headers={k: v for k, v in exc.headers.items() if k == "Allow"},
            )
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return web.json_response(
            {
                "error": "internal",
                "message": "the controller failed on this "
                "request; it is logged, and the controller keeps serving",
            },
            status=500,
        )


def _too_large(app: web.Application) -> web.Response:
    limit = app[MAX_UPLOAD_KEY]
    return web.json_response(
        {
            "error": "too_large",
            "message": f"the upload is larger than the limit of {limit / 2**20:g} MiB",
        },
        status=413,
    )


def principal_of(request: web.Request) -> Principal:
    """Who is asking: set by the access middleware; anonymous on public routes; the system
    itself on a controller run without accounts (tests of other parts)."""
    p = request.get(PRINCIPAL)
    if p is not None:
        return p
    services = request.app[SERVICES]
    if services.accounts is None:
        return Principal.system(services.controller.site.root.id, origin=request.remote or "")
    return Principal("(anonymous)", "", "operator", request.remote or "", "anonymous")


def _raw_input(request: web.Request, spec: Spec, body: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = dict(body)
    for k in set(request.query):
        vals = request.query.getall(k)
        raw[k] = vals if len(vals) > 1 or k in _list_fields(spec) else vals[0]
    raw.update(request.match_info)
    return raw


def _list_fields(spec: Spec) -> set[str]:
    import dataclasses

    if spec.input is None:
        return set()
    return {f.name for f in dataclasses.fields(spec.input) if "list" in str(f.type)}


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body or request.content_type != "application/json":
        return {}
    data = await request.content.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise InvalidInput("the JSON body is larger than 1 MiB", code="too_large", status=413)
    if not data:
        return {}
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the body is not valid JSON", code="bad_json") from None
    if not isinstance(obj, dict):
        raise InvalidInput("the JSON body must be an object", code="bad_json")
    return obj


async def _spool(request: web.Request, limit: int) -> Path | None:
    """Write an audio body to a temporary file, refusing it past `limit` bytes."""
    if not request.can_read_body and not request.query.get("name"):
        return None
    tmp = tempfile.NamedTemporaryFile(prefix="bc-upload-", delete=False)
    size = 0
    try:
        while chunk := await request.content.read(1 << 16):
            size += len(chunk)
            if size > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
            tmp.write(chunk)
        tmp.close()
    except BaseException:
        tmp.close()
        Path(tmp.name).unlink(missing_ok=True)
        raise
    return Path(tmp.name)  # an empty file is the decoder's to refuse, naming the upload


async def _feed_live(request: web.Request, source: LiveSource, parser: WavStreamParser) -> None:
    """Feed the live source from the request body as it arrives; end it when the body ends."""
    try:
        while chunk := await request.content.readany():
            pcm = parser.feed(chunk)
            if pcm:
                source.push(pcm)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        source.end()


async def _live_source(request: web.Request) -> tuple[LiveSource, WavStreamParser]:
    """Read the stream's WAV header; the source is fed at the header's rate."""
    parser = WavStreamParser()
    pcm = b""
    while parser.rate is None or not parser.started:
        chunk = await request.content.readany()
        if not chunk:
            raise InvalidInput(
                "the live stream ended before its WAV header", code="bad_live_stream"
            )
        pcm = parser.feed(chunk)
    source = LiveSource(in_rate=parser.rate, label=f"live from {request.remote or 'client'}")
    source.push(pcm)
    return source, parser


def make_handler(spec: Spec) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An aiohttp handler that calls one command."""

    async def handler(request: web.Request) -> web.StreamResponse:
        services = request.app[SERVICES]
        principal = principal_of(request)
        upload: Any = None
        body: dict[str, Any] = {}
        feeder = None
        if spec.body == "audio" and request.content_type != "application/json":
            if request.query.get("live") in ("1", "true", "yes"):
                source, parser = await _live_source(request)
                upload = source
                feeder = (source, parser)
            else:
                upload = await _spool(request, request.app[MAX_UPLOAD_KEY])
        else:
            body = await _json_body(request)
        try:
            if feeder is not None:
                source, parser = feeder
                result = await call(
                    spec.name, principal, services, _raw_input(request, spec, body), upload
                )
                await _feed_live(request, source, parser)
                bid = result["id"]
                while services.controller.broadcast(bid).state in ACTIVE:
                    await asyncio.sleep(0.05)
                result = services.controller.broadcast(bid).to_dict()
            else:
                extra = (
                    {"token_id": await _session_id(request)} if spec.name == "auth/logout" else {}
                )
                result = await call(
                    spec.name, principal, services, _raw_input(request, spec, body), upload, extra
                )
        finally:
            if isinstance(upload, Path):
                upload.unlink(missing_ok=True)
        if isinstance(result, bytes):
            return web.Response(
                body=result,
                status=spec.status,
                content_type=spec.returns,
                headers={"Cache-Control": "private, max-age=3600"},
            )
        session = result.pop("session", None) if spec.name == "auth/login" else None
        resp = web.Response(body=_json(result), status=spec.status, content_type="application/json")
        if session:
            set_session(resp, session, request.secure)
        if spec.name == "auth/logout":
            clear_session(resp)
        return resp

    handler.__doc__ = spec.summary
    return handler


def _json(result: Any) -> bytes:
    """A command's result as UTF-8 JSON (fast: the speaker list of a large site is big)."""
    return jsonio.dumps(result)


async def _session_id(request: web.Request) -> str | None:
    accounts = request.app[SERVICES].accounts
    secret = request.cookies.get(COOKIE) or request.headers.get("Authorization", "")[7:]
    if accounts is None or not secret:
        return None
    return await asyncio.to_thread(accounts.token_id_of, secret.strip())


async def _dial_in(request: web.Request) -> web.StreamResponse:
    """A speaker's dial-in channel, served by our endpoint's driver (drivers/bcspeaker/dialin)."""
    ctl = request.app[SERVICES].controller
    driver = ctl.drivers.get("bcspeaker") if ctl is not None else None
    # web sits above the driver seam: the channel is found by name, not by the driver's class
    dialin = getattr(driver, "dialin", None)
    if dialin is None:
        raise NotFound("this controller drives none of our speakers", code="no_dial_in")
    return await dialin.handle(request)


def make_app(
    services: Services, max_upload: int = MAX_UPLOAD, allowed_origins: frozenset[str] = frozenset()
) -> web.Application:
    """The aiohttp application over a set of services."""
    app = web.Application(
        middlewares=[
            timing_middleware,
            errors_middleware,
            make_middleware(services, allowed_origins),
        ],
        client_max_size=MAX_JSON,
    )
    app[SERVICES] = services
    app[MAX_UPLOAD_KEY] = max_upload
    for spec in REGISTRY.values():
        app.router.add_route(spec.method, spec.path, make_handler(spec))
    from broadcaster.web import feed, openapi, paging  # they build on this module

    feed.add_routes(app)
    openapi.add_routes(app, feed.OPENAPI)
    paging.add_routes(app)
    app.router.add_get("/api/dial-in", _dial_in)  # speakers behind NAT connect out (no token)
    from broadcaster.web.console import add_routes as add_console  # the web console at /

    add_console(app)
    return app
