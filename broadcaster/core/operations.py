"""Every operation of the command surface, each registered once with its typed input.

Permission checks live here and nowhere else: targets must lie inside the caller's scope, and
listings show only what is in it. Front ends (web, CLI over HTTP, demo, console) only translate.
"""

from __future__ import annotations

import asyncio
import io
import wave
from dataclasses import dataclass, field
from typing import Any

from audio_library import LibraryError, chime_names
from broadcaster.access import policy
from broadcaster.core.commands import Call, command
from broadcaster.core.events import Event
from broadcaster.core.player import TURN
from broadcaster.errors import AudioInputError, BroadcasterError, InvalidInput, NotFound
from broadcaster.protocol.codecs import codec_by_name
from broadcaster.sources.base import PcmSource
from broadcaster.sources.live import LiveSource
from broadcaster.sources.recorded import (
    ChimeSource,
    ClipSource,
    FileSource,
    TtsSource,
    library_error,
)
from broadcaster.sources.sequence import SequenceSource

# --- speakers, zones, events -----------------------------------------------------------------


@dataclass
class HealthIn:
    """`lag_seconds`: the loop lag over only the last so many seconds of its minute (1-60)."""

    lag_seconds: float | None = None


@command("health", "GET", "/api/health", HealthIn, public=True)
async def health(c: Call, q: HealthIn) -> dict:
    """Is the controller up: speakers online, broadcasts running, storage state."""
    ctl = c.services.controller
    if q.lag_seconds is not None and not 1 <= q.lag_seconds <= 60:
        raise InvalidInput("lag_seconds must be from 1 to 60", code="bad_field")
    return {
        "ok": True,
        "site": ctl.site.id,
        "speakers": ctl.registry.counts(),
        "broadcasts_running": len(ctl.players),
        "storage": c.services.storage_health(),
        "loop_lag": ctl.loopwatch.snapshot(q.lag_seconds),
        "gc_full": ctl.heap.snapshot(),
        "media_dropped": ctl.media_dropped(),
        "media_realtime": ctl.media_realtime(),
        "clock_wall_error_s": round(ctl.clock.wall_error(), 3),
    }


LIST_CHUNK = 200  # rows of the speaker list built per turn of the event loop (~0.3–1 ms)


@dataclass
class SpeakersIn:
    """Which speakers of the caller's scope to list: a zone, group or speaker under it, online or
    offline only, and a page (`offset`, `limit`) of the rows sorted by id."""

    zone: str | None = None
    online: bool | None = None
    offset: int = 0
    limit: int | None = None


@command("speakers/list", "GET", "/api/speakers", SpeakersIn)
async def speakers_list(c: Call, q: SpeakersIn) -> dict:
    """Speakers in the caller's scope with their health, and the counts of the whole scope.

    A district's thousand speakers make a list of 300 kB: a console shows a zone or a page of
    it (`zone`, `limit`), and `counts` always covers the whole scope."""
    ctl = c.services.controller
    mine = policy.scope_speakers(ctl.site, c.principal.scope)
    whole = c.principal.scope == ctl.site.root.id
    if q.offset < 0 or (q.limit is not None and q.limit < 1):
        raise InvalidInput("offset must be 0 or more and limit 1 or more", code="bad_field")
    # an unknown name is named (404), one outside the scope refused (403) as for a broadcast
    wanted = None if q.zone is None else policy.check_targets(ctl.site, c.principal, [q.zone])
    # (the registry's order, kept: a district's list is asked for often and changes little)
    every = ctl.registry.ordered()
    states = every if whole else [st for st in every if st.id in mine]
    assigned = [st for st in states if st.assigned]
    counts = {
        "online": sum(st.online for st in assigned),
        "total": len(assigned),
        "unassigned": len(states) - len(assigned),
    }
    rows = states
    if wanted is not None or q.online is not None:
        rows = [
            st
            for st in states
            if (wanted is None or st.id in wanted) and (q.online is None or st.online == q.online)
        ]
    matched = len(rows)
    rows = rows[q.offset :] if q.limit is None else rows[q.offset : q.offset + q.limit]
    speakers: list[dict] = []
    for i in range(0, len(rows), LIST_CHUNK):
        if i:
            await asyncio.sleep(0)  # a district's list is built in turns, never one long block
        # each row is built once and kept until its speaker changes (SpeakerState.row)
        speakers.extend(st.row() for st in rows[i : i + LIST_CHUNK])
    return {"counts": counts, "matched": matched, "speakers": speakers}


