"""The lead of a broadcast, chosen from the measured paths of its own speakers; pure, no I/O.

The lead is the time between handing frame n to the network and its play instant. A frame is
heard only if its packet arrives before that instant, so the lead must cover the slowest path of
the broadcast's speakers: one-way delay plus jitter, plus a margin for the two machines' own
scheduling. Each of our speakers reports its clock exchange in `/status`
(docs/protocol.md §2): the smallest round trip of its window (`clock.rtt`) and the 90th
percentile (`clock.rtt_p90`).

Why half the smallest round trip is the right delay even on an asymmetric path (a slow 4G
downlink, a fast uplink): the two-way exchange biases the speaker's offset by half the
asymmetry, so it plays (d_down − d_up)/2 later than true; its packets arrive d_down after they
are sent. The lead they need is d_down − (d_down − d_up)/2 = (d_down + d_up)/2 = rtt/2, whatever
the split. Jitter is taken from the spread of the round trips (p90 − min), which includes both
directions' queueing and so errs on the safe side; K of it covers the tail beyond p90.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

K_JITTER = 2.0  # how many spreads (rtt_p90 - rtt) of jitter the lead covers
MARGIN = 0.05  # seconds for the controller's pacing and the speaker's tick (~5 ms) and loop
CAP = 2.0  # never more: a path that needs more is broken, not slow (EN 54-16 allows 3 s)


@dataclass(frozen=True)
class PathFigure:
    """One speaker's path as its clock exchange measured it (seconds)."""

    delay: float  # one-way delay: half the smallest round trip
    jitter: float  # spread of recent round trips: p90 - min

    def need(self, k: float = K_JITTER) -> float:
        """Lead this path needs before any margin."""
        return self.delay + k * self.jitter

    def to_dict(self) -> dict[str, float]:
        """JSON form (milliseconds would lose the LAN's sub-millisecond figures)."""
        return {"delay": round(self.delay, 6), "jitter": round(self.jitter, 6)}


@dataclass(frozen=True)
class LeadChoice:
    """The lead chosen for one broadcast and why."""

    lead: float  # seconds
    floor: float  # the configured minimum it started from
    need: float  # worst path's delay + k × jitter + margin (0 when no path is known)
    worst: str | None  # the speaker whose path set `need`
    capped: bool  # need exceeded the cap
    unmeasured: int  # speakers of the broadcast with no usable figure (they got the floor)

    def to_dict(self) -> dict[str, object]:
        """JSON form for events and the broadcast record."""
        return {
            "lead": round(self.lead, 4),
            "floor": self.floor,
            "need": round(self.need, 4),
            "worst": self.worst,
            "capped": self.capped,
            "unmeasured": self.unmeasured,
        }


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        return None
    return float(v)


def path_of(clock: object) -> PathFigure | None:
    """A speaker's path from the `clock` object of its /status; None if unsynced or malformed.

    A speaker that does not send `rtt_p90` (an older endpoint) is taken as jitter-free.
    """
    if not isinstance(clock, dict) or clock.get("synced") is not True:
        return None
    rtt = _number(clock.get("rtt"))
    if rtt is None:
        return None
    p90 = _number(clock.get("rtt_p90"))
    spread = max(0.0, p90 - rtt) if p90 is not None else 0.0
    return PathFigure(rtt / 2, spread)


def choose_lead(
    paths: Mapping[str, PathFigure | None],
    floor: float,
    *,
    k: float = K_JITTER,
    margin: float = MARGIN,
    cap: float = CAP,
) -> LeadChoice:
    """max over the speakers of (delay + k × jitter) + margin, never below floor, at most cap."""
    worst, need, unmeasured = None, 0.0, 0
    for sid in sorted(paths):
        p = paths[sid]
        if p is None:
            unmeasured += 1
            continue
        n = p.need(k) + margin
        if worst is None or n > need:
            worst, need = sid, n
    lead = max(floor, need)
    capped = lead > cap
    return LeadChoice(min(lead, max(cap, floor)), floor, need, worst, capped, unmeasured)
