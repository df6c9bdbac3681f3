"""Conflicts between planned occurrences: two schedules on shared speakers at overlapping times;
pure (slots in, warnings out)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Slot:
    """One planned occurrence: which schedule, from when to when (Unix seconds), on which
    speakers."""

    schedule: str
    title: str
    start: float
    end: float
    speakers: frozenset[str]


def conflicts(slots: list[Slot], tz: ZoneInfo) -> list[dict]:
    """Every pair of slots of different schedules that overlap in time on a shared speaker."""
    ordered = sorted(slots, key=lambda s: (s.start, s.schedule))
    out: list[dict] = []
    open_: list[Slot] = []
    for slot in ordered:
        open_ = [o for o in open_ if o.end > slot.start]
        for other in open_:
            shared = other.speakers & slot.speakers
            if other.schedule == slot.schedule or not shared:
                continue
            out.append(
                {
                    "schedules": [other.schedule, slot.schedule],
                    "titles": [other.title, slot.title],
                    "at": dt.datetime.fromtimestamp(slot.start, tz).isoformat(),
                    "overlap_seconds": round(min(other.end, slot.end) - slot.start, 3),
                    "speakers": sorted(shared),
                    "message": (
                        f"{other.title or other.schedule} "
                        f"({dt.datetime.fromtimestamp(other.start, tz):%m-%d %H:%M:%S}) and "
                        f"{slot.title or slot.schedule} "
                        f"({dt.datetime.fromtimestamp(slot.start, tz):%m-%d %H:%M:%S}) "
                        f"overlap on {len(shared)} speaker(s): the higher priority cuts "
                        "the other, or it is refused as busy"
                    ),
                }
            )
        open_.append(slot)
    return out