@command("zones/tree", "GET", "/api/zones")
async def zones_tree(c: Call) -> dict:
    """The zone tree (the whole site: names are not secret; scope limits what can be played)."""
    tree: dict = c.services.controller.site.to_tree()
    tree["scope"] = c.principal.scope
    return tree


@dataclass
class EventsIn:
    """Filter for the event list."""

    limit: int = 200
    since: int | None = None
    kind: list[str] = field(default_factory=list)


@command("events/list", "GET", "/api/events", EventsIn)
async def events_list(c: Call, q: EventsIn) -> dict:
    """Recent events touching the caller's scope, oldest first."""
    ctl = c.services.controller
    mine = policy.scope_speakers(ctl.site, c.principal.scope)
    out = []
    for ev in ctl.events.recent:
        if q.since is not None and ev.seq <= q.since:
            continue
        if q.kind and ev.kind not in q.kind:
            continue
        if event_visible(ev, mine, c.principal.scope == ctl.site.root.id):
            out.append(ev.to_dict())
    return {"events": out[-max(1, min(q.limit, 1000)) :]}


def event_visible(ev: Event, mine: frozenset[str], whole_site: bool) -> bool:
    """True when an event shows in a scope's listings and live feed: it concerns one of the
    scope's speakers (`mine`), or it concerns no speaker and the scope is the whole site."""
    sp = ev.speakers
    return bool(mine.intersection(sp)) if sp else whole_site


# --- broadcasts ------------------------------------------------------------------------------


@dataclass
class PlayIn:
    """What to play, where, how."""

    to: list[str] = field(default_factory=list)
    codec: str = "pcmu"
    priority: str = "announcement"
    clip: str | None = None
    tts: str | None = None
    chime: str | None = None  # a chime played before the audio
    repeat: int = 1
    name: str | None = None  # the uploaded file's name
    live: bool = False  # the body is a live WAV stream, played as it arrives
    queue: bool = False  # wait for speakers held by an equal or higher broadcast, not refuse


@command("broadcasts/play", "POST", "/api/broadcasts", PlayIn, body="audio", status=201)
async def broadcasts_play(c: Call, q: PlayIn) -> dict:
    """Start a broadcast of an uploaded file, a library clip, TTS text or live audio."""
    try:
        return await _play(c, q)
    except BroadcasterError as exc:
        await c.services.audit_now(
            "broadcast_refused",
            c.principal,
            targets=q.to,
            what=_what(q),
            outcome={"error": exc.code, "message": exc.message},
        )
        raise


def _what(q: PlayIn) -> dict[str, Any]:
    if q.clip:
        return {"kind": "clip", "clip": q.clip}
    if q.tts:
        return {"kind": "tts", "text": q.tts}
    return {"kind": "live"} if q.live else {"kind": "file", "name": q.name}


