"""The schedule commands of the command surface (/api/schedules…); imported to register them.

A caller sees and edits only schedules whose targets lie inside their scope; targets, priority,
clip and `when` are checked when saved (nothing is stored on bad input) and again at firing.
TTS text is rendered into a library clip when saved, so firing never waits on speech synthesis.
Whoever saves an edit becomes the schedule's owner (their scope is what firing checks).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from audio_library import LibraryError
from broadcaster.access import policy
from broadcaster.core.commands import Call, command
from broadcaster.errors import BroadcasterError, Forbidden, InvalidInput, NotFound
from broadcaster.scheduler import rules
from broadcaster.scheduler.preview import Slot, conflicts
from broadcaster.scheduler.store import Schedule, new_schedule_id
from broadcaster.sources.recorded import ChimeSource, TtsSource, library_error
from broadcaster.sources.sequence import MAX_REPEAT

PAUSE = 0.5  # seconds between a sequence's parts (SequenceSource's default)


def _sched(c: Call) -> Any:
    s = getattr(c.services, "scheduler", None)
    if s is None:
        raise BroadcasterError(
            "this controller runs without a scheduler", code="no_scheduler", status=503
        )
    return s


def _visible(c: Call, s: Schedule) -> bool:
    site = c.services.controller.site
    if c.principal.kind == "system" or c.principal.scope == site.root.id:
        return True
    return s.owner == c.principal.name or all(
        policy.target_inside(site, c.principal.scope, t) for t in s.targets
    )


def _mine(c: Call, sid: str, edit: bool = False) -> Schedule:
    s = _sched(c).table.get(sid)
    if not _visible(c, s):
        raise NotFound(f"no schedule with id {sid!r}", detail={"schedule": sid})
    if edit:
        policy.check_targets(c.services.controller.site, c.principal, s.targets)
        if not (c.principal.name == s.owner or c.principal.is_admin):
            raise Forbidden(
                f"schedule {sid} belongs to {s.owner}; only they, or an admin "
                "whose scope covers its targets, may change it",
                code="not_yours",
            )
    return s


def view(c: Call, s: Schedule, count: int = 3) -> dict:
    """A schedule as the API shows it: stored fields, its next occurrences and warnings."""
    sched = _sched(c)
    out = s.to_dict()
    out["when"] = out.pop("rule")
    rule = rules.parse_rule(s.rule)
    exp = rules.next_occurrences(rule, sched.now(), max(0, min(count, 100)), sched.tz)
    out["next"] = [] if s.paused else [i.isoformat() for i in exp.instants]
    out["warnings"] = exp.warnings
    out["time_zone"] = sched.tz.key
    return out


@dataclass
class ScheduleIn:
    """A new schedule: what, where, when."""

    to: list[str] = field(default_factory=list)
    when: dict | None = None
    clip: str | None = None
    tts: str | None = None
    chime: str | None = None
    repeat: int = 1
    priority: str = "announcement"
    volume: int | None = None
    title: str | None = None
    paused: bool = False


async def _validate(c: Call, q: Any, now: dt.datetime) -> tuple[rules.Rule, dict]:
    """Check everything but the audio's existence; returns the rule and the `what` skeleton."""
    site = c.services.controller.site
    if not q.to:
        raise InvalidInput("say where to play: at least one 'to' target", code="no_target")
    policy.check_targets(site, c.principal, q.to)
    policy.check_priority(site, c.principal, q.priority)
    if q.when is None:
        raise InvalidInput(
            'when is required, e.g. {"kind": "daily", "times": ["08:00"]}', code="missing_field"
        )
    rule = rules.parse_rule(q.when)
    rules.check_saveable(rule, now, _sched(c).tz)
    if q.volume is not None and not 0 <= q.volume <= 100:
        raise InvalidInput(f"volume {q.volume} is outside 0-100", code="bad_volume")
    if not 1 <= q.repeat <= MAX_REPEAT:
        raise InvalidInput(f"repeat {q.repeat} is outside 1..{MAX_REPEAT}", code="bad_repeat")
    if q.chime:
        ChimeSource(c.services.library, q.chime)  # NotFound unknown_chime
    if bool(q.clip) == bool(q.tts):
        raise InvalidInput(
            "give exactly one of clip (a library clip id) or tts (text read aloud when saved)",
            code="ambiguous_audio",
        )
    if q.tts:
        TtsSource(c.services.library, q.tts)  # empty or too long
    return rule, {"chime": q.chime, "repeat": q.repeat}


