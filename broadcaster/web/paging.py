"""Live paging over a WebSocket: GET /api/page (the wire format is docs/paging.md).

The client's first message says where to page; the page is then started through the same
command as every broadcast (`broadcasts/play`, live, class "live"), so scope and rank are
checked there, once. The speakers are armed at once and the stream runs (silence) from then
on; the client is told `ready` the moment its voice can go out — after the chime, if any — so
the per-speaker set-up never adds to the voice's delay. Binary messages carry s16le mono PCM;
the client hears of every change to its page (speakers playing, offline, refused, cut) as it
happens. The page ends on {"type": "end"}, when the socket closes, or when the audio stops for
`IDLE_FRAMES` (a client that vanished without closing). Every page is recorded as it was
played (levelled, chime included) into the audio library, tagged "live", and the audit row
links to the clip; live recordings older than the retention are purged daily.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from audio_library import Library, LibraryError
from broadcaster.access.principal import Principal
from broadcaster.core.commands import call
from broadcaster.core.events import Event
from broadcaster.core.services import Services
from broadcaster.errors import BroadcasterError, Forbidden, InvalidInput
from broadcaster.protocol.codecs import CODECS
from broadcaster.sources.leveller import Leveller
from broadcaster.sources.live import LiveSource
from broadcaster.sources.recorded import ChimeSource
from broadcaster.web import openapi
from broadcaster.web.access import COOKIE
from broadcaster.web.api import SERVICES, principal_of

log = logging.getLogger(__name__)
PATH = "/api/page"
START_TIMEOUT = 10.0  # seconds to send the first message after connecting
IDLE_FRAMES = 40  # 0.8 s without audio once the voice has begun: the client is gone
START_FRAMES = 250  # 5 s after `ready` without any audio: nobody is talking
MAX_BACKLOG = 6  # frames queued before the oldest are dropped (a burst after a stall)
MAX_MESSAGE = 1 << 16  # bytes in one WebSocket message (2 s of 16 kHz audio)
KEEP_DAYS = 90  # live recordings are kept this long (BROADCASTER_PAGE_KEEP_DAYS)
PURGE_EVERY = 86400.0
RECORDING_WAIT = 15.0  # seconds the socket stays open for the recording's clip id
TASKS = web.AppKey("page_tasks", set)
PRIORITIES = ("live", "emergency")  # what a page may be (emergency: the subdistrict only)


def _choices(names: Iterable[str]) -> str:
    """'a, b or c' from the names a field accepts (the tables, not a copy of them)."""
    *rest, last = list(names)
    return f"{', '.join(rest)} or {last}" if rest else last


@dataclass
class PageStart:
    """The client's first message."""

    to: list[str]
    chime: str | None = None
    rate: int = 16000
    codec: str = "pcmu"
    priority: str = "live"
    csrf: str | None = None


def parse_start(obj: Any) -> PageStart:
    """Check the first message; InvalidInput naming the field that is wrong."""
    if not isinstance(obj, dict):
        raise InvalidInput("the first message must be a JSON object with 'to'", code="bad_start")
    if obj.get("type", "start") != "start":
        raise InvalidInput("the first message must start the page (type 'start')", code="bad_start")
    to = obj.get("to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to or not all(isinstance(t, str) and t for t in to):
        raise InvalidInput(
            "'to' must name at least one speaker, village, area, group or the subdistrict",
            code="no_target",
        )
    chime = obj.get("chime")
    if chime is not None and not isinstance(chime, str):
        raise InvalidInput("'chime' must be a chime's name or null", code="bad_field")
    rate = obj.get("rate", 16000)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 8000 <= rate <= 48000:
        raise InvalidInput(
            f"'rate' must be the audio's sample rate, 8000-48000 Hz (got {rate!r})", code="bad_rate"
        )
    codec = obj.get("codec", "pcmu")
    if not isinstance(codec, str) or codec.lower() not in CODECS:
        raise InvalidInput(
            f"'codec' must be {_choices(CODECS)} (got {codec!r:.40})", code="bad_codec"
        )
    priority = obj.get("priority", "live")
    if priority not in PRIORITIES:
        raise InvalidInput(
            f"'priority' of a page must be {_choices(PRIORITIES)} (got {priority!r:.40})",
            code="bad_priority",
        )
    csrf = obj.get("csrf")
    return PageStart(
        list(to), chime, rate, codec.lower(), priority, csrf if isinstance(csrf, str) else None
    )


START_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["to"],
    "properties": {
        "type": {"type": "string", "enum": ["start"], "default": "start"},
        "to": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            "description": "speakers, villages, areas, groups or the subdistrict (at least one)",
        },
        "chime": {"type": "string", "nullable": True, "description": "a library chime first"},
        "rate": {"type": "integer", "minimum": 8000, "maximum": 48000, "default": 16000},
        "codec": {"type": "string", "enum": list(CODECS), "default": "pcmu"},
        "priority": {"type": "string", "enum": list(PRIORITIES), "default": "live"},
        "csrf": {"type": "string", "description": "a browser session's CSRF token"},
    },
}
OPENAPI = {
    PATH: openapi.websocket(
        "page",
        "Page live: start a page to targets, stream microphone audio, hear what happens.",
        "docs/paging.md",
        {
            "first": "client",
            "client_first_message": START_SCHEMA,
            "client_then": "binary s16le mono PCM at `rate` after `ready`; {type: end}",
            "server_messages": [
                "accepted",
                "speakers",
                "ready",
                "cut",
                "ended",
                "recorded",
                "error",
            ],
        },
        tags=["broadcasts"],
        parameters=[
            {
                "name": "csrf",
                "in": "query",
                "required": False,
                "description": "a browser session's CSRF token (or `csrf` in the first message)",
                "schema": {"type": "string"},
            }
        ],
    )
}


