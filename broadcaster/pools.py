"""Thread pools whose threads are started when asked, not by the first task that finds none idle.

A pool starts a thread when a task finds none idle, and the caller waits until the new thread
runs: on a busy machine up to 15 ms of the event loop's turn (scripts/bench_scale's stall log, a
thread started for `asyncio.to_thread`). A process that serves starts them before its sockets
open.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


def start_threads(pool: ThreadPoolExecutor, workers: int) -> ThreadPoolExecutor:
    """Start `workers` threads of `pool` now (its size, for all of them); returns the pool."""
    barrier = threading.Barrier(workers + 1)
    for _ in range(workers):  # each task waits at the barrier: the next finds no idle thread
        pool.submit(barrier.wait)
    barrier.wait()
    return pool