async def _audio(c: Call, q: Any, what: dict) -> dict:
    """Resolve the clip (or render the TTS into one) and the whole duration; 404 unknown clip."""
    lib = c.services.library

    def work() -> dict:
        clip = lib.get(q.clip) if q.clip else lib.tts(q.tts, tags=["tts", "schedule"])
        chime = len(lib.chime(q.chime, 8000)) / 16000 if q.chime else 0.0
        once = clip.duration + (chime + PAUSE if q.chime else 0.0)
        return {
            **what,
            "clip": clip.id,
            "clip_title": clip.title,
            "tts": q.tts,
            "duration": round(q.repeat * once + (q.repeat - 1) * PAUSE, 3),
        }

    try:
        return await asyncio.to_thread(work)
    except LibraryError as exc:
        raise library_error(exc) from None


def _owner_fields(c: Call) -> dict:
    p = c.principal
    return {
        "owner": p.name,
        "owner_scope": p.scope,
        "owner_role": "system" if p.kind == "system" else p.role,
    }


@command("schedules/create", "POST", "/api/schedules", ScheduleIn, status=201)
async def schedules_create(c: Call, q: ScheduleIn) -> dict:
    """Save a schedule (checked whole first: nothing is stored on bad input)."""
    sched = _sched(c)
    now = sched.now()
    rule, what = await _validate(c, q, now)
    what = await _audio(c, q, what)
    stamp = now.timestamp()
    title = q.title or what["clip_title"] or (q.tts or q.clip or "")[:40]
    s = Schedule(
        new_schedule_id(),
        title,
        **_owner_fields(c),
        what=what,
        targets=list(q.to),
        priority=q.priority,
        volume=q.volume,
        rule=rule.to_dict(),
        paused=q.paused,
        armed_from=stamp,
        created_at=stamp,
        updated_at=stamp,
    )
    await asyncio.to_thread(sched.table.add, s)
    await sched.rearm(s.id)
    await sched.audit(
        "schedule_created",
        c.principal,
        targets=s.targets,
        what={"schedule": s.id, "title": s.title, "when": s.rule, **what},
    )
    return view(c, s)


@dataclass
class ScheduleListIn:
    """How many coming occurrences to show per schedule."""

    next: int = 3


@command("schedules/list", "GET", "/api/schedules", ScheduleListIn)
async def schedules_list(c: Call, q: ScheduleListIn) -> dict:
    """Schedules inside the caller's scope, each with its next occurrences."""
    items = await asyncio.to_thread(_sched(c).table.all)
    return {
        "schedules": [view(c, s, q.next) for s in items if _visible(c, s)],
        "time_zone": _sched(c).tz.key,
    }


@dataclass
class PreviewIn:
    """The window to preview."""

    weeks: int = 2
    id: str | None = None


@command("schedules/preview", "GET", "/api/schedules/preview", PreviewIn)
async def schedules_preview(c: Call, q: PreviewIn) -> dict:
    """The coming weeks' occurrences, with conflicts (same speakers, overlapping times)."""
    sched = _sched(c)
    site = c.services.controller.site
    if not 1 <= q.weeks <= 26:
        raise InvalidInput(f"weeks {q.weeks} is outside 1..26", code="bad_field")
    start = sched.now()
    end = start + dt.timedelta(weeks=q.weeks)
    slots, rows, warnings = [], [], []
    for s in await asyncio.to_thread(sched.table.all):
        if s.paused or (q.id and s.id != q.id) or not _visible(c, s):
            continue
        exp = rules.expand(rules.parse_rule(s.rule), start, end, sched.tz)
        warnings += [f"{s.id}: {w}" for w in exp.warnings]
        speakers = site.resolve_many(s.targets)
        for inst in exp.instants:
            slot = Slot(
                s.id,
                s.title,
                inst.timestamp(),
                inst.timestamp() + float(s.what.get("duration") or 0),
                speakers,
            )
            slots.append(slot)
            rows.append(
                {
                    "schedule": s.id,
                    "title": s.title,
                    "at": inst.isoformat(),
                    "seconds": s.what.get("duration"),
                    "targets": s.targets,
                }
            )
    rows.sort(key=lambda r: r["at"])
    found = conflicts(slots, sched.tz)
    return {
        "from": start.isoformat(),
        "until": end.isoformat(),
        "occurrences": rows,
        "conflicts": found,
        "warnings": warnings,
    }


@dataclass
class IdIn:
    """One schedule by id."""

    id: str


@command("schedules/get", "GET", "/api/schedules/{id}", IdIn)
async def schedules_get(c: Call, q: IdIn) -> dict:
    """One schedule with its next ten occurrences."""
    return view(c, _mine(c, q.id), 10)