class Recording:
    """The page as played, written to a WAV file frame by frame (opened at the first frame)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="page-", suffix=".wav", dir=directory)
        os.close(fd)
        self.path = Path(name)
        self.rate = 0
        self.frames = 0
        self._wav: wave.Wave_write | None = None

    def write(self, pcm: bytes, rate: int) -> None:
        """One frame as handed to the speakers."""
        if self._wav is None:
            self.rate = rate
            self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - closed in close()
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(rate)
        self._wav.writeframesraw(pcm)
        self.frames += 1

    def close(self) -> None:
        """Finish the file."""
        if self._wav is not None:
            self._wav.close()
            self._wav = None


@dataclass
class _Snapshot:
    states: dict[str, str] = field(default_factory=dict)
    cut: dict[str, str] = field(default_factory=dict)


class PageSession:
    """One client's page, from its first message to the recording's clip id."""

    def __init__(
        self,
        request: web.Request,
        ws: web.WebSocketResponse,
        services: Services,
        principal: Principal,
    ) -> None:
        self.request, self.ws, self.svc, self.principal = request, ws, services, principal
        self.ctl = services.controller
        self.out: asyncio.Queue[dict | None] = asyncio.Queue()
        self.bid: str | None = None
        self.source: LiveSource | None = None
        self.recording: Recording | None = None
        self.ended = asyncio.Event()
        self.seen = _Snapshot()
        self._odd = b""
        self.first_audio_at: float | None = None

    async def run(self) -> None:
        """The whole page; errors go to the client as {"type": "error"}, never raised."""
        writer = asyncio.ensure_future(self._write())
        unsubscribe = self.ctl.events.subscribe(self._on_event)
        reader: asyncio.Task | None = None
        try:
            start = await self._start()
            if start is None:
                return
            reader = asyncio.ensure_future(self._read())
            await self.ended.wait()
            b = self.ctl.broadcast(self.bid)  # type: ignore[arg-type]
            self._send(_ended(b.to_dict(), self.source))
            clip = await self._keep(start)
            if clip is not None:
                self._send({"type": "recorded", "clip": clip})
        finally:
            unsubscribe()
            if self.source is not None:
                self.source.end("closed")
            if reader is not None:
                reader.cancel()
            self.out.put_nowait(None)
            await writer
            await self.ws.close()

    # --- start ------------------------------------------------------------------------------

    async def _start(self) -> PageStart | None:
        try:
            msg = await self.ws.receive(timeout=START_TIMEOUT)
        except TimeoutError:
            self._error(
                InvalidInput(f"no start message within {START_TIMEOUT:g} s", code="no_start")
            )
            return None
        if msg.type != WSMsgType.TEXT:
            self._error(
                InvalidInput(
                    "the first message must be JSON text starting the page", code="bad_start"
                )
            )
            return None
        try:
            start = parse_start(_json(msg.data))
            await self._check_csrf(start)
            self.source = self._make_source(start)
            self.recording = Recording(self.ctl.config.data_dir / "pages")
            raw = {"to": start.to, "codec": start.codec, "priority": start.priority, "live": True}
            result = await call("broadcasts/play", self.principal, self.svc, raw, self.source)
        except BroadcasterError as exc:
            self._error(exc)
            if self.recording is not None:
                self.recording.path.unlink(missing_ok=True)
            return None
        self.bid = result["id"]
        b = self.ctl.broadcast(self.bid)
        self._send(
            {
                "type": "accepted",
                "broadcast": self.bid,
                "priority": start.priority,
                "lead_ms": round((b.lead or 0.0) * 1000),  # chosen from the speakers' paths
                "codec": start.codec,
                "speakers": len(result["speakers"]),
            }
        )
        self._check(b)
        return start

    async def _check_csrf(self, start: PageStart) -> None:
        """A cookie session (a browser) must prove it is this controller's page: WebSockets
        carry no custom header, so the CSRF token comes in the query or the first message."""
        accounts = self.svc.accounts
        cookie = self.request.cookies.get(COOKIE)
        if (
            accounts is None
            or self.request.headers.get("Authorization", "").startswith("Bearer ")
            or not cookie
        ):
            return
        csrf = start.csrf or self.request.query.get("csrf", "")
        try:
            await asyncio.to_thread(accounts.check_csrf, cookie, csrf)
        except BroadcasterError:
            raise Forbidden(
                "missing or wrong CSRF token: a browser session sends it as "
                "?csrf= or in the start message",
                code="csrf_failed",
            ) from None

    def _make_source(self, start: PageStart) -> LiveSource:
        prefix = ChimeSource(self.svc.library, start.chime) if start.chime else None
        rec = self._record
        return LiveSource(
            in_rate=start.rate,
            label=f"page by {self.principal.name}",
            max_backlog=MAX_BACKLOG,
            leveller=Leveller(),
            prefix=prefix,
            gate=True,
            on_open=self._opened,
            recorder=rec,
            idle_frames=IDLE_FRAMES,
            start_frames=START_FRAMES,
        )

    def _record(self, pcm: bytes) -> None:
        if self.recording is not None and self.source is not None:
            self.recording.write(pcm, self.source.rate)

    def _opened(self) -> None:
        b = self.ctl.broadcasts.get(self.bid or "")
        self._send(
            {
                "type": "ready",
                "broadcast": self.bid,
                "lead_ms": round((b.lead if b and b.lead else 0.0) * 1000),
                "started_at": b.started_at if b else None,
            }
        )

    # --- audio in ---------------------------------------------------------------------------

    async def _read(self) -> None:
        """Audio and control from the client; the page's end when the socket closes."""
        assert self.source is not None
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    data = self._odd + msg.data
                    cut = len(data) & ~1
                    self._odd = data[cut:]
                    if self.first_audio_at is None and self.source.open:
                        self.first_audio_at = time.time()
                    self.source.push(data[:cut])
                elif msg.type == WSMsgType.TEXT:
                    self._control(msg.data)
                else:
                    break
        finally:
            self.source.end("closed")

    def _control(self, text: str) -> None:
        assert self.source is not None
        try:
            obj = _json(text)
        except InvalidInput as exc:
            self._error(exc)
            return
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "end":
            self.source.end("end")
        else:
            self._error(
                InvalidInput(
                    f'unknown message type {kind!r}; send binary audio or {{"type": "end"}}',
                    code="bad_message",
                )
            )

    # --- what happens, out ------------------------------------------------------------------

    def _on_event(self, ev: Event) -> None:
        if self.bid is None or ev.detail.get("broadcast") != self.bid:
            return
        b = self.ctl.broadcasts.get(self.bid)
        if b is None:
            return
        self._check(b)
        if ev.kind == "broadcast_ended":
            self.ended.set()

    def _check(self, b: Any) -> None:
        """Tell the client what changed since it was last told: speakers and cuts."""
        states = {sid: r.state for sid, r in b.results.items()}
        if states != self.seen.states and b.state != "starting":
            self.seen.states = states
            by_state: dict[str, list[str]] = {}
            for sid, st in sorted(states.items()):
                by_state.setdefault(st, []).append(sid)
            self._send(
                {
                    "type": "speakers",
                    "state": b.state,
                    "playing": by_state.get("playing", []),
                    "offline": by_state.get("offline", []),
                    "refused": {
                        sid: b.results[sid].error or st
                        for sid, st in states.items()
                        if st in ("refused", "unreachable")
                    },
                }
            )
        cuts = {sid: r.cut_by for sid, r in b.results.items() if r.cut_by}
        new = {sid: by for sid, by in cuts.items() if self.seen.cut.get(sid) != by}
        if new:
            self.seen.cut = cuts
            for by in sorted(set(new.values())):
                other = self.ctl.broadcasts.get(by)
                held = [r for r in b.results.values() if r.route is not None]
                self._send(
                    {
                        "type": "cut",
                        "by": by,
                        "priority": other.priority if other else None,
                        "owner": other.owner if other else None,
                        "speakers": sorted(s for s, x in new.items() if x == by),
                        "all": bool(held) and all(r.cut_by for r in held),
                    }
                )

    def _send(self, msg: dict) -> None:
        self.out.put_nowait(msg)

    def _error(self, exc: BroadcasterError) -> None:
        msg = {"type": "error", **exc.to_dict(), "status": exc.status}
        self._send(msg)

    async def _write(self) -> None:
        while (msg := await self.out.get()) is not None:
            if self.ws.closed:
                continue
            try:
                await self.ws.send_str(json.dumps(msg, ensure_ascii=False))
            except (ConnectionError, RuntimeError):
                pass  # the client has gone; the page goes on ending without it

    # --- kept -------------------------------------------------------------------------------

    async def _keep(self, start: PageStart) -> str | None:
        """Catalogue the recording and audit it (in the background if the client has gone)."""
        rec = self.recording
        if rec is None or self.bid is None:
            return None
        rec.close()
        task = asyncio.ensure_future(
            keep_recording(self.svc, self.principal, self.bid, rec, start.to)
        )
        tasks = self.request.app[TASKS]
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if self.ws.closed:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(task), RECORDING_WAIT)
        except TimeoutError:
            return None


