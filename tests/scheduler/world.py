"""A small simulated site for the scheduler's tests and benchmark: speakers in a child process,
and controllers (with services and the scheduler) started and stopped on one data directory."""

from __future__ import annotations

import asyncio
import shutil
import time
from contextlib import asynccontextmanager
from pathlib import Path

import broadcaster.scheduler.operations  # noqa: F401 - registers the schedule commands
import broadcaster.site as zones
from broadcaster.access.principal import Principal
from broadcaster.core.commands import call
from broadcaster.core.controller import Controller, ControllerConfig
from broadcaster.core.services import Services
from broadcaster.scheduler.engine import Scheduler
from tests.support.audio import sweep, wav_file
from tests.support.harness import SimProcess, site_tag, wait_online
from tests.support.sites import small_site


class World:
    """Simulated speakers of a small site (2 villages of 2 horns, 1 column)."""

    def __init__(self, base: Path, villages: int = 2, horns: int = 2, columns: int = 1) -> None:
        self.base = base
        self.zones = small_site(
            base / "zones.yaml", villages=villages, horns=horns, columns=columns
        )
        self.site = zones.load(self.zones)
        self.keys_dir = base / "keys"
        self.record = base / "rec"
        self.keys_dir.mkdir()
        self.record.mkdir()
        self.tag = site_tag()
        self.sim = SimProcess(self.zones, self.keys_dir, self.record, self.tag)

    def start(self) -> World:
        """Start the speakers."""
        self.sim.start()
        return self

    def stop(self) -> None:
        """Stop the speakers."""
        self.sim.stop()

    def data_dir(self, name: str) -> Path:
        """A fresh controller data directory holding the speakers' pairing keys."""
        d = self.base / name
        d.mkdir()
        shutil.copy(self.keys_dir / "speaker-keys.json", d / "speaker-keys.json")
        return d


@asynccontextmanager
async def running(
    world: World, data: Path, *, accounts: bool = False, playout_delay=0.2, **sched_kw
):
    """A started controller with its services and scheduler, its speakers online."""
    ctl = Controller(
        world.site, ControllerConfig(data, site_tag=world.tag, playout_delay=playout_delay)
    )
    services = Services.for_controller(ctl, accounts=accounts)
    services.start()
    await ctl.start()
    try:
        await wait_online(ctl, len(world.site.speakers), timeout=30)
        sched = Scheduler.attach(services, **sched_kw)
        await sched.start()
        yield ctl, services, sched
    finally:
        if services.scheduler is not None:
            await services.scheduler.close()
        await ctl.close()
        services.close()


def system(world: World) -> Principal:
    """The controller itself (an open controller's callers act as it)."""
    return Principal.system(world.site.root.id, "test")


def add_clip(services: Services, tmp: Path, seconds: float = 0.6, title: str = "通知") -> str:
    """A sweep catalogued in the library; returns its clip id."""
    path = wav_file(tmp / f"clip-{seconds}-{time.monotonic_ns()}.wav", 8000, sweep(8000, seconds))
    return services.library.add(path, title=title).id


def site_time(t: float) -> str:
    """A Unix time as the site-time text the API takes (Asia/Shanghai)."""
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.timezone(dt.timedelta(hours=8))).strftime(
        "%Y-%m-%d %H:%M:%S"
    )


async def create(services: Services, who: Principal, **raw) -> dict:
    """schedules/create through the command surface."""
    return await call("schedules/create", who, services, raw)


async def settled(
    sched: Scheduler, sid: str, timeout: float = 30.0, states: tuple = ("fired",)
) -> list[dict]:
    """Wait until a schedule has an occurrence whose state is not in `states`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = sched.table.occurrences(sid)
        if rows and all(r["state"] not in states for r in rows):
            return rows
        await asyncio.sleep(0.1)
    raise TimeoutError(f"schedule {sid}: {sched.table.occurrences(sid)}")
