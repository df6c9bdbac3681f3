"""`broadcaster serve`: the controller, its services and its HTTP API in one asyncio process.

Start-up checks the data directory before anything is written there, so a read-only disk or a
file in the way is one plain error naming the path, not a traceback from deep inside.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import signal
import sqlite3
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web

from broadcaster.core.controller import Controller, ControllerConfig
from broadcaster.core.services import Services
from broadcaster.errors import StorageError
from broadcaster.scheduler.engine import Scheduler
from broadcaster.site import Site
from broadcaster.web.api import make_app
from broadcaster.web.tls import TlsFiles, server_context

WORKERS = min(32, (os.cpu_count() or 1) + 4)  # as asyncio's default executor

# the folders the controller and the audio library create under DATA
DATA_FOLDERS = ("log", "library")
LIBRARY_CATALOGUE = Path("library") / "catalogue.db"
# s a thread waits for the GIL before it asks the holder to let go (Python's default: 5 ms). The
# event loop hands work to threads (a token's SQLite lookup, the media thread's send) and takes
# it back: each hand-over found the other side busy may wait this long.
SWITCH_INTERVAL = float(os.environ.get("BROADCASTER_SWITCH_S", "0.001"))


def check_data_dir(data: Path) -> None:
    """Raise StorageError naming the path if the controller could not write under `data`."""
    for path in (data, *(data / f for f in DATA_FOLDERS)):
        if path.exists() and not path.is_dir():
            raise StorageError(
                f"{path}: is a file where broadcaster needs a directory; move it "
                "aside (or give another data directory with --data)",
                detail={"file": str(path)},
            )
    probe = data / f".write-check-{os.getpid()}"
    try:
        with open(probe, "w") as fh:
            fh.write("ok")
        probe.unlink()
    except OSError as exc:
        raise StorageError(
            f"{data}: cannot create files in the data directory ({exc.strerror});"
            " make it writable by the user running broadcaster, or give another "
            "with --data",
            detail={"file": str(data)},
        ) from None
    # the audio library opens its catalogue with plain sqlite3 and lets a damaged one escape raw
    catalogue = data / LIBRARY_CATALOGUE
    if catalogue.is_file():
        try:
            conn = sqlite3.connect(f"file:{catalogue}?mode=ro", uri=True)
            try:
                conn.execute("PRAGMA quick_check").fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"{catalogue}: the audio library's catalogue cannot be opened "
                f"({exc}); restore it from a backup, or move the library folder "
                "aside to start with an empty library",
                detail={"file": str(catalogue)},
            ) from None


def startup_problem(exc: OSError, listen: str) -> str:
    """One line for an OS error at start-up: the path or address, what failed, what to do."""
    if exc.errno == errno.EADDRINUSE:
        return f"{listen}: address already in use; stop the other program or choose --listen"
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES) and not exc.filename:
        return f"{listen}: cannot listen there ({exc.strerror}); choose another --listen"
    where = exc.filename or "the data directory"
    if exc.errno == errno.ENOTDIR and exc.filename:
        # name the file that is in the way, not the directory that could not be made under it
        where = next(
            (str(p) for p in Path(exc.filename).parents if p.exists() and not p.is_dir()),
            str(exc.filename),
        )
    what = {
        errno.ENOTDIR: "a file is in the way of a directory",
        errno.EEXIST: "a file is in the way of a directory",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.ENOSPC: "the disk is full",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return (
        f"{where}: {what}; give a writable data directory with --data or $BROADCASTER_DATA "
        "(or move the file aside)"
    )


def warm_executor(loop: asyncio.AbstractEventLoop, workers: int = WORKERS) -> ThreadPoolExecutor:
    """Give the loop a default executor whose threads are all started now (and return it).

    A pool starts a thread when a task finds none idle, and the starter waits until the new
    thread runs: on a busy machine up to 15 ms of the loop's turn (scripts/bench_scale's stall
    log, a thread started for `asyncio.to_thread`). Started here, before the sockets open, none
    is started later."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="asyncio")
    barrier = threading.Barrier(workers + 1)
    for _ in range(workers):  # each task waits at the barrier: the next finds no idle thread
        pool.submit(barrier.wait)
    barrier.wait()
    loop.set_default_executor(pool)
    return pool


async def serve(
    site: Site,
    data: Path,
    *,
    host: str,
    port: int,
    interface: str,
    playout_delay: float,
    site_tag: str | None,
    mdns: bool,
    tls: TlsFiles | None = None,
    max_upload_seconds: float | None = None,
    max_upload_bytes: int | None = None,
) -> int:
    """Run until SIGINT/SIGTERM; over HTTPS when given TLS files (a browser's microphone needs
    a secure context anywhere but on localhost)."""
    check_data_dir(data)
    ssl_ctx = server_context(tls) if tls is not None else None  # a bad file stops us here
    ctl = Controller(
        site,
        ControllerConfig(
            data, interface=interface, playout_delay=playout_delay, site_tag=site_tag, mdns=mdns
        ),
    )
    services = Services.for_controller(ctl)
    if max_upload_seconds is not None:
        services.max_upload_seconds = max_upload_seconds
    runner: web.AppRunner | None = None
    sched: Scheduler | None = None
    try:
        services.start()
        # the long work of start-up before any socket opens: the app and its OpenAPI document
        # (~16 ms at 1,000 speakers) and one full collection (~25 ms); the loop's later turns
        # are short (scripts/bench_scale --turns-ms)
        app = make_app(services, max_upload_bytes) if max_upload_bytes else make_app(services)
        warm_executor(asyncio.get_running_loop())
        gc.collect()
        await ctl.start()
        sched = Scheduler.attach(services)
        await sched.start()
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ctl.heap.install(collect=False)  # what start-up built is long-lived: out of gc's walk
        await web.TCPSite(runner, host, port, ssl_context=ssl_ctx).start()
        sys.setswitchinterval(SWITCH_INTERVAL)
        # the media thread first when the cores are busy (logged if not), on a core of its own
        # once it sends to many, the rest of the controller kept off it (net/fanout.py)
        ctl.realtime_media()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"broadcaster controller for {site.name} on {'https' if ssl_ctx else 'http'}://"
            f"{host}:{port}/ (speakers via {interface})",
            flush=True,
        )
        if tls is not None and tls.ca is not None:
            print(
                f"HTTPS certificate made by this controller: to use the console from other "
                f"devices, trust {tls.ca} on them (README: the console)",
                flush=True,
            )
        await stop.wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        if sched is not None:
            await sched.close()
        await ctl.close()
        services.close()
    return 0
