"""The common play clock: an NTP-style exchange by which each speaker learns the controller's time.

A speaker sends its local time t1; the controller answers with t1, its receive time t2 and send
time t3; the speaker notes t4. offset = ((t2 - t1) + (t3 - t4)) / 2, round trip =
(t4 - t1) - (t3 - t2).
Each direction is filtered on its own: forward = t2 - t1 = offset + delay + jitter_there and
backward = t3 - t4 = offset - delay - jitter_back, so the smallest forward and the largest backward
value in the window are the ones least inflated by queueing, and their mean is the offset. Unlike
picking the single exchange with the shortest round trip, this needs only *some* exchange with
little jitter in each direction, not one with little jitter in both at once. Datagrams are MAC'd
with the speaker's pairing key. Everything here is pure: times are arguments.

The two clocks also run at different rates (quartz: tens of ppm), so the filter works on a
window with the drift taken out, and the drift is what a long history of each direction's
least-queued exchanges gives. Until the drift is known (seconds on a LAN, about two minutes on a
4G path with 50 ms of jitter) the window is kept short, or the drift tilts it by a millisecond;
once known, the window grows with the history the drift was fitted over. Simulated on a 4G-like
path (scripts/sim_clock: 40 ms + 0-50 ms each way, 5 % loss, 20 ppm, 20 seeds) with the
endpoint's schedule (endpoint/clocks.py), the error p99 is 0.53 / 0.48 / 0.40 / 0.34 / 0.38 ms at
10-20 / 20-60 / 60-200 / 200-600 / 600+ s (a 128-exchange window and one history fit:
1.06 / 1.22 / 1.20 / 0.84 / 0.74 ms); on a LAN, 0.06 ms or less from 10 s on.

Both ends keep time on an anchored clock (`PlayClock`: the wall clock read once at start-up,
advanced by the monotonic clock), so a step of either machine's wall clock (NTP, an operator)
moves neither the play instants nor the offset. The offset itself can still jump when the
controller restarts (its play clock is anchored afresh): the estimator notices a sample that no
queueing can explain and starts over instead of averaging two clocks.
"""

from __future__ import annotations

import hmac
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from broadcaster.protocol.auth import clock_mac

REQ_MAGIC = b"BCK3"  # a clock request that carries the speaker's heartbeat (BCK1 had none)
RESP_MAGIC = b"BCK2"
# t1, boot, seq, flags, controller time, rtt, p90, rtp port, state, playing
_BEAT = struct.Struct("!dIIBdffHII")
_SYNCED = 1
_DATAGRAMS = 2  # the speaker takes control requests by datagram (protocol/control.py)


class ClockMessageError(ValueError):
    """A clock datagram that is malformed or fails its MAC."""


@dataclass(frozen=True)
class Heartbeat:
    """What a speaker says of itself in every clock request (docs/protocol.md §3).

    `boot` is random per start of the speaker and `seq` counts its requests, so a replayed request
    is recognised; `controller_time` is the speaker's estimate of the controller's clock when it
    sent, so a request recorded earlier is stale. `state` is a fingerprint of the rest of what
    /status would say (volume, the security counters): when it changes, the controller asks for
    the whole status once; while it does not, the heartbeat is all the controller needs.
    `playing` names the broadcast playing by the CRC-32 of its id (0: none), so a broadcast
    starting on a thousand speakers brings no thousand status requests.
    """

    boot: int
    seq: int
    synced: bool
    controller_time: float
    rtt: float
    rtt_p90: float
    rtp_port: int
    state: int
    playing: int = 0
    datagrams: bool = False  # control requests may come by datagram to the RTP port

    def clock(self) -> dict:
        """The `clock` object of /status that this heartbeat stands for (path and sync)."""
        return {"synced": self.synced, "rtt": self.rtt, "rtt_p90": self.rtt_p90}

    def status(self, tags: dict[int, str]) -> dict:
        """The part of /status this heartbeat stands for; `playing` only when `tags` (broadcast
        tag → id, the broadcasts the controller started) resolves it."""
        out: dict = {"clock": self.clock()}
        if not self.playing:
            out["playing"] = None
        elif self.playing in tags:
            out["playing"] = tags[self.playing]
        return out


