"""A speaker's sense of time: its own anchored clock and its estimate of the controller's.

The speaker never paces or times out on the wall clock. `LocalClock` reads the wall clock once at
start-up and advances with the monotonic clock (like the controller's `PlayClock`), so a step of
the speaker's wall clock (NTP, an operator, a dying RTC) moves no play instant and no timeout.
`ClockSync` runs the signed exchange with the controller's clock service (docs/protocol.md §3)
and gives the best estimate of *controller* time, which is what signed requests' freshness is
judged against: neither machine's wall clock matters once the speaker has synced. A dial-in
speaker whose UDP brings no answers carries the same requests over its channel (`attach_channel`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable

import broadcaster.protocol.clock as clk
from broadcaster.net.udp import Impairment, UdpPort, open_udp

log = logging.getLogger(__name__)
# Fast exchanges until the first estimate is good, then four a second until the drift is known
# (the minimum filter needs many samples to find ones with little jitter each way), then spaced
# out: every exchange carries the heartbeat, so the spaced interval is also the heartbeat's. A
# jittery path (4G) needs many more samples: until its drift is known (about two minutes) its
# window must stay short (a drift of tens of ppm tilts a long one), so a path whose round trips
# spread over VERY_JITTERY exchanges 20 a second (for SETTLE_JITTERY_FOR at most: a loaded machine
# must not talk itself into a storm); then four a second until the drift is fitted to
# DRIFT_PRECISE (about five more minutes), then one a second (docs/protocol.md §3). Simulated
# (scripts/sim_clock: 50 ms of jitter each way, 5 % loss, 20 ppm, 20 seeds) the error p99 stays
# within 0.53 ms from 10 s on (4, then 2 a second: 1.06-1.22 ms until 200 s, 0.74 after 600 s);
# the start costs ~590 kB in the first ten minutes (was ~260), then 0.61 MB an hour (was 1.22).
CLOCK_FAST, CLOCK_SETTLE, CLOCK_FAST_SAMPLES = 0.05, 0.25, 12
CLOCK_SPACED, JITTERY = 4.0, 0.005
CLOCK_SETTLE_JITTERY, CLOCK_TRACK, CLOCK_SPACED_JITTERY = 0.05, 0.25, 1.0
DRIFT_PRECISE = 0.3e-6
VERY_JITTERY, SETTLE_JITTERY_FOR = 0.020, 180.0
# An estimate with no good exchange for this long is not trusted to refuse a new clock service:
# the controller restarted (new port, perhaps a new play clock) and the speaker must follow it.
ESTIMATE_FRESH = 15.0  # three spaced exchanges
WALL_STEP = 1.0  # a change of wall_error beyond this is counted as a step of the wall clock
# Dial-in without UDP (docs/protocol.md §8): while the dial-in channel is up, a UDP request left
# unanswered for ANSWER_WAIT, with no UDP answer for CHANNEL_AFTER, sends the requests over the
# channel (at once: the next exchange may be CLOCK_SPACED away); one still goes by UDP every
# UDP_RETRY, and the first UDP answer brings the exchange back (the punch interval: the media's
# own probe). Time alone is not the test: spaced exchanges (CLOCK_SPACED) are further apart than
# CHANNEL_AFTER, and every one would go back to the channel.
CHANNEL_AFTER, UDP_RETRY, ANSWER_WAIT = 3.0, 5.0, 1.0


class LocalClock:
    """The speaker's clock: wall time at start-up advanced by the monotonic clock, plus `offset`.

    `offset` is a simulated clock error (a simulated speaker runs ahead or behind true time) and
    `rate_ppm` a simulated frequency error (its quartz runs that many millionths fast, so the
    offset grows, as a real horn's does: ±20–50 ppm); `wall` is the wall-clock source,
    injectable so tests can step it.
    """

    def __init__(
        self,
        offset: float = 0.0,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        rate_ppm: float = 0.0,
    ) -> None:
        self.offset = offset
        self._play = clk.PlayClock(wall, mono)
        self._k = rate_ppm * 1e-6
        self._t0 = self._play.now()

    def now(self) -> float:
        """Local time in Unix seconds; intervals on it are monotonic intervals."""
        t = self._play.now()
        return t + self.offset + self._k * (t - self._t0)

    def to_true(self, local: float) -> float:
        """True Unix time of a local instant (what a measuring microphone would log).

        Exact for a simulated speaker, whose wall source agrees with real time at start-up.
        """
        return (local - self.offset + self._k * self._t0) / (1 + self._k)

    def wall_error(self) -> float:
        """How far the wall clock has moved from this clock since start-up (+ = wall ahead)."""
        return self._play.wall_error()


class WallStep:
    """A wall-clock source that jumps by `step` seconds `at` seconds after it is made (tests)."""

    def __init__(
        self,
        at: float,
        step: float,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.at, self.step = at, step
        self._wall, self._mono = wall, mono
        self._m0 = mono()

    def __call__(self) -> float:
        """Wall time, stepped once `at` has passed."""
        return self._wall() + (self.step if self._mono() - self._m0 >= self.at else 0.0)


def exchange_interval(est: clk.OffsetEstimator) -> float:
    """Seconds until the next exchange, from how far the estimate has come."""
    if len(est.samples) < CLOCK_FAST_SAMPLES:
        return CLOCK_FAST
    if not est.drift_known:
        h = est.history[-1].at - est.history[0].at if est.history else 0.0
        very = est.rtt_p90 - est.rtt >= VERY_JITTERY
        return CLOCK_SETTLE_JITTERY if very and h < SETTLE_JITTERY_FOR else CLOCK_SETTLE
    if est.rtt_p90 - est.rtt < JITTERY:
        return CLOCK_SPACED
    return CLOCK_TRACK if est.drift_resolution > DRIFT_PRECISE else CLOCK_SPACED_JITTERY


def parse_clock_steps(spec: str | None) -> dict[str, tuple[float, float]]:
    """'ID=AT:STEP;ID2=AT:STEP' (seconds, e.g. 'h1-1=3:+5') -> {id: (at, step)}."""
    out: dict[str, tuple[float, float]] = {}
    for part in filter(None, (p.strip() for p in (spec or "").replace(",", ";").split(";"))):
        sid, _, when = part.partition("=")
        at, _, step = when.partition(":")
        try:
            out[sid.strip()] = (float(at), float(step))
        except ValueError:
            raise ValueError(f"clock step {part!r} is not ID=AT_SECONDS:STEP_SECONDS") from None
    return out


class ClockSync:
    """The exchange with the controller's clock service, and what it says about controller time."""

    def __init__(
        self,
        speaker_id: str,
        key: bytes,
        host: str,
        clock: LocalClock,
        counters: Counter,
        impair: Impairment | None = None,
        describe: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0),
    ) -> None:
        self.speaker_id, self.key, self.host = speaker_id, key, host
        self.describe = describe  # → (RTP port, status fingerprint, playing tag): the heartbeat
        self._boot = secrets.randbits(32)
        self._seq = 0
        self.clock = clock
        self.counters = counters
        self.impair = impair
        self.estimator = clk.OffsetEstimator()
        self.target: tuple[str, int] | None = None
        self._port: UdpPort | None = None
        self._task: asyncio.Task | None = None
        self._wall_error = clock.wall_error()
        self._steps_seen = 0
        self.channel: Callable[[bytes], bool] | None = None  # the dial-in channel's send, if up
        self.via_channel = False  # requests go over the channel (UDP brought no answers)
        self._udp_heard: float | None = None  # local time of the last UDP answer
        self._udp_pending: float | None = None  # the first UDP request since the last answer
        self._udp_tried = float("-inf")

    def controller_now(self) -> float:
        """Best estimate of the controller's play clock now (local before the first sync)."""
        return self.estimator.controller_time(self.clock.now())

    def fresh(self) -> bool:
        """True while the estimate is synced and recent enough to judge requests by."""
        age = self.estimator.age(self.clock.now())
        return self.estimator.synced and age is not None and age < ESTIMATE_FRESH

    def set_target(self, addr: str) -> None:
        """Sync to the clock service at HOST:PORT (a new one restarts the estimate)."""
        host, _, port = addr.rpartition(":")
        target = (host, int(port))
        if target == self.target:
            return
        self.target = target
        self.estimator = clk.OffsetEstimator()
        if self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    def attach_channel(self, send: Callable[[bytes], bool] | None) -> None:
        """Offer a dial-in channel (`send` one request over it; False if it cannot), or withdraw
        it (None). UDP has CHANNEL_AFTER from the first channel offered, or from its last
        answer, before the channel takes over."""
        self.channel = send
        if send is None:
            self.via_channel = False
        elif self._udp_heard is None:
            self._udp_heard = self.clock.now()

    def on_channel_answer(self, data: bytes) -> None:
        """An answer that came over the dial-in channel: the same check, the same estimate."""
        self._on_answer(data, None)

    def close(self) -> None:
        """Stop exchanging."""
        if self._task:
            self._task.cancel()
        if self._port:
            self._port.close()

    async def _loop(self) -> None:
        self._port = await open_udp(self.host, 0, self._on_answer, self.impair)
        next_at = time.monotonic()
        while True:
            mono, now = time.monotonic(), self.clock.now()
            fails = self._channel_due()
            if mono >= next_at or (fails is not None and now >= fails):
                if self.target:
                    req = clk.encode_request(self.speaker_id, self.key, now, self.heartbeat())
                    self._send(req, self._port, self.target)
                next_at = mono + exchange_interval(self.estimator)
            wait = next_at - mono
            due = self._channel_due()
            if due is not None:  # UDP may fail before then: look again when it would
                wait = min(wait, max(due - now, 0.01))
            await asyncio.sleep(wait)

    def _udp_fails_at(self) -> float | None:
        """When UDP counts as bringing no answers (local time): a request unanswered for
        ANSWER_WAIT and no answer for CHANNEL_AFTER. None while no UDP request waits."""
        if self._udp_pending is None or self._udp_heard is None:
            return None
        return max(self._udp_pending + ANSWER_WAIT, self._udp_heard + CHANNEL_AFTER)

    def _channel_due(self) -> float | None:
        """When the requests, still going by UDP with a channel up, take the channel (the next
        exchange goes then, not at its spaced time). None: nothing to wait for."""
        if self.channel is None or self.via_channel:
            return None
        return self._udp_fails_at()

    def _send(self, req: bytes, port: UdpPort, target: tuple[str, int]) -> None:
        """By UDP; over the dial-in channel while UDP brings no answers, with the same request
        also by UDP every UDP_RETRY (its answer switches back; the controller counts the
        heartbeat once, by its sequence number)."""
        now = self.clock.now()
        fails = self._udp_fails_at()
        use = self.channel is not None and fails is not None and now >= fails
        if use != self.via_channel:
            self.via_channel = use
            log.info("%s: clock exchange by %s", self.speaker_id, "channel" if use else "UDP")
        if use and self.channel is not None and self.channel(req):
            if now - self._udp_tried < UDP_RETRY:
                return
            self._udp_tried = now
        if self._udp_pending is None:
            self._udp_pending = now
        port.sendto(req, target)

    def heartbeat(self) -> clk.Heartbeat:
        """What the next request says of this speaker (each one numbered)."""
        est = self.estimator
        rtp_port, state, playing = self.describe()
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return clk.Heartbeat(
            self._boot,
            self._seq,
            est.synced,
            self.controller_now(),
            est.rtt,
            est.rtt_p90,
            rtp_port,
            state,
            playing,
            datagrams=True,  # the endpoint answers control datagrams on its RTP port
        )

    def _on_answer(self, data: bytes, addr: tuple | None) -> None:
        t4 = self.clock.now()
        if addr is not None and self._port is not None:  # when the kernel had it, not the loop
            t4 -= self._port.arrival_age()
        try:
            t1, t2, t3 = clk.decode_response(data, self.key)
        except clk.ClockMessageError:
            self.counters["dropped_clock"] += 1
            return
        if addr is not None:  # by UDP (None: over the dial-in channel)
            self._udp_heard, self._udp_pending = t4, None
        est = self.estimator
        est.add(t1, t2, t3, t4)
        if est.steps != self._steps_seen:
            self._steps_seen = est.steps
            self.counters["controller_clock_steps"] += 1
            log.info("%s: the controller's clock jumped; clock sync starts over", self.speaker_id)

    def watch_wall(self) -> None:
        """Count a step of the wall clock (it moves nothing here, but an operator should know)."""
        err = self.clock.wall_error()
        if abs(err - self._wall_error) > WALL_STEP:
            self.counters["wall_clock_steps"] += 1
            log.info(
                "%s: wall clock stepped by %+.3f s (ignored: play and timeouts run on the "
                "monotonic clock)",
                self.speaker_id,
                err - self._wall_error,
            )
        self._wall_error = err
