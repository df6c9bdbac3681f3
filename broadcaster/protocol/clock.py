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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from broadcaster.protocol.auth import clock_mac

REQ_MAGIC = b"BCK1"
RESP_MAGIC = b"BCK2"


class ClockMessageError(ValueError):
    """A clock datagram that is malformed or fails its MAC."""


def encode_request(speaker_id: str, key: bytes, t1: float) -> bytes:
    """A signed clock request from a speaker."""
    sid = speaker_id.encode()
    body = REQ_MAGIC + bytes([len(sid)]) + sid + struct.pack("!d", t1)
    return body + clock_mac(key, body)


def request_speaker(data: bytes) -> str:
    """The speaker id a clock request claims (to look up its key) before the MAC is checked."""
    if len(data) < 5 + 8 + 16 or not data.startswith(REQ_MAGIC):
        raise ClockMessageError("not a clock request")
    n = data[4]
    if len(data) != 5 + n + 8 + 16:
        raise ClockMessageError("clock request has the wrong length")
    return data[5 : 5 + n].decode(errors="replace")


def decode_request(data: bytes, key: bytes) -> float:
    """Verify a clock request and return its t1."""
    body, mac = data[:-16], data[-16:]
    if not hmac.compare_digest(clock_mac(key, body), mac):
        raise ClockMessageError("clock request MAC does not verify")
    return struct.unpack("!d", body[-8:])[0]


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


@dataclass
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


class OffsetEstimator:
    """Tracks controller_time - local_time from clock exchanges (per-direction minimum filter)."""

    def __init__(self, window: int = 40) -> None:
        self.samples: deque[Sample] = deque(maxlen=window)
        self._offset = 0.0  # kept on add: every sound-card tick asks for the offset
        self._rtt = 0.0
        self.steps = 0  # times the controller's clock was seen to jump (the window restarted)

    def add(self, t1: float, t2: float, t3: float, t4: float) -> Sample | None:
        """Record one exchange; returns the sample, or None if its times are impossible."""
        rtt = (t4 - t1) - (t3 - t2)
        if rtt < 0 or t4 < t1:
            return None
        s = Sample(t2 - t1, t3 - t4, rtt, t4)
        if self.synced and abs(s.offset - self._offset) > s.rtt + self._rtt + STEP_TOLERANCE:
            self.samples.clear()  # never average two clocks: start over from this sample
            self.steps += 1
        self.samples.append(s)
        forward = min(x.forward for x in self.samples)
        backward = max(x.backward for x in self.samples)
        self._offset = (forward + backward) / 2
        self._rtt = min(x.rtt for x in self.samples)
        return s

    @property
    def synced(self) -> bool:
        """True once enough exchanges have been seen to trust the estimate."""
        return len(self.samples) >= 3

    @property
    def offset(self) -> float:
        """Best estimate of controller_time - local_time (0 before any sample)."""
        return self._offset

    @property
    def rtt(self) -> float:
        """Smallest round trip seen in the window."""
        return self._rtt

    def age(self, local_now: float) -> float | None:
        """Seconds since the last good exchange (local clock), None before any."""
        return local_now - self.samples[-1].at if self.samples else None

    def controller_time(self, local_now: float) -> float:
        """Best estimate of the controller's clock now: local + offset once synced, else local."""
        return local_now + self._offset if self.synced else local_now


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