def encode_request(speaker_id: str, key: bytes, t1: float, beat: Heartbeat) -> bytes:
    """A signed clock request from a speaker, carrying its heartbeat."""
    sid = speaker_id.encode()
    fields = _BEAT.pack(
        t1,
        beat.boot,
        beat.seq,
        (_SYNCED if beat.synced else 0) | (_DATAGRAMS if beat.datagrams else 0),
        beat.controller_time,
        beat.rtt,
        beat.rtt_p90,
        beat.rtp_port,
        beat.state,
        beat.playing,
    )
    body = REQ_MAGIC + bytes([len(sid)]) + sid + fields
    return body + clock_mac(key, body)


def request_speaker(data: bytes) -> str:
    """The speaker id a clock request claims (to look up its key) before the MAC is checked."""
    if len(data) < 5 + _BEAT.size + 16 or not data.startswith(REQ_MAGIC):
        raise ClockMessageError("not a clock request")
    n = data[4]
    if len(data) != 5 + n + _BEAT.size + 16:
        raise ClockMessageError("clock request has the wrong length")
    return data[5 : 5 + n].decode(errors="replace")


def decode_request(data: bytes, key: bytes) -> tuple[float, Heartbeat]:
    """Verify a clock request and return its t1 and the heartbeat it carries."""
    body, mac = data[:-16], data[-16:]
    if not hmac.compare_digest(clock_mac(key, body), mac):
        raise ClockMessageError("clock request MAC does not verify")
    t1, boot, seq, flags, ct, rtt, p90, rtp, state, playing = _BEAT.unpack(body[-_BEAT.size :])
    synced, datagrams = bool(flags & _SYNCED), bool(flags & _DATAGRAMS)
    return t1, Heartbeat(boot, seq, synced, ct, rtt, p90, rtp, state, playing, datagrams)


def playing_tag(broadcast: str | None) -> int:
    """How a heartbeat names a broadcast: the CRC-32 of its id (0 for none)."""
    return (zlib.crc32(broadcast.encode()) or 1) if broadcast else 0


def encode_response(key: bytes, t1: float, t2: float, t3: float) -> bytes:
    """A signed clock answer from the controller."""
    body = RESP_MAGIC + struct.pack("!ddd", t1, t2, t3)
    return body + clock_mac(key, body)


def decode_response(data: bytes, key: bytes) -> tuple[float, float, float]:
    """Verify a clock answer and return (t1, t2, t3)."""
    if len(data) != 4 + 24 + 16 or not data.startswith(RESP_MAGIC):
        raise ClockMessageError("not a clock response")
    if not hmac.compare_digest(clock_mac(key, data[:-16]), data[-16:]):
        raise ClockMessageError("clock response MAC does not verify")
    t1, t2, t3 = struct.unpack("!ddd", data[4:-16])
    return t1, t2, t3


@dataclass(slots=True)
class Sample:
    """One exchange: its one-way differences, the offset it implies alone, and its round trip."""

    forward: float  # t2 - t1
    backward: float  # t3 - t4
    rtt: float
    at: float

    @property
    def offset(self) -> float:
        """The offset this exchange implies by itself."""
        return (self.forward + self.backward) / 2


