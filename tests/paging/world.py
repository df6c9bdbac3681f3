"""A small site of simulated speakers, a controller with accounts, users with tokens, and a
client that talks into a page in real time (the CLI's own PageClient)."""

from __future__ import annotations

import asyncio
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import broadcaster.site as zones
from broadcaster.cli.page import PageClient
from broadcaster.core.controller import Controller
from broadcaster.web.api import SERVICES
from tests.support.harness import SimProcess, controller, wait_online
from tests.support.sites import small_site

USERS = {"office": ("sd", "admin"), "v1-op": ("v1", "operator"), "v2-op": ("v2", "operator")}


@dataclass
class World:
    """What a paging test works with."""

    ctl: Controller
    client: object
    url: str
    record: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def services(self):
        """The controller's services (library, audit)."""
        return self.client.server.app[SERVICES]

    def page(self, user: str, to: list[str], **kw) -> PageClient:
        """A page client for a user."""
        return PageClient(self.url, self.tokens[user], to, **kw)


@asynccontextmanager
async def world(
    tmp_path: Path,
    data: Path,
    record: Path,
    tag: str,
    villages: int = 2,
    horns: int = 2,
    columns: int = 1,
):
    """Speakers running in a child process, and a started controller that knows them."""
    path = small_site(tmp_path / "zones.yaml", villages=villages, horns=horns, columns=columns)
    site = zones.load(path)
    sim = SimProcess(path, data, record, tag).start()
    try:
        async with controller(site, data, tag, accounts=True) as (ctl, client):
            await wait_online(ctl, len(site.speakers))
            w = World(ctl, client, str(client.make_url("")).rstrip("/"), record)
            acc = w.services.accounts
            for name, (scope, role) in USERS.items():
                if scope not in site.zones:
                    continue
                acc.add_user(name, "pw-" + secrets.token_urlsafe(9), scope, role)
                w.tokens[name] = acc.issue_token(name, None).secret
            yield w
    finally:
        sim.stop()


async def talk_into(
    page: PageClient, pcm: bytes, rate: int, speed: float = 1.0, clock=None
) -> float:
    """Send PCM in 20 ms frames as a sound card would deliver them, on a clock running `speed`
    times real time; returns the play-clock instant the first sample was 'captured'."""
    step = rate // 50 * 2
    t0 = time.monotonic()
    c0 = clock() if clock else time.time()
    for k in range(len(pcm) // step):
        wait = t0 + (k + 1) * 0.02 / speed - time.monotonic()  # frame k exists once captured
        if wait > 0:
            await asyncio.sleep(wait)
        if not await page.send(pcm[k * step : (k + 1) * step]):
            break
    return c0
