"""How late the event loop runs: a stall anywhere delays every packet and every answer.

A task sleeps a fixed period and notes how much later than asked it woke; the distribution of
that lateness (p50/p99/max over a sliding window) is the loop's lag, shown in /api/health and
reported by the benchmarks. Pure statistics apart from the one sleeping task — and a watchdog
thread that, when the loop has not come round for STALL seconds, logs where it is stuck (the
loop thread's stack at that moment) and keeps it for /api/health: a stall names its culprit.

On a busy machine much of the lag is only the loop's thread waiting for a core; the kernel counts
that wait (its run-queue delay), so the snapshot also gives the lag net of it — the loop's own.

A loop stuck in a socket call may be in the kernel, or back from it and waiting for the GIL that
another thread holds: its Python stack is the same. The stall log tells them apart by the system
call the loop's thread is in at that moment (Linux /proc/…/syscall): `futex` is a wait for the
GIL (or another lock), `connect` the kernel's own work, `running` the loop's own code; and by how
the stall's time went (the thread's schedstat): on a core, waiting for one, or asleep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import traceback
from collections import deque

log = logging.getLogger(__name__)
PERIOD = 0.05
WINDOW = 1200  # one minute at 50 ms
# s without a turn of the loop: the watchdog looks where it is (a benchmark hunting shorter
# stalls sets BROADCASTER_STALL_S lower)
STALL = float(os.environ.get("BROADCASTER_STALL_S", "0.25"))
# s: a diagnosis, not for service — asyncio's debug mode logs every callback that runs longer
# (which callback, not only where the loop was when the watchdog looked); debug mode's own checks
# cost CPU, so only a benchmark hunting stalls sets it
SLOW_CALLBACK = os.environ.get("BROADCASTER_SLOW_CALLBACK_S")


class _RunDelay:
    """The calling thread's time spent runnable but waiting for a core (Linux schedstat)."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None  # not Linux, or no schedstat: every lag counts as the loop's own

    def seconds(self) -> float:
        """Run-queue delay so far (0 when unknown)."""
        return self.times()[1]

    def times(self) -> tuple[float, float]:
        """Time on a core and run-queue delay so far, s ((0, 0) when unknown). Any thread may
        ask: the file names the thread that opened it."""
        if self._fd is None:
            return 0.0, 0.0
        try:
            fields = os.pread(self._fd, 64, 0).split()
            return int(fields[0]) / 1e9, int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0, 0.0

    def close(self) -> None:
        """Release the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# x86-64's numbers of the calls a stalled loop is found in; elsewhere the number is given
_SYSCALLS = {
    0: "read",
    1: "write",
    3: "close",
    7: "poll",
    23: "select",
    35: "nanosleep",
    41: "socket",
    42: "connect",
    43: "accept",
    44: "sendto",
    45: "recvfrom",
    46: "sendmsg",
    47: "recvmsg",
    202: "futex",
    230: "clock_nanosleep",
    232: "epoll_wait",
    257: "openat",
    270: "pselect6",
    281: "epoll_pwait",
    288: "accept4",
    299: "recvmmsg",
    307: "sendmmsg",
}


def in_syscall(native_id: int) -> str | None:
    """What the thread `native_id` of this process is doing, as the kernel sees it: `running`
    (its own code, or waiting for a core), the name of the system call it is in (`syscall N`
    where unnamed), or None when unknown (not Linux)."""
    try:
        with open(f"/proc/self/task/{native_id}/syscall") as f:
            first = f.read().split(maxsplit=1)[0]
    except (OSError, IndexError):
        return None
    if not first.lstrip("-").isdigit():
        return first  # "running"
    n = int(first)
    if n < 0:
        return "blocked"  # in the kernel, not in a system call
    name = _SYSCALLS.get(n) if os.uname().machine == "x86_64" else None
    return name or f"syscall {n}"


class LoopWatch:
    """Measures event-loop lag; `start()` in the loop, `snapshot()` anywhere."""

    def __init__(self, period: float = PERIOD, window: int = WINDOW) -> None:
        self.period = period
        self.lags: deque[float] = deque(maxlen=window)
        self.own: deque[float] = deque(maxlen=window)  # each lag less its run-queue wait
        self.at: deque[float] = deque(maxlen=window)  # when each was measured (monotonic)
        self.worst = 0.0
        self.stalls: deque[dict] = deque(maxlen=20)  # the latest stalls: how long, and where
        self._task: asyncio.Task | None = None
        self._beat = time.monotonic()
        # at the beat: the loop's thread's time on a core and waiting for one so far, and where
        # to read them (the watchdog splits a stall's time by them)
        self._beat_times = (0.0, 0.0)
        self._sched: _RunDelay | None = None
        self._done = threading.Event()

    def start(self) -> None:
        """Begin measuring (and watching, from a thread of its own)."""
        # opened here, in the loop's thread (the file names the thread that opens it); the first
        # beat is now, so a stall in the rest of this turn is split truly too
        self._sched = _RunDelay()
        self._beat_times, self._beat = self._sched.times(), time.monotonic()
        self._task = asyncio.ensure_future(self._run())
        if SLOW_CALLBACK:
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            loop.slow_callback_duration = float(SLOW_CALLBACK)
        loop_thread = threading.get_ident()
        threading.Thread(
            target=self._watch,
            args=(loop_thread, threading.get_native_id()),
            name="loopwatch",
            daemon=True,
        ).start()

    def _watch(self, loop_thread: int, native_id: int) -> None:
        seen = None  # the beat of the stall already reported
        while not self._done.wait(STALL / 2):
            beat = self._beat
            # the beat is taken once a period: late by STALL past its period is a stall
            if time.monotonic() - beat < self.period + STALL or beat == seen:
                continue
            seen = beat
            kernel = in_syscall(native_id)  # first: the moment the stall was seen
            span = time.monotonic() - beat
            sched, (cpu0, wait0) = self._sched, self._beat_times
            cpu1, wait1 = sched.times() if sched is not None else (cpu0, wait0)
            on_core, run_queue = max(0.0, cpu1 - cpu0), max(0.0, wait1 - wait0)
            frames = sys._current_frames()
            frame = frames.get(loop_thread)
            where = traceback.format_stack(frame, limit=12) if frame is not None else []
            stall = {
                "since": beat,
                "where": [w.strip().splitlines()[0] for w in where[-8:]],
                "kernel": kernel,
                # since its last beat (a period before the stall's start): the loop's thread
                # on a core (its own work), waiting for one (the machine's), and the rest
                # asleep (in the kernel, or waiting for the GIL or a lock)
                "span_ms": round(span * 1000, 1),
                "on_core_ms": round(on_core * 1000, 1),
                "run_queue_ms": round(run_queue * 1000, 1),
            }
            self.stalls.append(stall)
            # a loop that waits for the GIL stands wherever it let go: what the process's other
            # threads were doing at that moment names the holder
            names = {t.ident: t.name for t in threading.enumerate()}
            others = "".join(
                f"  thread {names.get(tid, tid)}: "
                + " < ".join(
                    f"{fs.name} ({os.path.basename(fs.filename)}:{fs.lineno})"
                    for fs in reversed(traceback.extract_stack(f, limit=4))
                )
                + "\n"
                for tid, f in frames.items()
                if tid not in (loop_thread, threading.get_ident())
            )
            log.warning(
                "event loop stalled > %.3f s; its thread: %s; of the %.1f ms since its last beat "
                "%.1f on a core, %.1f waiting for one, the rest asleep; it is in:\n%s"
                "the other threads:\n%s",
                STALL,
                f"in {kernel}" if kernel not in (None, "running") else kernel or "unknown",
                span * 1000,
                on_core * 1000,
                run_queue * 1000,
                "".join(where),
                others,
            )

    async def _run(self) -> None:
        waited = self._sched
        assert waited is not None  # start() opened it
        try:
            while True:
                times = waited.times()
                asked = time.monotonic()
                self._beat_times, self._beat = times, asked  # (the watchdog reads _beat first)
                wait0 = times[1]
                await asyncio.sleep(self.period)
                lag = max(0.0, time.monotonic() - asked - self.period)
                self.lags.append(lag)
                # what of the lag the thread spent runnable but without a core (the machine
                # was busy) is not the loop's doing; the rest is: its own work, a blocking call
                self.own.append(max(0.0, lag - (waited.seconds() - wait0)))
                self.at.append(asked)
                self.worst = max(self.worst, lag)
        finally:
            self._sched = None
            waited.close()

    def snapshot(self, last: float | None = None) -> dict:
        """Lag in milliseconds over the window (or its `last` seconds): p50, p99, max; and the
        worst since start.

        `own_p99_ms` / `own_max_ms`: the same for the part of each lag that was the loop's own
        doing (its work, a blocking call, the collector) rather than waiting for a core on a busy
        machine (the kernel's run-queue delay of the loop's thread, /proc schedstat).
        """
        lags, owns, ats = list(self.lags), list(self.own), list(self.at)
        if last is not None:  # only the samples of the last `last` seconds
            since = time.monotonic() - last
            first = next((i for i, t in enumerate(ats) if t >= since), len(ats))  # (in order)
            lags, owns, ats = lags[first:], owns[first:], ats[first:]
        xs, own = sorted(lags), sorted(owns)
        stalls = [
            {
                "ago_s": round(time.monotonic() - st["since"], 1),
                **{k: v for k, v in st.items() if k != "since"},
            }
            for st in self.stalls
        ]
        common = {"worst_ms": round(self.worst * 1000, 2), "samples": len(xs), "stalls": stalls}
        if not xs:  # none yet, or none in the last `last` seconds: the same keys, no figures
            keys = ("p50_ms", "p99_ms", "max_ms", "own_p99_ms", "own_max_ms", "own_max_ago_s")
            return {**dict.fromkeys(keys), **common}

        def pct(q: float, v: list[float] = xs) -> float:
            return round(v[min(len(v) - 1, int(q * len(v)))] * 1000, 2)

        return {
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
            "max_ms": round(xs[-1] * 1000, 2),
            "own_p99_ms": pct(0.99, own),
            "own_max_ms": round(own[-1] * 1000, 2),
            # how long ago the loop's longest own stall of the window was (to tell it by what
            # happened then: a broadcast's start, say)
            "own_max_ago_s": round(time.monotonic() - ats[owns.index(own[-1])], 1),
            **common,
        }

    async def close(self) -> None:
        """Stop measuring."""
        self._done.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._sched is not None:  # a task cancelled before it ran never closed it
            self._sched.close()
            self._sched = None
