"""The engine: fires each schedule's occurrences on time, exactly once; the only module that
imports APScheduler.

Our SQLite tables are the truth; APScheduler holds one in-memory job per schedule (its next
occurrence), rebuilt from the tables at start-up and after every edit — no pickled job store.
A job fires `lead` seconds before its instant and asks the controller to start the broadcast
*at* the instant, so the speakers are set up ahead and the first sample plays on time. Firing
records the occurrence under its unique key first (no restart plays it twice); then re-checks
the owner's account and scope, then plays; every outcome, and every occurrence missed while the
controller was down, is a row with why, and an audit row with the outcome per speaker.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from broadcaster.access import policy
from broadcaster.access.principal import Principal
from broadcaster.core.broadcast import ACTIVE
from broadcaster.errors import BroadcasterError, Forbidden, NotFound
from broadcaster.scheduler import rules
from broadcaster.scheduler.store import Schedule, ScheduleStore
from broadcaster.sources.recorded import ChimeSource, ClipSource
from broadcaster.sources.sequence import SequenceSource
from broadcaster.storage.db import Store

log = logging.getLogger(__name__)
DEFAULT_GRACE = 300.0  # seconds an occurrence missed while down may still play late
DEFAULT_LEAD = 2.0  # seconds before the instant a job fires to set the speakers up
LOOKBACK = 31 * 86400  # how far back start-up looks for occurrences missed while down
_FINAL = {
    "done": "played",
    "cut": "cut",
    "stopped": "stopped",
    "failed": "failed",
    "interrupted": "interrupted",
}


class Scheduler:
    """Schedules of one controller: the table, the APScheduler jobs, and the firing."""

    def __init__(
        self,
        services: Any,
        *,
        tz: str | None = None,
        grace: float = DEFAULT_GRACE,
        lead: float = DEFAULT_LEAD,
        lookback: float = LOOKBACK,
        settle: float = 10.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.services = services
        self.ctl = services.controller
        store = getattr(services, "store", None)
        self._own_store = store is None
        self.table = ScheduleStore(store or Store.in_data_dir(self.ctl.config.data_dir))
        self.tz = rules.zone(tz or os.environ.get("BROADCASTER_TZ"))
        self.grace, self.lead, self.lookback, self.wall = grace, lead, lookback, wall
        self.settle = settle  # seconds a late occurrence waits for its speakers after start-up
        self._aps: AsyncIOScheduler | None = None
        self._jobs: dict[str, str] = {}  # schedule id -> its APScheduler job id
        self._tasks: set[asyncio.Task] = set()

    @classmethod
    def attach(cls, services: Any, **kw: Any) -> Scheduler:
        """Make the scheduler of a Services and set it as `services.scheduler`."""
        services.scheduler = cls(services, **kw)
        return services.scheduler

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Close occurrences a stopped controller left open, then arm every schedule."""
        self._aps = AsyncIOScheduler(
            timezone=self.tz,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._aps.start()
        for occ in self.table.occurrences(state="fired", limit=10_000):
            why = "the controller stopped during this occurrence; it is not played again"
            self.table.finish(
                occ["schedule_id"],
                occ["at"],
                "interrupted",
                self.wall(),
                why=why,
                broadcast=occ["broadcast"],
            )
            await self._audit_occurrence(
                occ["schedule_id"], occ["at"], "interrupted", why, occ["broadcast"], {}
            )
        for s in self.table.all():
            await self.rearm(s.id)

    async def close(self) -> None:
        """Stop the jobs; occurrences in flight finish as interrupted at the next start."""
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._own_store:
            self.table.store.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def now(self) -> dt.datetime:
        """The wall clock, aware, in the site's zone."""
        return dt.datetime.fromtimestamp(self.wall(), self.tz)

    # --- arming -----------------------------------------------------------------------------

    async def rearm(self, sid: str) -> None:
        """Rebuild one schedule's job from the table: settle what was missed, arm the next."""
        old = self._jobs.pop(sid, None)
        if old and self._aps is not None and self._aps.get_job(old):
            self._aps.remove_job(old)
        try:
            s = self.table.get(sid)
        except NotFound:
            return
        if s.paused or self._aps is None:
            return
        rule = rules.parse_rule(s.rule)
        now = self.wall()
        since = max(s.armed_from, now - self.lookback)
        done = self.table.recorded(sid, int(since), int(now) + 1)
        for inst in rules.occurrences(rule, _at(since, self.tz), _at(now, self.tz), self.tz):
            at = int(inst.timestamp())
            if at in done:
                continue
            if now - at <= self.grace:
                self._spawn(self._fire(sid, at, late=True))
            else:
                await self._missed(s, at, now)
        self._arm_next(s, rule, max(now, since))

    def _arm_next(self, s: Schedule, rule: rules.Rule, after: float) -> None:
        found = rules.next_occurrences(rule, _at(after, self.tz), 3, self.tz).instants
        done = self.table.recorded(s.id, int(after), int(after) + 10**8)
        nxt = next((int(i.timestamp()) for i in found if int(i.timestamp()) not in done), None)
        if nxt is None or self._aps is None:
            return
        job_id = f"{s.id}@{nxt}"
        run = max(self.wall(), nxt - self.lead)
        self._aps.add_job(
            self._due,
            DateTrigger(run_date=_at(run, self.tz)),
            args=[s.id, nxt],
            id=job_id,
            replace_existing=True,
        )
        self._jobs[s.id] = job_id

    async def _due(self, sid: str, at: int) -> None:
        """The job: arm the following occurrence, then fire this one (in its own task)."""
        self._jobs.pop(sid, None)
        try:
            s = self.table.get(sid)
        except NotFound:
            return
        if not s.paused:
            self._arm_next(s, rules.parse_rule(s.rule), at + 1)
            self._spawn(self._fire(sid, at))

    def next_job(self, sid: str) -> float | None:
        """When the armed job of a schedule runs (Unix seconds), for tests and listings."""
        job = self._aps.get_job(self._jobs[sid]) if self._aps and sid in self._jobs else None
        return job.next_run_time.timestamp() if job and job.next_run_time else None

    # --- firing -----------------------------------------------------------------------------

    async def _missed(self, s: Schedule, at: int, now: float) -> None:
        why = (
            f"the controller was not running at {_at(at, self.tz):%Y-%m-%d %H:%M:%S}; "
            f"{now - at:.0f} s later is past the {self.grace:.0f} s grace"
        )
        if await asyncio.to_thread(
            self.table.claim, s.id, at, "missed", now, late=now - at, why=why
        ):
            await self._audit_occurrence(s.id, at, "missed", why, None, {}, schedule=s)

    async def _fire(self, sid: str, at: int, late: bool = False) -> None:
        """Record the occurrence, check its owner, play it at its instant, record the outcome."""
        now = self.wall()
        lateness = max(0.0, now - at)
        if not await asyncio.to_thread(
            self.table.claim, sid, at, "fired", now, late=lateness if late else None
        ):
            return  # already recorded: this occurrence was handled before
        try:
            s = self.table.get(sid)
            if late:
                await self._settle(s)
            owner = self.owner_of(s)
            policy.check_targets(self.ctl.site, owner, s.targets)
            rank = policy.check_priority(self.ctl.site, owner, s.priority)
            instant = None if late else at - self.ctl.clock.wall_error()
            b = await self.ctl.play(
                self.source_of(s),
                s.targets,
                priority=s.priority,
                owner=s.owner,
                owner_scope=owner.scope,
                rank=rank,
                requested_at=now,
                at=instant,
                volume=s.volume,
            )
        except BroadcasterError as exc:
            await self._finish(sid, at, "refused", f"{exc.code}: {exc.message}", None, {})
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a fault here is recorded, never raised into the loop
            log.exception("schedule %s occurrence %s failed", sid, at)
            await self._finish(sid, at, "failed", f"{type(exc).__name__}: {exc}", None, {})
            return
        bid = b.id
        await asyncio.to_thread(self.table.set_broadcast, sid, at, bid)
        while b.state in ACTIVE:
            await asyncio.sleep(0.1)
        speakers = {r.speaker: r.state for r in b.results.values()}
        state = _FINAL.get(b.state, b.state)
        if state == "played" and any(v not in ("played", "sent") for v in speakers.values()):
            state = "partial"
        cut_by = sorted({r.cut_by for r in b.results.values() if r.cut_by})
        short = [f"{k} {v}" for k, v in sorted(speakers.items()) if v not in ("played", "sent")]
        why = (
            f"cut by broadcast {', '.join(cut_by)}"
            if cut_by
            else b.error
            or (f"not played in full: {', '.join(short)}" if short else None)
            or (
                f"late by {lateness:.1f} s (missed while the controller was down)" if late else None
            )
        )
        await self._finish(sid, at, state, why, bid, speakers)

    async def _settle(self, s: Schedule) -> None:
        """Just after start-up, give the speakers a moment to come online before a late play."""
        try:
            wanted = self.ctl.site.resolve_many(s.targets)
        except BroadcasterError:
            return
        end = time.monotonic() + self.settle
        while time.monotonic() < end and not any(self.ctl.is_online(x) for x in wanted):
            await asyncio.sleep(0.1)

    async def _finish(
        self,
        sid: str,
        at: int,
        state: str,
        why: str | None,
        bid: str | None,
        speakers: dict[str, str],
    ) -> None:
        await asyncio.to_thread(
            self.table.finish,
            sid,
            at,
            state,
            self.wall(),
            why=why,
            broadcast=bid,
            speakers=speakers,
        )
        await self._audit_occurrence(sid, at, state, why, bid, speakers)

    def owner_of(self, s: Schedule) -> Principal:
        """The owner as they are now: Forbidden if their account is gone."""
        origin = f"schedule:{s.id}"
        if s.owner_role == "system":
            return Principal.system(self.ctl.site.root.id, origin)
        accounts = getattr(self.services, "accounts", None)
        if accounts is None:
            return Principal(s.owner, s.owner_scope, s.owner_role, origin, "schedule")
        try:
            user = accounts.get_user(s.owner)
        except NotFound:
            raise Forbidden(
                f"the owner's account {s.owner!r} no longer exists",
                code="owner_gone",
                detail={"owner": s.owner},
            ) from None
        return Principal(user["name"], user["scope"], user["role"], origin, "schedule")

    def source_of(self, s: Schedule) -> Any:
        """The audio of a schedule: its clip, after a chime, repeated."""
        lib = self.services.library
        parts: list[Any] = [ClipSource(lib, s.what["clip"])]
        if s.what.get("chime"):
            parts.insert(0, ChimeSource(lib, s.what["chime"]))
        repeat = int(s.what.get("repeat", 1))
        return parts[0] if len(parts) == 1 and repeat == 1 else SequenceSource(parts, repeat=repeat)

    async def audit(self, action: str, who: Principal | None, **kw: Any) -> None:
        """An audit row, when the controller keeps an audit log."""
        log_ = getattr(self.services, "audit", None)
        if log_ is None:
            return
        try:
            await asyncio.to_thread(log_.append, action, who, **kw)
        except BroadcasterError as exc:
            log.error("audit row %s not written: %s", action, exc.message)

    async def _audit_occurrence(
        self,
        sid: str,
        at: int,
        state: str,
        why: str | None,
        bid: str | None,
        speakers: dict[str, str],
        schedule: Schedule | None = None,
    ) -> None:
        try:
            s = schedule or self.table.get(sid)
        except NotFound:
            s = None
        who = (
            Principal(s.owner, s.owner_scope, s.owner_role, f"schedule:{sid}", "schedule")
            if s
            else None
        )
        await self.audit(
            f"schedule_{state}",
            who,
            origin=f"schedule:{sid}",
            targets=s.targets if s else (),
            what={
                "schedule": sid,
                "title": s.title if s else "",
                "instant": _at(at, self.tz).isoformat(),
            },
            outcome={"state": state, "why": why, **speakers},
            broadcast=bid,
        )


def _at(t: float, tz: Any) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, tz)