# A sample whose own offset is further than its round trip plus this from the estimate cannot be
# explained by queueing (which shifts a sample by at most half its round trip, and an attacker's
# delay as much as it lengthens the round trip): the other clock was re-anchored.
STEP_TOLERANCE = 0.2
# The frequency (drift) is known once the history spans this long, and long enough for the
# path's jitter to resolve DRIFT_RESOLUTION: over a shorter span queueing passes for drift. A
# quiet path's window (every exchange, not one each way per slot) resolves WINDOW_RESOLUTION in a
# few seconds, long before the history would; on a 4G path it never does. Before that, a fit to
# PROVISIONAL_RESOLUTION is already used to straighten the window (on a 4G path from about 60 s:
# with 50 ppm of drift, p99 0.82 -> 0.42 ms from 60 to 200 s); a coarser one costs more where
# there is no drift than it saves where there is (at 0 ppm, 15e-6: p99 0.29 -> 0.41 ms at 20-60 s).
DRIFT_MIN_SPAN, DRIFT_RESOLUTION, PROVISIONAL_RESOLUTION = 10.0, 2e-6, 8e-6
WINDOW_MIN_SPAN, WINDOW_RESOLUTION = 5.0, 1e-6
HISTORY_SLOT = 2.0  # s: the history keeps each slot's least-queued exchange in each direction
# A known drift is refitted after a tenth of the history's span, at most REFIT apart: each fit is
# two hulls over the history, which at every slot cost a LAN speaker 0.8 ms per exchange.
REFIT = 20.0
DRIFT_LIMIT = 300e-6  # quartz is within ±100 ppm: a fit beyond this is noise, clamped
# The offset's window spans what is known of the drift. With none, a drift of tens of ppm tilts a
# long window by a millisecond: SPAN_UNKNOWN (the exchanges come fast meanwhile, endpoint/
# clocks.py; 15 s is better at 50 ppm and worse at 0 and 20). With a fit, as long as its
# resolution leaves a tilt of TILT (s) at most, and no longer than half the history it was fitted
# over (at least SPAN_KNOWN): the drift's error falls as the square of that span, so the tilt it
# leaves shrinks as the history grows, and so does the queueing noise. A window stops early once
# the path's jitter over its exchanges is below NOISE_TARGET (a LAN: a few dozen exchanges).
SPAN_UNKNOWN, SPAN_KNOWN, SPAN_OF_HISTORY, TILT = 20.0, 100.0, 0.5, 2.5e-4
NOISE_TARGET = 2e-6
RTT_WINDOW = 128  # exchanges: rtt and rtt_p90 describe the path over this many