async def _play(c: Call, q: PlayIn) -> dict:
    svc = c.services
    ctl = svc.controller
    if not q.to:
        raise InvalidInput("say where to play: at least one 'to' target", code="no_target")
    codec_by_name(q.codec)
    policy.check_targets(ctl.site, c.principal, q.to)  # unknown or out of scope: before decoding
    rank = policy.check_priority(ctl.site, c.principal, q.priority)
    ctl.admit(q.to)  # overload is refused before any decoding
    given = [x for x in (q.clip, q.tts, c.upload is not None and not q.live, q.live) if x]
    if not given:
        raise AudioInputError(
            "nothing to play: the upload is empty; send an audio file as the "
            "body, or give clip, tts or live",
            code="empty",
        )
    if len(given) != 1:
        raise InvalidInput(
            "give only one of: an audio file as the body, clip, tts, or live",
            code="ambiguous_audio",
        )
    source: Any
    if q.clip:
        source = ClipSource(svc.library, q.clip)
    elif q.tts:
        source = TtsSource(svc.library, q.tts)
    elif q.live:
        if not isinstance(c.upload, LiveSource):
            raise InvalidInput("live audio needs a streamed WAV body", code="no_audio")
        source = c.upload
    else:
        source = FileSource(c.upload, q.name or "upload", svc.max_upload_seconds)
    if q.chime or q.repeat != 1:
        if q.live:
            raise InvalidInput("chime and repeat do not apply to live audio", code="bad_field")
        parts = ([ChimeSource(svc.library, q.chime)] if q.chime else []) + [source]
        source = SequenceSource(parts, repeat=q.repeat)
    if not q.live:
        # decode before accepting: a bad file is the caller's 4xx, not a failed broadcast
        await source.prepare(codec_by_name(q.codec).rate)
        source = _Prepared(source)
    # queued on the audit thread, in order, before the broadcast's own rows: the request itself
    # never waits on the disk (it cost ~20 ms of command-to-sound in scripts/bench)
    svc.audit_later("broadcast_requested", c.principal, targets=q.to, what=source.describe())
    b = await ctl.play(
        source,
        q.to,
        codec=q.codec,
        priority=q.priority,
        owner=c.principal.name,
        owner_scope=c.principal.scope,
        rank=rank,
        queue=q.queue,
    )
    if len(b.results) > TURN:
        await asyncio.sleep(0)  # a district's answer is built in a turn of its own
    return b.to_dict()


class _Prepared(PcmSource):
    """A source already rendered at the broadcast's rate (prepare is then instant)."""

    def __init__(self, inner: PcmSource) -> None:
        super().__init__(inner._pcm, inner.rate, inner.label)  # noqa: SLF001
        self.inner = inner
        self.kind = inner.kind

    def describe(self) -> dict[str, Any]:
        """The inner source's description."""
        return self.inner.describe()


async def _find(c: Call, bid: str) -> dict:
    b = c.services.controller.broadcasts.get(bid)
    if b is not None:
        return b.to_dict()
    hist = c.services.history
    found = await asyncio.to_thread(hist.broadcast, bid) if hist is not None else None
    if found is None:
        raise NotFound(f"no broadcast with id {bid!r}")
    return dict(found)


def _visible(c: Call, b: dict) -> bool:
    site = c.services.controller.site
    return policy.visible(site, c.principal.scope, [s["speaker"] for s in b["speakers"]])


@dataclass
class ListIn:
    """Paging for the broadcast list."""

    limit: int = 100


@command("broadcasts/list", "GET", "/api/broadcasts", ListIn)
async def broadcasts_list(c: Call, q: ListIn) -> dict:
    """Broadcasts touching the caller's scope, newest first (this run's and the history's)."""
    ctl = c.services.controller
    limit = max(1, min(q.limit, 1000))
    live = {b.id: b.to_dict() for b in reversed(ctl.broadcasts.values())}
    items = list(live.values())
    hist = c.services.history
    if hist is not None:
        mine = set(policy.scope_speakers(ctl.site, c.principal.scope))
        old = await asyncio.to_thread(hist.broadcasts, limit, speaker_ids=mine)
        items += [b for b in old if b["id"] not in live]
    items = sorted(
        (b for b in items if _visible(c, b)), key=lambda b: b["created_at"], reverse=True
    )
    return {"broadcasts": items[:limit]}


@dataclass
class IdIn:
    """One object by id."""

    id: str


@command("broadcasts/get", "GET", "/api/broadcasts/{id}", IdIn)
async def broadcasts_get(c: Call, q: IdIn) -> dict:
    """One broadcast with its per-speaker outcome (from the history once it is old)."""
    b = await _find(c, q.id)
    if not _visible(c, b):
        raise NotFound(f"no broadcast with id {q.id!r}")
    return b


