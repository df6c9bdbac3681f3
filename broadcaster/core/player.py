"""Plays one broadcast: prepares its source and its drivers, paces its frames, stops, collects.

The core's part of every broadcast, whatever the speakers: drivers only set up, send and report.
Pacing runs on the monotonic clock; the play instants sent to speakers are on the controller's
play clock. The loop never waits on the source, so a stalled live source is stoppable at once
and never accumulates delay. Every state change goes through `_set_state`, which notifies once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from broadcaster.core.broadcast import Broadcast, outcome
from broadcaster.drivers.base import Capability, Delivery, Driver, FrameSender, Plan
from broadcaster.errors import BroadcasterError
from broadcaster.protocol.codecs import FRAME_MS, codec_by_name
from broadcaster.sources.base import END, AudioSource
from broadcaster.sources.resample import Resampler

log = logging.getLogger(__name__)
STEP = FRAME_MS / 1000
END_REPEATS = 3  # the end report goes out three times, 20 ms apart: RTCP has no retransmission
REPORT_GRACE = 3.0  # seconds after the last instant a speaker has to report what it played
# speakers one turn of the event loop handles at most, where a district's work is cut in turns
# (judging outcomes here; a request's records and claim, its answer: core/controller, operations)
TURN = 250


@dataclass
class Part:
    """One driver's share of a broadcast."""

    driver: Driver
    speakers: list[str]
    delivery: Delivery | None = None
    adapt: Resampler | None = None

    def delivered(self) -> Delivery:
        """The driver's delivery, once prepared (None here is a bug in the player)."""
        if self.delivery is None:
            raise BroadcasterError(
                "a driver's part was used before it was prepared", code="internal", status=500
            )
        return self.delivery

    def sender(self) -> FrameSender:
        """The sender of a part whose speakers accepted (a driver that accepts must give one)."""
        d = self.delivered()
        if d.sender is None:
            raise BroadcasterError(
                f"driver {d.driver} accepted speakers but gave no sender",
                code="internal",
                status=500,
            )
        return d.sender


