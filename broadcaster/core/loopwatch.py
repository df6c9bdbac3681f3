"""How late the event loop runs: a stall anywhere delays every packet and every answer.

A task sleeps a fixed period and notes how much later than asked it woke; the distribution of
that lateness (p50/p99/max over a sliding window) is the loop's lag, shown in /api/health and
reported by the benchmarks. Pure statistics apart from the one sleeping task.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

PERIOD = 0.05
WINDOW = 1200  # one minute at 50 ms


class LoopWatch:
    """Measures event-loop lag; `start()` in the loop, `snapshot()` anywhere."""

    def __init__(self, period: float = PERIOD, window: int = WINDOW) -> None:
        self.period = period
        self.lags: deque[float] = deque(maxlen=window)
        self.worst = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Begin measuring."""
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self.period)
            lag = max(0.0, time.monotonic() - asked - self.period)
            self.lags.append(lag)
            self.worst = max(self.worst, lag)

    def snapshot(self) -> dict:
        """Lag in milliseconds over the window: p50, p99, max; and the worst since start."""
        xs = sorted(self.lags)
        if not xs:
            return {"p50_ms": None, "p99_ms": None, "max_ms": None, "worst_ms": None}

        def pct(q: float) -> float:
            return round(xs[min(len(xs) - 1, int(q * len(xs)))] * 1000, 2)

        return {
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "max_ms": round(xs[-1] * 1000, 2),
            "worst_ms": round(self.worst * 1000, 2),
            "samples": len(xs),
        }

    async def close(self) -> None:
        """Stop measuring."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