@dataclass
class ScheduleEditIn:
    """Fields to change; the rest stay."""

    id: str
    to: list[str] | None = None
    when: dict | None = None
    clip: str | None = None
    tts: str | None = None
    chime: str | None = None
    repeat: int | None = None
    priority: str | None = None
    volume: int | None = None
    title: str | None = None


@command("schedules/update", "POST", "/api/schedules/{id}", ScheduleEditIn)
async def schedules_update(c: Call, q: ScheduleEditIn) -> dict:
    """Change a schedule (checked whole again); the editor becomes its owner."""
    sched = _sched(c)
    old = _mine(c, q.id, edit=True)
    new_audio = q.clip is not None or q.tts is not None
    merged = ScheduleIn(
        to=q.to if q.to is not None else old.targets,
        when=q.when if q.when is not None else old.rule,
        clip=q.clip if new_audio else old.what["clip"],
        tts=q.tts if new_audio else None,
        chime=q.chime if q.chime is not None else old.what.get("chime"),
        repeat=q.repeat if q.repeat is not None else int(old.what.get("repeat", 1)),
        priority=q.priority or old.priority,
        volume=q.volume if q.volume is not None else old.volume,
        title=q.title or old.title,
    )
    if merged.chime == "":
        merged.chime = None
    now = sched.now()
    rule, what = await _validate(c, merged, now)
    what = await _audio(c, merged, what)
    if not new_audio and old.what.get("tts"):
        what["tts"] = old.what["tts"]
    s = await asyncio.to_thread(
        sched.table.update,
        old.id,
        title=merged.title,
        **_owner_fields(c),
        what=what,
        targets=list(merged.to),
        priority=merged.priority,
        volume=merged.volume,
        rule=rule.to_dict(),
        armed_from=now.timestamp(),
        updated_at=now.timestamp(),
    )
    await sched.rearm(s.id)
    await sched.audit(
        "schedule_updated",
        c.principal,
        targets=s.targets,
        what={"schedule": s.id, "title": s.title, "when": s.rule, **what},
    )
    return view(c, s)


async def _set_paused(c: Call, sid: str, paused: bool) -> dict:
    sched = _sched(c)
    old = _mine(c, sid, edit=True)
    changes: dict[str, Any] = {"paused": paused, "updated_at": sched.wall()}
    if not paused and old.paused:
        changes["armed_from"] = sched.wall()  # occurrences while paused are not owed
    s = await asyncio.to_thread(sched.table.update, sid, **changes)
    await sched.rearm(sid)
    await sched.audit(
        "schedule_paused" if paused else "schedule_resumed",
        c.principal,
        targets=s.targets,
        what={"schedule": sid, "title": s.title},
    )
    return view(c, s)


@command("schedules/pause", "POST", "/api/schedules/{id}/pause", IdIn)
async def schedules_pause(c: Call, q: IdIn) -> dict:
    """Pause a schedule: nothing fires until it is resumed."""
    return await _set_paused(c, q.id, True)


@command("schedules/resume", "POST", "/api/schedules/{id}/resume", IdIn)
async def schedules_resume(c: Call, q: IdIn) -> dict:
    """Resume a paused schedule (occurrences while it was paused are not played)."""
    return await _set_paused(c, q.id, False)


@command("schedules/delete", "DELETE", "/api/schedules/{id}", IdIn)
async def schedules_delete(c: Call, q: IdIn) -> dict:
    """Delete a schedule; its recorded occurrences stay as history."""
    sched = _sched(c)
    s = _mine(c, q.id, edit=True)
    await asyncio.to_thread(sched.table.remove, s.id)
    await sched.rearm(s.id)
    await sched.audit(
        "schedule_deleted",
        c.principal,
        targets=s.targets,
        what={"schedule": s.id, "title": s.title},
    )
    return {"id": s.id, "deleted": True}


@dataclass
class OccurrencesIn:
    """A schedule's recorded occurrences."""

    id: str
    limit: int = 100


@command("schedules/occurrences", "GET", "/api/schedules/{id}/occurrences", OccurrencesIn)
async def schedules_occurrences(c: Call, q: OccurrencesIn) -> dict:
    """What happened at each occurrence: played, partial, cut, refused, missed …, with why."""
    sched = _sched(c)
    try:
        _mine(c, q.id)
    except NotFound:
        # a deleted schedule's history stays readable by the subdistrict
        if c.principal.scope != c.services.controller.site.root.id:
            raise
    rows = await asyncio.to_thread(sched.table.occurrences, q.id, max(1, min(q.limit, 1000)))
    for r in rows:
        r["instant"] = dt.datetime.fromtimestamp(r["at"], sched.tz).isoformat()
    return {"id": q.id, "occurrences": rows}