@dataclass
class Player:
    """Runs one broadcast to completion; `stop` ends it from outside at any moment."""

    broadcast: Broadcast
    source: AudioSource
    parts: list[Part]
    lead: float
    volumes: dict[str, int]
    clock: Callable[[], float]  # the controller's play clock
    changed: Callable[[Broadcast, str], None]  # called on every state change (history, events)
    stopped: bool = False
    stop_reason: str = ""
    at: float | None = None  # play-clock instant of the first sample (scheduled), if fixed
    _stopping: list[asyncio.Task] = field(default_factory=list)

    def _set_state(self, state: str, error: str | None = None) -> None:
        b = self.broadcast
        b.state = state
        if error:
            b.error = error
        self.changed(b, state)

    async def run(self) -> None:
        """The whole life of the broadcast; never raises."""
        b = self.broadcast
        try:
            await self._run()
        except BroadcasterError as exc:
            self._set_state("failed", exc.message)
        except Exception as exc:  # a broadcast's failure is recorded, never raised into the loop
            log.exception("broadcast %s failed", b.id)
            self._set_state("failed", f"{type(exc).__name__}: {exc}")
        finally:
            b.source = self.source.describe()  # a live source's counts are final only now
            self.source.close()
            b.ended_at = self.clock()
            for r in b.results.values():
                if r.state in ("pending", "playing"):
                    r.state, r.error = "interrupted", r.error or "the broadcast ended early"
            self.changed(b, "ended")

    async def _run(self) -> None:
        b = self.broadcast
        codec = codec_by_name(b.codec)
        await self.source.prepare(codec.rate)  # before the start instant is fixed
        plan = Plan(b.id, b.codec, b.rank, self.volumes, self.lead)
        if self.stopped:
            self._set_state("stopped")
            return
        wall, cpu = time.monotonic(), time.thread_time()
        await asyncio.gather(*(self._prepare(part, plan) for part in self.parts))
        b.setup = {
            "ms": round((time.monotonic() - wall) * 1000, 1),
            "controller_cpu_ms": round((time.thread_time() - cpu) * 1000, 1),
        }
        accepted = [p for p in self.parts if p.delivery and p.delivery.accepted]
        if self.stopped:  # a stop that came during set-up: cut whoever accepted
            await self._stop_parts()
            for p in accepted:
                for sid in p.delivered().accepted:
                    b.results[sid].state, b.results[sid].frames_sent = "stopped", 0
                    b.results[sid].error = "stopped during set-up, before any audio was sent"
            self._set_state("stopped")
            return
        if not accepted:
            self._set_state("failed", "no speaker accepted the broadcast")
            return
        # a fixed instant is kept when set-up finished in time; otherwise start as soon as we can
        base_time = max(self.at or 0.0, self.clock() + self.lead)
        b.started_at, b.lead = base_time, self.lead
        for p in accepted:
            sender = p.sender()
            sender.start(base_time, self.clock())
            if sender.rate != codec.rate:
                p.adapt = Resampler(codec.rate, sender.rate)
        self._set_state("playing")
        frames = await self._pace(accepted, base_time)
        for _ in range(END_REPEATS):
            for p in accepted:
                p.sender().end(frames, self.clock())
            await asyncio.sleep(0.02)
        if not self.stopped:
            await asyncio.sleep(max(0.0, base_time + frames * STEP - self.clock()) + 0.15)
        await self._collect(accepted, frames)
        final = "stopped" if self.stopped and self.stop_reason != "cut" else "done"
        held = [r for r in b.results.values() if r.route is not None]
        if held and all(r.state == "cut" for r in held):
            final = "cut"
        self._set_state(final)

    async def _prepare(self, part: Part, plan: Plan) -> None:
        b = self.broadcast
        part.delivery = await part.driver.prepare(plan, part.speakers)
        for sid, route in part.delivery.accepted.items():
            b.results[sid].state, b.results[sid].route = "playing", route
        for sid, (state, why) in part.delivery.refused.items():
            b.results[sid].state, b.results[sid].error = state, why
        self.changed(b, "prepared")

    async def _pace(self, parts: list[Part], base_time: float) -> int:
        """Hand frame n to every sender `lead` before its instant; returns frames elapsed."""
        outs = [(p.sender(), p.adapt) for p in parts]
        frames, sent = await pace(
            outs, self.source, base_time, self.lead, self.clock, lambda: self.stopped
        )
        self.broadcast.frames = sent
        return frames

    async def _collect(self, parts: list[Part], frames: int) -> None:
        b = self.broadcast
        if b.started_at is None:
            raise BroadcasterError(
                f"broadcast {b.id}: reports collected before it started",
                code="internal",
                status=500,
            )
        deadline = (
            time.monotonic() + max(0.0, b.started_at + frames * STEP - self.clock()) + REPORT_GRACE
        )

        async def one(p: Part) -> None:
            sids = [s for s in p.delivered().accepted if b.results[s].state == "playing"]
            if Capability.REPORT not in p.driver.capabilities:
                for sid in sids:  # what was sent, not what was heard; one taken higher is cut
                    res = b.results[sid]
                    res.state, res.frames_sent = ("cut" if res.cut_by else "sent"), b.frames
                return
            reps = await p.driver.reports(p.delivered(), sids, deadline) if sids else {}
            for i, sid in enumerate(sids):
                if i and not i % TURN:
                    await asyncio.sleep(0)  # a district's outcomes in turns, not one long block
                res, rep = b.results[sid], reps.get(sid)
                if isinstance(rep, BroadcasterError):
                    res.error, rep = rep.message, None
                outcome(res, rep, b.frames, self.stopped)

        await asyncio.gather(*(one(p) for p in parts))

    def cut(self, speakers: list[str], by: str) -> None:
        """A higher broadcast took these speakers: stop sending to them (a multicast group only
        when none of its speakers is left); the record says who cut them."""
        b = self.broadcast
        for sid in speakers:
            if sid in b.results:
                b.results[sid].cut_by = by
        for p in self.parts:
            d = p.delivery
            if d is None or d.sender is None:
                continue
            gone = {sid for sid in speakers if sid in d.destinations}
            if not gone:
                continue
            keep = {
                id(dest)
                for sid, dest in d.destinations.items()
                if sid not in gone and b.results[sid].cut_by is None
            }
            drop = {id(d.destinations.pop(sid)) for sid in gone} - keep
            if drop:  # one pass over the destinations, however many speakers were cut
                sender = d.sender
                sender.destinations = [x for x in sender.destinations if id(x) not in drop]  # type: ignore[attr-defined]
        held = [r for r in b.results.values() if r.route is not None]
        if b.priority != "background" and held and all(r.cut_by for r in held):
            self.stopped, self.stop_reason = True, "cut"  # nobody left to hear it
        self.changed(b, "cut_speakers")

    async def resume(self, speakers: list[str]) -> None:
        """Speakers a higher broadcast released come back to this (background) broadcast."""
        b = self.broadcast
        if self.stopped or b.state != "playing":
            return
        plan = Plan(b.id, b.codec, b.rank, self.volumes, self.lead)
        for p in self.parts:
            mine = [s for s in speakers if s in p.speakers]
            if not mine or p.delivery is None or Capability.RESUME not in p.driver.capabilities:
                continue
            for sid in await p.driver.rejoin(p.delivery, plan, mine):
                b.results[sid].state, b.results[sid].cut_by = "playing", None
        self.changed(b, "resumed")

    def stop(self, reason: str = "stopped") -> None:
        """End the broadcast now: the pacing loop ends within a frame; speakers are told at once."""
        if self.stopped:
            return
        self.stopped, self.stop_reason = True, reason
        if any(p.delivery for p in self.parts):
            self._stopping.append(asyncio.ensure_future(self._stop_parts()))

    async def _stop_parts(self) -> None:
        await asyncio.gather(
            *(
                p.driver.stop(p.delivery, list(p.delivery.accepted), self.stop_reason)
                for p in self.parts
                if p.delivery and p.delivery.accepted
            )
        )


async def pace(
    outs: list[tuple[FrameSender, Resampler | None]],
    source: AudioSource,
    base_time: float,
    lead: float,
    clock: Callable[[], float],
    stopped: Callable[[], bool] = lambda: False,
) -> tuple[int, int]:
    """Frame n goes to every sender at `base_time + n * 20 ms - lead` (paced on the monotonic
    clock); a gap from the source skips n without waiting for it. A frame whose play instant has
    already passed (the loop was held that long) is taken from the source but not sent: no
    speaker could play it, and sending the backlog in one burst would hold the loop longer
    still. Returns (frames, sent)."""
    t0 = time.monotonic() + (base_time - lead - clock())
    n = sent = 0
    while not stopped():
        wait = t0 + n * STEP - time.monotonic()
        if wait > 0.0005:
            await asyncio.sleep(wait)
        if stopped():
            break
        pcm = source.take()
        if pcm is END:
            break
        if isinstance(pcm, bytes) and wait > -lead:
            now = clock()
            for sender, adapt in outs:
                sender.frame(n, adapt.convert(pcm) if adapt else pcm, now)
            sent += 1
        n += 1
    return n, sent