class OffsetEstimator:
    """Tracks controller_time - local_time from clock exchanges: offset and frequency.

    The two clocks tick at slightly different rates (quartz: tens of ppm), so the offset is a
    line, not a constant: offset(t) = offset + drift × (t - ref). The drift comes from the
    envelopes of a long history (`_frequency`: each 2 s slot's least-queued exchange each way),
    or on a quiet path from the window's own exchanges; the offset at `ref` (the newest sample)
    is the per-direction minimum filter over the recent window with the drift taken out, the
    window as long as what is known of the drift allows. Knowing the drift is what lets a
    speaker space its exchanges out to one every few seconds once converged and still keep its
    estimate within tens of microseconds on a LAN.
    """

    def __init__(self, window: int = 512, history: int = 512) -> None:
        self.samples: deque[Sample] = deque(maxlen=window)
        self.history: deque[Sample] = deque(maxlen=history)  # the frequency's longer baseline
        # the slot not yet in the history: its start and its least-queued exchange each way
        self._slot: tuple[float, Sample, Sample] | None = None
        self._offset = 0.0  # at self._ref; kept on add: every sound-card tick asks for it
        self._drift = 0.0
        self.drift_known = False  # fitted to DRIFT_RESOLUTION (a provisional fit may be in use)
        self._from_history = False  # the history resolves it: the window's own fit is not tried
        # how finely the fit in use resolves the drift (s/s): the path's jitter over the number
        # of exchanges fitted times their span; inf before the first fit
        self.drift_resolution = float("inf")
        self._fitted = float("-inf")  # when the drift was last fitted (local clock)
        self._ref = 0.0
        self._rtt = self._rtt_p90 = 0.0
        self.steps = 0  # times the controller's clock was seen to jump (the window restarted)

    def add(self, t1: float, t2: float, t3: float, t4: float) -> Sample | None:
        """Record one exchange; returns the sample, or None if its times are impossible."""
        rtt = (t4 - t1) - (t3 - t2)
        if rtt < 0 or t4 < t1:
            return None
        s = Sample(t2 - t1, t3 - t4, rtt, t4)
        if self.synced and abs(s.offset - self.offset_at(t4)) > s.rtt + self._rtt + STEP_TOLERANCE:
            self.samples.clear()  # never average two clocks: start over from this sample
            self.history.clear()
            self._slot = None
            self._drift, self.drift_known, self._from_history = 0.0, False, False
            self.drift_resolution = float("inf")
            self.steps += 1
        self.samples.append(s)
        self._keep(s)
        self._fit()
        return s

    def _keep(self, s: Sample) -> None:
        """Keep the slot's least-queued exchange each way; at a slot's end, refit the drift from
        the history or (a quiet path, early) the window, whichever resolves it better."""
        if self._slot is None:
            self._slot = (s.at, s, s)
            return
        start, f, b = self._slot
        if s.at - start < HISTORY_SLOT:
            d = self._drift
            if s.forward - f.forward < d * (s.at - f.at):
                f = s
            if s.backward - b.backward > d * (s.at - b.at):
                b = s
            self._slot = (start, f, b)
            return
        self.history.extend(sorted({id(f): f, id(b): b}.values(), key=lambda x: x.at))
        self._slot = (s.at, s, s)
        span = self.history[-1].at - self.history[0].at
        if self.drift_known and s.at - self._fitted < min(REFIT, span / 10):
            return  # a known drift changes slowly; each fit costs two hulls over the history
        self._fitted = s.at
        fits = [_frequency(self.history, DRIFT_MIN_SPAN, PROVISIONAL_RESOLUTION)]
        if fits[0] is not None and fits[0][1] <= DRIFT_RESOLUTION:
            self._from_history = True
        if not self._from_history:
            fits.append(_frequency(self.samples, WINDOW_MIN_SPAN, WINDOW_RESOLUTION))
        best = min((f for f in fits if f is not None), key=lambda f: f[1], default=None)
        if best is not None:
            self._drift, self.drift_resolution = best
            self.drift_known = self.drift_known or best[1] <= DRIFT_RESOLUTION

    def _fit(self) -> None:
        """The offset at the newest exchange: each direction's extreme over the window."""
        xs, ref, drift = self.samples, self.samples[-1].at, self._drift
        recent = sorted(x.rtt for x in islice(reversed(xs), RTT_WINDOW))
        self._rtt, self._rtt_p90 = recent[0], recent[min(len(recent) - 1, int(0.9 * len(recent)))]
        span = SPAN_UNKNOWN
        if self.drift_resolution < float("inf"):
            h = self.history[-1].at - self.history[0].at if self.history else 0.0
            longest = max(SPAN_KNOWN, SPAN_OF_HISTORY * h)
            span = min(longest, max(SPAN_UNKNOWN, TILT / max(self.drift_resolution, 1e-12)))
        since = ref - span
        enough = (self._rtt_p90 - self._rtt) / NOISE_TARGET
        forward, backward, n = float("inf"), float("-inf"), 0
        for x in reversed(xs):
            if n and (x.at < since or n >= enough):
                break
            n += 1
            forward = min(forward, x.forward - drift * (x.at - ref))
            backward = max(backward, x.backward - drift * (x.at - ref))
        self._offset, self._ref = (forward + backward) / 2, ref

    @property
    def synced(self) -> bool:
        """True once enough exchanges have been seen to trust the estimate."""
        return len(self.samples) >= 3

    @property
    def offset(self) -> float:
        """Best estimate of controller_time - local_time at the newest exchange (0 before any)."""
        return self._offset

    @property
    def drift(self) -> float:
        """How much faster the controller's clock runs than ours (s/s; 1e-6 is 1 ppm)."""
        return self._drift

    def offset_at(self, local: float) -> float:
        """The offset at a local instant: the newest estimate carried along the drift."""
        return self._offset + self._drift * (local - self._ref)

    @property
    def rtt(self) -> float:
        """Smallest round trip seen in the window."""
        return self._rtt

    @property
    def rtt_p90(self) -> float:
        """The 90th percentile of the window's round trips (0 before any).

        With `rtt` (the smallest) it says how much the path jitters: the controller chooses a
        broadcast's lead from it (core/lead.py) and the speaker how often to exchange.
        """
        return self._rtt_p90

    def age(self, local_now: float) -> float | None:
        """Seconds since the last good exchange (local clock), None before any."""
        return local_now - self.samples[-1].at if self.samples else None

    def controller_time(self, local_now: float) -> float:
        """Best estimate of the controller's clock now: local + offset once synced, else local."""
        return local_now + self.offset_at(local_now) if self.synced else local_now


