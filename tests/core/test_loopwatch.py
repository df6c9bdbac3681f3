"""LoopWatch: a blocked loop shows as lag of its own, with the culprit named; a wait for a core
is told apart by the kernel's run-queue delay."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time

import pytest

from broadcaster.core import loopwatch
from broadcaster.core.loopwatch import LoopWatch, _RunDelay


def block_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # a blocking call in the loop's thread: what the watch must catch


async def test_a_blocking_call_is_lag_of_the_loops_own_and_names_itself(monkeypatch):
    monkeypatch.setattr(loopwatch, "STALL", 0.1)
    watch = LoopWatch(period=0.01)
    watch.start()
    try:
        await asyncio.sleep(0.1)
        block_the_loop(0.4)
        await asyncio.sleep(0.1)
        snap = watch.snapshot()
    finally:
        await watch.close()
    assert snap["max_ms"] >= 350
    # asleep, not waiting for a core: all of it counts as the loop's own
    assert snap["own_max_ms"] >= 300
    assert 0.1 <= snap["own_max_ago_s"] <= 5  # when: the block, not the sleeps around it
    assert snap["stalls"], "the watchdog saw no stall"
    assert any("block_the_loop" in w for w in snap["stalls"][-1]["where"]), snap["stalls"]


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _hold(lock: threading.Lock, seconds: float) -> None:
    with lock:
        time.sleep(seconds)


def _wait_for(lock: threading.Lock) -> None:
    with lock:  # waits for another thread, as for the GIL
        pass


@pytest.mark.skipif(
    not os.path.exists("/proc/thread-self/syscall") or os.uname().machine != "x86_64",
    reason="Linux /proc syscall; the names are x86-64's",
)
async def test_a_stall_says_whether_the_loop_was_in_the_kernel_waiting_or_running(monkeypatch):
    # the same Python stack may be the kernel's work or a wait for a lock (the GIL) after it:
    # the system call the loop's thread is in tells them apart
    monkeypatch.setattr(loopwatch, "STALL", 0.1)
    watch = LoopWatch(period=0.01)
    watch.start()
    lock = threading.Lock()
    holder = threading.Thread(target=_hold, args=(lock, 0.5))
    try:
        await asyncio.sleep(0.1)
        block_the_loop(0.5)  # asleep in the kernel
        await asyncio.sleep(0.2)
        _spin(0.5)  # the loop's own code
        await asyncio.sleep(0.2)
        holder.start()
        await asyncio.sleep(0.05)
        _wait_for(lock)
        await asyncio.sleep(0.2)
        stalls = watch.snapshot()["stalls"]
    finally:
        await watch.close()
        holder.join()

    def stall_in(call: str) -> dict:  # the stall whose stack names the call
        return next(st for st in stalls if any(call in w for w in st["where"]))

    asleep, spinning, waiting = stall_in("block_the_loop"), stall_in("_spin"), stall_in("_wait_for")
    assert asleep["kernel"] in ("clock_nanosleep", "nanosleep"), stalls
    assert spinning["kernel"] == "running", stalls
    assert waiting["kernel"] == "futex", stalls
    # and how the stall's time went: asleep is neither on a core nor waiting for one; spinning
    # is one or the other (on a busy machine, partly waiting), whatever the load
    for st in (asleep, waiting):
        assert st["on_core_ms"] + st["run_queue_ms"] < st["span_ms"] / 2, st
    assert spinning["on_core_ms"] + spinning["run_queue_ms"] > spinning["span_ms"] * 0.6, spinning


async def test_the_lag_of_the_last_seconds_leaves_out_a_stall_before_them():
    watch = LoopWatch(period=0.01)
    watch.start()
    try:
        await asyncio.sleep(0.05)
        block_the_loop(0.3)  # a broadcast's set-up, say
        await asyncio.sleep(1.0)
        whole, last = watch.snapshot(), watch.snapshot(last=0.5)
    finally:
        await watch.close()
    assert whole["own_max_ms"] >= 250
    assert last["own_max_ms"] < 250 and 0 < last["samples"] < whole["samples"]


def test_a_window_without_samples_keeps_every_key():
    # /api/health asked just after start (or for fewer seconds than one period): no figures,
    # the same keys — a client reading "samples" or "stalls" must not break on a young controller
    watch = LoopWatch(period=0.01)
    full = {"p50_ms", "p99_ms", "max_ms", "own_p99_ms", "own_max_ms", "own_max_ago_s"}
    snap = watch.snapshot(last=5)
    assert set(snap) == full | {"worst_ms", "samples", "stalls"}
    assert snap["samples"] == 0 and snap["stalls"] == [] and snap["p99_ms"] is None


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="Linux schedstat")
def test_run_delay_grows_when_more_threads_want_a_core_than_there_are():
    hogs = [
        multiprocessing.get_context("spawn").Process(target=_spin, args=(3.0,))
        for _ in range(2 * (os.cpu_count() or 1))
    ]
    for h in hogs:
        h.start()
    try:
        time.sleep(0.5)  # the hogs are spinning
        delay = _RunDelay()
        before = delay.seconds()
        _spin(0.5)
        waited = delay.seconds() - before
        delay.close()
    finally:
        for h in hogs:
            h.terminate()
            h.join()
    assert waited > 0.01, "a spinning thread among twice as many hogs as cores never waited"
