"""The HTTP API: thin handlers over Controller operations; one middleware turns errors into JSON."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from aiohttp import web

from audio_library import ClipNotFoundError, DecodeError, Library, LibraryError, decode_file
from broadcaster.core.controller import Controller
from broadcaster.errors import AudioInputError, BroadcasterError
from broadcaster.protocol.codecs import codec_by_name

CONTROLLER = web.AppKey("controller", Controller)
LIBRARY = web.AppKey("library", Library)
MAX_UPLOAD = 64 * 1024 * 1024


@web.middleware
async def errors_middleware(request: web.Request, handler) -> web.StreamResponse:
    """Every BroadcasterError becomes {"error": code, "message": ...} with its HTTP status."""
    try:
        return await handler(request)
    except BroadcasterError as exc:
        return web.json_response(exc.to_dict(), status=exc.status)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app._client_max_size  # noqa: SLF001 - aiohttp keeps the limit only here
        return web.json_response(
            {"error": "too_large", "message": f"the upload is larger than the limit of "
                                              f"{limit / 2**20:g} MiB"}, status=413)


async def speakers(request: web.Request) -> web.Response:
    """GET /api/speakers: every speaker with health, and the counts."""
    return web.json_response(request.app[CONTROLLER].speakers())


async def zones(request: web.Request) -> web.Response:
    """GET /api/zones: the zone tree."""
    return web.json_response(request.app[CONTROLLER].site.to_tree())


async def events(request: web.Request) -> web.Response:
    """GET /api/events: recent events, newest last."""
    return web.json_response({"events": list(request.app[CONTROLLER].events)})


async def list_broadcasts(request: web.Request) -> web.Response:
    """GET /api/broadcasts: all broadcasts this run, newest first."""
    ctl = request.app[CONTROLLER]
    items = sorted(ctl.broadcasts.values(), key=lambda b: b.created_at, reverse=True)
    return web.json_response({"broadcasts": [b.to_dict() for b in items]})


async def get_broadcast(request: web.Request) -> web.Response:
    """GET /api/broadcasts/{id}."""
    return web.json_response(request.app[CONTROLLER].broadcast(request.match_info["id"]).to_dict())


async def stop_broadcast(request: web.Request) -> web.Response:
    """POST /api/broadcasts/{id}/stop."""
    b = await request.app[CONTROLLER].stop(request.match_info["id"])
    return web.json_response(b.to_dict())


async def create_broadcast(request: web.Request) -> web.Response:
    """POST /api/broadcasts?to=T&to=T&codec=pcmu&name=F with the audio file as the body,
    or ?clip=ID to play a clip from the audio library."""
    received = time.time()
    ctl = request.app[CONTROLLER]
    targets = request.query.getall("to", [])
    if not targets:
        raise BroadcasterError("say where to play: at least one 'to' target", code="no_target")
    codec = codec_by_name(request.query.get("codec", "pcmu"))
    ctl.site.resolve_many(targets)  # unknown targets fail before the upload is decoded
    clip = request.query.get("clip")
    if clip:
        try:
            pcm = await asyncio.to_thread(request.app[LIBRARY].pcm, clip, codec.rate)
            title = (await asyncio.to_thread(request.app[LIBRARY].get, clip)).title
        except LibraryError as exc:
            raise BroadcasterError(str(exc), code=exc.code,
                                   status=404 if isinstance(exc, ClipNotFoundError) else 422)
        b = await ctl.play(pcm, targets, codec=codec.name, source=f"clip {clip} {title}",
                           priority=request.query.get("priority", "announcement"),
                           owner=request.query.get("owner", "api"), requested_at=received)
        return web.json_response(b.to_dict(), status=201)
    name = Path(request.query.get("name", "upload")).name
    data = await request.read()
    if not data:
        raise AudioInputError(f"{name}: the upload is empty")
    with tempfile.NamedTemporaryFile(suffix="-" + name[-40:]) as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            pcm = await asyncio.to_thread(decode_file, tmp.name, codec.rate)
        except DecodeError as exc:
            raise AudioInputError(f"{name}: {exc}".replace(tmp.name, name)) from None
    b = await ctl.play(pcm, targets, codec=codec.name, source=name,
                       priority=request.query.get("priority", "announcement"),
                       owner=request.query.get("owner", "api"), requested_at=received)
    return web.json_response(b.to_dict(), status=201)


def make_app(controller: Controller, max_upload: int = MAX_UPLOAD) -> web.Application:
    """The aiohttp application for a controller."""
    app = web.Application(middlewares=[errors_middleware], client_max_size=max_upload)
    app[CONTROLLER] = controller
    app[LIBRARY] = Library(controller.config.data_dir)
    app.router.add_get("/api/speakers", speakers)
    app.router.add_get("/api/zones", zones)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/broadcasts", list_broadcasts)
    app.router.add_post("/api/broadcasts", create_broadcast)
    app.router.add_get("/api/broadcasts/{id}", get_broadcast)
    app.router.add_post("/api/broadcasts/{id}/stop", stop_broadcast)
    return app
