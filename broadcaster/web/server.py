"""`broadcaster serve`: the controller, its services and its HTTP API in one asyncio process."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from aiohttp import web

from broadcaster.core.controller import Controller, ControllerConfig
from broadcaster.core.services import Services
from broadcaster.site import Site
from broadcaster.web.api import make_app


async def serve(site: Site, data: Path, *, host: str, port: int, interface: str,
                playout_delay: float, site_tag: str | None, mdns: bool) -> int:
    """Run until SIGINT/SIGTERM."""
    ctl = Controller(site, ControllerConfig(data, interface=interface, playout_delay=playout_delay,
                                            site_tag=site_tag, mdns=mdns))
    services = Services.for_controller(ctl)
    services.start()
    await ctl.start()
    runner = web.AppRunner(make_app(services), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"broadcaster controller for {site.name} on http://{host}:{port}/ "
          f"(speakers via {interface})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await ctl.close()
        services.close()
    return 0