def _frequency(xs: deque[Sample], min_span: float, resolution: float) -> tuple[float, float] | None:
    """The drift over `xs`, and how finely they resolve it: the mean slope of the envelopes.

    Queueing only ever adds to forward and takes from backward, so the line under every forward
    value and the line over every backward value, each tight at the mean instant, are the offset
    line shifted by the least delay each way. None while `xs` span less than `min_span`, or too
    little for their jitter to resolve `resolution`.
    """
    if len(xs) < 8:
        return None
    rmin = min(x.rtt for x in xs)
    jitter = sorted(x.rtt - rmin for x in xs)[len(xs) // 2]
    span = xs[-1].at - xs[0].at
    if span < max(min_span, jitter / (len(xs) * resolution)):
        return None
    t = [x.at - xs[-1].at for x in xs]
    mean = sum(t) / len(t)
    slope_f = _envelope(t, [x.forward for x in xs], mean)
    slope_b = -_envelope(t, [-x.backward for x in xs], mean)
    drift = max(-DRIFT_LIMIT, min(DRIFT_LIMIT, (slope_f + slope_b) / 2))
    return drift, jitter / (len(xs) * span)


def _envelope(t: list[float], y: list[float], at: float) -> float:
    """The slope of the line under every point (t sorted) that is highest at `at`.

    It is an edge of the points' lower convex hull (monotone chain) — the line that minimises the
    summed distance to the points while staying under all of them (linear-programming skew
    estimation): one-sided noise cannot pull it up, as it pulls a least-squares fit.
    """
    hull: list[tuple[float, float]] = []
    for p in zip(t, y, strict=True):
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            if (x1 - x0) * (p[1] - y0) - (y1 - y0) * (p[0] - x0) > 0:
                break
            hull.pop()
        hull.append(p)
    for (x0, y0), (x1, y1) in zip(hull, hull[1:], strict=False):
        if x1 >= at and x1 > x0:
            return (y1 - y0) / (x1 - x0)
    return 0.0


class PlayClock:
    """The controller's play clock: Unix time at start-up, advanced by the monotonic clock.

    Every in-step speaker follows this clock. A step of the machine's wall clock (NTP, an
    operator) does not move it, so a broadcast in progress never jumps and no speaker sees its
    controller leap; `wall_error` shows how far the wall clock has wandered since start-up.
    """

    def __init__(
        self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic
    ) -> None:
        self._wall, self._mono = wall, mono
        self._m0 = mono()
        self._t0 = wall()

    def now(self) -> float:
        """Play-clock time in Unix seconds."""
        return self._t0 + (self._mono() - self._m0)

    def wall_error(self) -> float:
        """How far the wall clock is from the play clock now (seconds, + = wall ahead)."""
        return self._wall() - self.now()
