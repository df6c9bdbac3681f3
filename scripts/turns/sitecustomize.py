"""A per-turn timer for `broadcaster serve`, loaded by Python at start-up through PYTHONPATH.

`scripts/bench_scale --turns-ms N` puts this directory on the controller's PYTHONPATH. Every
callback the controller's event loop (the main thread's) runs is timed: the loop thread's own
CPU (`time.thread_time`, which a wait for a core or for the GIL does not count) and its wall
time. A callback whose CPU passes BROADCASTER_TURNS_MS is written as one JSON line to
BROADCASTER_TURNS_OUT: when, which callback (for a task's turn, its coroutine and where it
waits after the turn), both times, and the collections that ran inside it. It names the turns
that block the loop, where asyncio's debug mode gives only wall time and costs far more. Other
processes that inherit the variables (the simulators) are left alone.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("BROADCASTER_TURNS_MS") and "serve" in sys.argv:
    import asyncio.events
    import gc
    import json
    import threading
    import time

    _LIMIT = float(os.environ["BROADCASTER_TURNS_MS"]) / 1000
    _OUT = open(os.environ["BROADCASTER_TURNS_OUT"], "a", buffering=1)  # noqa: SIM115
    _run = asyncio.events.Handle._run
    _gcs: list = []
    _gc_start = [0.0]

    def _on_gc(phase: str, info: dict) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if phase == "start":
            _gc_start[0] = time.perf_counter()
        else:
            ms = (time.perf_counter() - _gc_start[0]) * 1000
            _gcs.append([info["generation"], round(ms, 2), info["collected"]])

    def _timed(self: asyncio.events.Handle) -> None:
        if threading.current_thread() is not threading.main_thread():
            _run(self)  # a loop on another thread: not the controller's
            return
        _gcs.clear()
        owner = getattr(self._callback, "__self__", None)  # a task's step or wake-up: the task
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            _run(self)
        finally:
            cpu = time.thread_time() - cpu
            if cpu > _LIMIT:
                wall = time.perf_counter() - wall
                _OUT.write(
                    json.dumps(
                        {
                            "at": time.time(),
                            "cpu_ms": round(cpu * 1000, 2),
                            "wall_ms": round(wall * 1000, 2),
                            "callback": repr(self)[:200],
                            "gc": list(_gcs),
                            "task": _task(owner),
                        }
                    )
                    + "\n"
                )

    def _task(owner: object) -> str | None:
        """The task a turn ran: its coroutine, and where it waits now (after the turn)."""
        if not isinstance(owner, asyncio.Task):
            return None
        coro = owner.get_coro()
        name = getattr(coro, "__qualname__", repr(coro))
        stack = owner.get_stack(limit=1) if not owner.done() else []
        if stack:
            f = stack[-1]
            name += f" waiting in {f.f_code.co_qualname} ({f.f_code.co_filename}:{f.f_lineno})"
        return name

    gc.callbacks.append(_on_gc)
    asyncio.events.Handle._run = _timed  # type: ignore[method-assign]