async def keep_recording(
    svc: Services, who: Principal, bid: str, rec: Recording, targets: list[str]
) -> str | None:
    """Add a page's recording to the library (tag "live") and audit it; returns the clip id."""
    try:
        if rec.frames == 0:
            return None
        when = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
        title = f"Live page by {who.name} to {', '.join(targets)} at {when}"
        try:
            clip = await asyncio.to_thread(
                svc.library.add,
                rec.path,
                title=title,
                tags=["live"],
                added_by=who.name,
                original_name=f"page-{bid}.wav",
            )
        except LibraryError as exc:
            log.warning("recording of page %s not kept: %s", bid, exc)
            await svc.audit_now(
                "page_recorded",
                who,
                broadcast=bid,
                targets=targets,
                what={"clip": None, "error": str(exc)},
            )
            return None
        await svc.audit_now(
            "page_recorded",
            who,
            broadcast=bid,
            targets=targets,
            what={"clip": clip.id, "seconds": round(rec.frames * 0.02, 2)},
        )
        return clip.id
    finally:
        rec.path.unlink(missing_ok=True)


def purge_recordings(library: Library, keep_days: float, now: float | None = None) -> list[str]:
    """Remove live recordings (tag "live") older than keep_days; returns the removed ids."""
    cutoff = (time.time() if now is None else now) - keep_days * 86400
    gone = []
    for clip in library.search(tag="live"):
        try:
            added = datetime.fromisoformat(clip.added_at).timestamp()
        except ValueError:
            continue
        if added < cutoff:
            library.remove(clip.id)
            gone.append(clip.id)
    return gone


