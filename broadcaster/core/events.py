"""The event bus: speakers going online/offline, broadcast state changes, attacks seen.

Everything that happens is published here once; the journal, the live feed (SSE/WebSocket) and
the console subscribe. Only the most recent events stay in memory: a controller runs for months.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
EVENTS_KEPT = 1000
# kinds an operator must notice: logged at WARNING
ALARMS = frozenset({"attack", "offline", "storage_fault", "advert_conflict"})


@dataclass(frozen=True)
class Event:
    """One thing that happened: kind, when (Unix time), and its details (speaker, broadcast …)."""

    kind: str
    at: float
    detail: dict[str, Any] = field(default_factory=dict)
    seq: int = 0

    def to_dict(self) -> dict:
        """JSON form: {"seq", "at", "kind", **detail}."""
        return {"seq": self.seq, "at": self.at, "kind": self.kind, **self.detail}

    @property
    def speakers(self) -> list[str]:
        """The speakers this event concerns (for filtering a feed to a scope)."""
        if "speaker" in self.detail:
            return [self.detail["speaker"]]
        return list(self.detail.get("speakers_list", ()))


Subscriber = Callable[[Event], None]


class EventBus:
    """Publishes events to subscribers; keeps the last EVENTS_KEPT in memory."""

    def __init__(self, kept: int = EVENTS_KEPT, clock: Callable[[], float] = time.time) -> None:
        self.recent: deque[Event] = deque(maxlen=kept)
        self._subs: list[Subscriber] = []
        self._clock = clock
        self._seq = 0

    def __iter__(self) -> Iterator[dict]:
        """The recent events as JSON dicts, oldest first."""
        return (ev.to_dict() for ev in list(self.recent))

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Call fn for every event from now on; returns a function that unsubscribes."""
        self._subs.append(fn)
        return lambda: self._subs.remove(fn) if fn in self._subs else None

    def publish(self, kind: str, **detail: Any) -> Event:
        """Record an event and hand it to every subscriber (a failing subscriber is logged)."""
        self._seq += 1
        ev = Event(kind, self._clock(), detail, self._seq)
        self.recent.append(ev)
        log.log(logging.WARNING if kind in ALARMS else logging.INFO, "%s %s", kind, detail)
        for fn in list(self._subs):
            try:
                fn(ev)
            except Exception:  # a subscriber's fault must never reach the publisher
                log.exception("event subscriber %r failed on %s", fn, kind)
        return ev
