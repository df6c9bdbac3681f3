"""Full garbage collections kept short: the one pause of the event loop that grows with the site.

CPython's cyclic collector walks every tracked object of the oldest generation each time it
collects it. A controller of 1,000 speakers holds ~60,000 long-lived objects (modules,
functions, the zone tree, a state per speaker) and one such walk took 57 ms here — five times
the 10 ms a loop may be blocked (issue 14) — although almost none of those objects ever become
garbage. `gc.freeze()` moves every object alive at that moment to a permanent generation the
collector no longer walks (reference counting still frees them as usual; only a reference cycle
among them would stay), as long-lived servers do after start-up.

`HeapGuard` freezes once the controller has started, again after young collections during its
first minutes (EARLY), and after any full collection that took longer than PAUSE_LIMIT, at most
once per FREEZE_GAP: survivors of a full collection are
long-lived by definition, and a steady controller creates few new ones, so the guard soon has
nothing left to do. It also measures every full collection (count, latest, worst), which the
loop-lag snapshot shows beside the lag it causes.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Callable

PAUSE_LIMIT = 0.005  # s: a full collection longer than this freezes its survivors
FREEZE_GAP = 600.0  # s: at most one freeze per this long, so cyclic garbage frozen stays bounded
# While the controller is young (discovery: a thousand speakers' state and mDNS records arrive
# over the first seconds to minutes) what survives a young collection is frozen too, at most
# every EARLY_EVERY: gc.freeze() alone costs nothing, so a full collection has little left to
# walk (at 1,000 speakers with mDNS the first one had taken 56-79 ms, all of it objects made
# after start-up; freezing every 20 s was not often enough). Cyclic garbage already in the oldest
# generation then is kept: a one-time few kB.
EARLY, EARLY_EVERY = 600.0, 1.0


class HeapGuard:
    """Measures full collections and freezes long-lived objects; `install()` / `remove()`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._began = 0.0
        self.pauses: deque[float] = deque(maxlen=200)  # the latest full collections, seconds
        self.collections = 0  # full collections since install
        self.worst = 0.0
        self.young_worst = 0.0  # the longest collection of a younger generation
        self.young_worst_info: dict = {}  # its generation and the garbage it found
        self.freezes = 0
        self.frozen = 0  # objects in the permanent generation after the latest freeze
        self._last_freeze: float | None = None  # the latest freeze after a slow collection
        self._installed = self._early = 0.0

    def install(self, collect: bool = True) -> None:
        """Freeze what start-up built and watch every collection; `collect=False` when the
        caller collected just before (a full collection walks every object: ~25 ms at 1,000
        speakers, which a serving process does before it opens its sockets)."""
        if collect:
            gc.collect()
        self._freeze()
        self._installed = self._early = self._clock()
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def remove(self) -> None:
        """Stop watching (objects frozen stay frozen)."""
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _freeze(self, count: bool = True) -> None:
        """Move every object alive now out of the collector's walk."""
        gc.freeze()
        self.freezes += 1
        if count:  # it walks the list: counted here, not per snapshot, and not every second
            self.frozen = gc.get_freeze_count()

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        if info.get("generation") != 2:
            pause = time.perf_counter() - self._began
            if pause > self.young_worst:
                self.young_worst = pause
                self.young_worst_info = {**info, "thread": threading.current_thread().name}
            now = self._clock()
            if now - self._installed < EARLY and now - self._early >= EARLY_EVERY:
                self._early = now
                self._freeze(count=False)  # young survivors of a young controller: long-lived
            return
        pause = time.perf_counter() - self._began
        self.pauses.append(pause)
        self.collections += 1
        self.worst = max(self.worst, pause)
        now = self._clock()
        if pause > PAUSE_LIMIT and (
            self._last_freeze is None or now - self._last_freeze >= FREEZE_GAP
        ):
            self._freeze()  # what just survived a full collection is long-lived
            self._last_freeze = now

    def snapshot(self) -> dict:
        """Full collections: how many, the latest and the worst pause (ms), frozen objects; and
        the worst pause of a younger generation's."""
        return {
            "count": self.collections,
            "last_ms": round(self.pauses[-1] * 1000, 2) if self.pauses else None,
            "worst_ms": round(self.worst * 1000, 2),
            "young_worst_ms": round(self.young_worst * 1000, 2),
            "young_worst": self.young_worst_info,  # generation, collected, uncollectable
            "frozen": self.frozen,  # counted at install and at slow collections (a walk)
            "freezes": self.freezes,
        }
