"""How a speaker process starts and ends: it says it is ready in a file written whole, and ends
on SIGINT or SIGTERM cleanly (mDNS goodbyes, final reports)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path


def write_ready(path: Path, info: dict) -> None:
    """Write a ready file whole or not at all (a watcher that sees it must never read it half
    written): to a temporary name beside it, then renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)


def stop_event() -> asyncio.Event:
    """An event set when the process is asked to stop (where signal handlers can be installed)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
    return stop