def keep_days() -> float:
    """How long live recordings are kept: $BROADCASTER_PAGE_KEEP_DAYS, else 90 days."""
    raw = os.environ.get("BROADCASTER_PAGE_KEEP_DAYS", "")
    try:
        return float(raw) if raw else float(KEEP_DAYS)
    except ValueError:
        log.warning(
            "BROADCASTER_PAGE_KEEP_DAYS=%r is not a number; keeping %d days", raw, KEEP_DAYS
        )
        return float(KEEP_DAYS)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidInput("the message is not valid JSON", code="bad_json") from None


def _ended(b: dict, source: LiveSource | None) -> dict:
    return {
        "type": "ended",
        "broadcast": b["id"],
        "state": b["state"],
        "reason": source.end_reason if source is not None else "",
        "error": b.get("error"),
        "summary": b["summary"],
        "source": b["source"],
    }


def add_routes(app: web.Application, keep: float | None = None) -> None:
    """Add GET /api/page (and its part of the OpenAPI document) and the daily purge of old
    live recordings to the app."""
    services = app[SERVICES]
    app[TASKS] = set()
    days = keep_days() if keep is None else keep

    async def page(request: web.Request) -> web.StreamResponse:
        principal = principal_of(request)
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=10.0)
        if not ws.can_prepare(request).ok:
            raise InvalidInput(
                f"{PATH} is a WebSocket: connect with Upgrade: websocket (docs/paging.md)",
                code="websocket_required",
            )
        await ws.prepare(request)
        await PageSession(request, ws, services, principal).run()
        return ws

    async def purge_daily(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    gone = await asyncio.to_thread(purge_recordings, services.library, days)
                    if gone:
                        log.info("purged %d live recording(s) older than %g days", len(gone), days)
                except Exception:  # the purge must never stop the controller
                    log.exception("purge of live recordings failed")
                await asyncio.sleep(PURGE_EVERY)

        task = asyncio.ensure_future(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.gather(*app[TASKS], return_exceptions=True)

    app.router.add_get(PATH, page)
    app.cleanup_ctx.append(purge_daily)
    if openapi.DOC in app:
        openapi.extend(app, OPENAPI)
