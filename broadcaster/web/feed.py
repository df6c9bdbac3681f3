"""The live event feed: Server-Sent Events at GET /api/events/stream, filtered to the caller's
scope.

Each event goes out as `id: <seq>` and `data: <json>`, so a browser's EventSource that reconnects
sends `Last-Event-ID` and gets what it missed from the bus's recent events. The scope filter is
the one `events/list` uses (`operations.event_visible`). A comment line every HEARTBEAT seconds
keeps proxies from closing an idle stream; the caller's token or session is checked again at
each heartbeat, so a revoked one ends the stream. The bus subscription lives exactly as long as
the client stays: it is removed when the client goes, falls too far behind, or the server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from aiohttp import web

from broadcaster.access import policy
from broadcaster.core.events import Event
from broadcaster.core.operations import event_visible
from broadcaster.errors import BroadcasterError
from broadcaster.web.access import authenticate
from broadcaster.web.api import SERVICES, principal_of
from broadcaster.web.openapi import responses

log = logging.getLogger(__name__)
PATH = "/api/events/stream"
HEARTBEAT = 15.0  # seconds between comment lines on an idle stream
POLL = 1.0  # how often a quiet stream looks whether its client is still there
BACKLOG = 1000  # events queued for one slow client before its stream is closed
FEEDS: web.AppKey[set[asyncio.Queue[Any]]] = web.AppKey("feeds", set)
_CLOSE = object()  # put on a feed's queue to end it (server shutdown)

OPENAPI = {
    PATH: {
        "get": {
            "operationId": "events_stream",
            "tags": ["events"],
            "summary": "A live feed of the events touching the caller's scope (SSE).",
            "description": "Each event is `id: <seq>` and `data: <json>` (the same JSON as GET "
            "/api/events). Send Last-Event-ID to get the recent events after that seq "
            "first. A comment line arrives every 15 s.",
            "parameters": [
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer"},
                }
            ],
            "responses": responses(
                200,
                {
                    "description": "the event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
            ),
        }
    }
}


def frame(ev: Event) -> bytes:
    """One event in the SSE wire form."""
    return f"id: {ev.seq}\ndata: {json.dumps(ev.to_dict(), ensure_ascii=False)}\n\n".encode()


def last_event_id(request: web.Request) -> int:
    """The seq a reconnecting client saw last (0: none, or a header that is not a number)."""
    raw = request.headers.get("Last-Event-ID", "").strip()
    return int(raw) if raw.isascii() and raw.isdigit() else 0


async def stream(request: web.Request) -> web.StreamResponse:
    """GET /api/events/stream: the caller's events as they happen."""
    services = request.app[SERVICES]
    ctl = services.controller
    principal = principal_of(request)
    mine = policy.scope_speakers(ctl.site, principal.scope)
    whole = principal.scope == ctl.site.root.id
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def deliver(ev: Event) -> None:
        if queue.qsize() >= BACKLOG:
            return  # the stream notices and closes; the client resumes with Last-Event-ID
        if event_visible(ev, mine, whole):
            queue.put_nowait(ev)

    unsubscribe = ctl.events.subscribe(deliver)  # before the replay: nothing falls between
    request.app[FEEDS].add(queue)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    try:
        await resp.prepare(request)
        seen = last_event_id(request)
        for ev in list(ctl.events.recent):
            if ev.seq > seen and event_visible(ev, mine, whole):
                await resp.write(frame(ev))
                seen = ev.seq
        await resp.write(b": connected\n\n")
        await _follow(request, resp, queue, seen)
    except (ConnectionError, asyncio.CancelledError):
        pass  # the client went
    finally:
        unsubscribe()
        request.app[FEEDS].discard(queue)
    return resp


async def _follow(
    request: web.Request, resp: web.StreamResponse, queue: asyncio.Queue, seen: int
) -> None:
    beat = time.monotonic() + HEARTBEAT
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        if queue.qsize() >= BACKLOG:
            return  # too far behind: close; the client reconnects from its Last-Event-ID
        try:
            item = await asyncio.wait_for(queue.get(), timeout=min(POLL, HEARTBEAT))
        except TimeoutError:
            if time.monotonic() >= beat:
                if not await _still_allowed(request):
                    return
                await resp.write(b": heartbeat\n\n")
                beat = time.monotonic() + HEARTBEAT
            continue
        if item is _CLOSE:
            return
        if item.seq > seen:
            await resp.write(frame(item))
            seen = item.seq


async def _still_allowed(request: web.Request) -> bool:
    """The stream's token or session is still valid (revocation ends an open stream too)."""
    accounts = request.app[SERVICES].accounts
    if accounts is None:
        return True
    try:
        await authenticate(request, accounts)
    except BroadcasterError:
        return False
    return True


async def _close_all(app: web.Application) -> None:
    feeds = app[FEEDS]
    for queue in list(feeds):
        with contextlib.suppress(Exception):
            queue.put_nowait(_CLOSE)


def add_routes(app: web.Application) -> None:
    """Serve the live feed on the app; open streams end when the server shuts down."""
    app[FEEDS] = set()
    app.router.add_get(PATH, stream)
    app.on_shutdown.append(_close_all)