@command("broadcasts/stop", "POST", "/api/broadcasts/{id}/stop", IdIn)
async def broadcasts_stop(c: Call, q: IdIn) -> dict:
    """Stop a broadcast: the caller's own, or (admins) one started inside their scope."""
    ctl = c.services.controller
    b = ctl.broadcast(q.id)
    if not _visible(c, b.to_dict()):
        raise NotFound(f"no broadcast with id {q.id!r}")
    policy.check_stop(ctl.site, c.principal, b.owner, b.owner_scope)
    return (await ctl.stop(q.id)).to_dict()


# --- the audio library ---------------------------------------------------------------------


async def _lib(c: Call, fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return await asyncio.to_thread(fn, *args, **kw)
    except LibraryError as exc:
        raise library_error(exc) from None


@dataclass
class LibListIn:
    """Search the library."""

    q: str | None = None
    tag: str | None = None


@command("library/list", "GET", "/api/library", LibListIn)
async def library_list(c: Call, q: LibListIn) -> dict:
    """Clips in the audio library, optionally searched by text or tag."""
    clips = await _lib(c, c.services.library.search, q.q, tag=q.tag)
    return {"clips": [clip.to_dict() for clip in clips], "chimes": list(chime_names())}


@command("library/get", "GET", "/api/library/{id}", IdIn)
async def library_get(c: Call, q: IdIn) -> dict:
    """One clip."""
    return (await _lib(c, c.services.library.get, q.id)).to_dict()


@command("library/audio", "GET", "/api/library/{id}/audio", IdIn, returns="audio/wav")
async def library_audio(c: Call, q: IdIn) -> bytes:
    """A clip's audio as 16 kHz WAV, to hear in the browser (a TTS preview before it goes out)."""
    pcm = await _lib(c, c.services.library.pcm, q.id, 16000)
    return wav_bytes(pcm, 16000)


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """Mono s16le PCM as a WAV file in memory."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


@dataclass
class LibAddIn:
    """An uploaded file to catalogue."""

    name: str = "upload"
    title: str | None = None
    tags: list[str] = field(default_factory=list)


@command("library/add", "POST", "/api/library", LibAddIn, body="audio", status=201)
async def library_add(c: Call, q: LibAddIn) -> dict:
    """Add an uploaded audio file to the library (normalized, catalogued)."""
    if c.upload is None:
        raise AudioInputError("send the audio file as the request body", code="empty")
    clip = await _lib(
        c,
        c.services.library.add,
        c.upload,
        title=q.title or q.name,
        tags=q.tags,
        added_by=c.principal.name,
        original_name=q.name,
    )
    return clip.to_dict()


@dataclass
class TtsIn:
    """Text to speak."""

    text: str
    title: str | None = None


@command("library/tts", "POST", "/api/library/tts", TtsIn, status=201)
async def library_tts(c: Call, q: TtsIn) -> dict:
    """Read text aloud (Mandarin) into a clip; play it, or preview it with library/audio."""
    TtsSource(c.services.library, q.text)  # validates length and emptiness
    clip = await _lib(c, c.services.library.tts, q.text, title=q.title, tags=["tts"])
    return clip.to_dict()


@dataclass
class RetitleIn:
    """A clip's new title and tags."""

    id: str
    title: str | None = None
    tags: list[str] | None = None


@command("library/update", "POST", "/api/library/{id}", RetitleIn)
async def library_update(c: Call, q: RetitleIn) -> dict:
    """Rename or re-tag a clip."""
    lib = c.services.library
    if q.title is not None:
        await _lib(c, lib.rename, q.id, q.title)
    if q.tags is not None:
        await _lib(c, lib.retag, q.id, q.tags)
    return (await _lib(c, lib.get, q.id)).to_dict()


@command("library/remove", "DELETE", "/api/library/{id}", IdIn)
async def library_remove(c: Call, q: IdIn) -> dict:
    """Remove a clip from the library (subdistrict scope only)."""
    policy.check_library_admin(c.services.controller.site, c.principal)
    return (await _lib(c, c.services.library.remove, q.id)).to_dict()
