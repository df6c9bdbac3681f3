"""The console in a real browser: Debian's Chromium driven by playwright, a fake microphone that
plays a tone pattern, a controller with accounts and the 113 simulated speakers.

Two simulator processes serve the module (56 speakers each) and a third holds a single speaker,
so a test can cut that one's power. Users are made with `Accounts` on the controller's own store, as
`broadcaster users add` does. Screenshots go to a directory printed at the start (override with
$BROADCASTER_CONSOLE_SHOTS); every page is watched for JavaScript errors.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import pytest_asyncio

import broadcaster.site as zones
from broadcaster.scheduler.engine import Scheduler
from broadcaster.web.api import SERVICES
from tests.support.audio import wav_file
from tests.support.harness import ROOT, SimProcess, controller, site_tag, wait_online
from tests.web.helpers import accounts_of

CHROMIUM = "/usr/bin/chromium"
TONE_HZ = 1000.0  # the fake microphone's tone: well inside PCMU's 8 kHz band
TONE_RATE = 48000
VICTIM = "horn-09-05-1"  # the speaker whose process a test kills
VILLAGE = "v-03-02"  # the village user's scope
OTHER_VILLAGE = "v-01-01"
FLAGS = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def tone_pattern(rate: int = TONE_RATE, seconds: float = 6.0) -> bytes:
    """Beeps at TONE_HZ, 300 ms on and 100 ms off: not steady, so noise suppression keeps it."""
    out = []
    for i in range(int(rate * seconds)):
        on = (i / rate) % 0.4 < 0.3
        out.append(int(12000 * math.sin(2 * math.pi * TONE_HZ * i / rate)) if on else 0)
    return struct.pack(f"<{len(out)}h", *out)


def shots_dir() -> Path:
    """Where screenshots go (printed so a reviewer can find them)."""
    d = Path(
        os.environ.get("BROADCASTER_CONSOLE_SHOTS")
        or Path(tempfile.gettempdir()) / "broadcaster-console-shots"
    )
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def shots() -> Path:
    d = shots_dir()
    print(f"\nconsole screenshots: {d}")
    return d


def static_zones(path: Path) -> Path:
    """The standard 113-speaker site with static addresses on a loopback address of its own
    (no mDNS: discovery has its own tests, and a busy machine makes it slow)."""
    while True:
        host = (
            f"127.{random.randrange(1, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"
        )
        port = random.randrange(20000, 40000)
        try:
            for p in range(port, port + 113):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((host, p))
        except OSError:
            continue
        break
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_zones"),
            "-o",
            str(path),
            "--no-multicast",
            "--addresses",
            f"{host}:{port}",
        ],
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: run scripts/setup (Debian chromium)")
    pytest.importorskip("playwright", reason="the playwright package is missing: scripts/setup")
    base = tmp_path_factory.mktemp("console")
    data, record = base / "data", base / "rec"
    data.mkdir()
    record.mkdir()
    tag = site_tag()
    wav = wav_file(base / "tone.wav", TONE_RATE, tone_pattern())
    path = static_zones(base / "zones.yaml")
    site = zones.load(path)
    rest = [s for s in site.speakers if s != VICTIM]
    # two simulator processes share the 112 (a page to all of them is 5,600 packets a second to
    # decrypt and play: one process alone falls behind on a busy two-core machine)
    sims = [
        SimProcess(path, data, record, tag, only=rest[i::2], seed=i + 1, mdns=False).start()
        for i in range(2)
    ]
    victim = SimProcess(path, data, record, tag, only=[VICTIM], seed=3, mdns=False).start()
    yield {
        "data": data,
        "record": record,
        "tag": tag,
        "wav": wav,
        "sims": sims,
        "victim": victim,
        "base": base,
        "site": site,
    }
    victim.stop()
    for sim in sims:
        sim.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ctl_client(world):
    async with controller(
        world["site"],
        world["data"],
        world["tag"],
        accounts=True,
        mdns=False,
        max_upload=8 * 1024 * 1024,
        playout_delay=0.3,
        live_lead=0.5,
    ) as (ctl, client):
        services = client.server.app[SERVICES]
        sched = Scheduler.attach(services)  # as `broadcaster serve` runs it: the schedules tab
        await sched.start()
        await wait_online(ctl, 113, timeout=90)
        await wait_synced(ctl, timeout=60)
        yield ctl, client
        await sched.close()
        services.scheduler = None


async def wait_synced(ctl, timeout: float) -> None:
    """Wait until every speaker says its clock follows the controller's (pages play on time)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not all(s.clock_synced for s in ctl.registry.speakers.values() if s.assigned):
        if loop.time() > end:
            late = [s.id for s in ctl.registry.speakers.values() if not s.clock_synced]
            raise TimeoutError(f"{len(late)} speakers' clocks not synced: {late[:5]}")
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
def users(ctl_client):
    """The office admin, a village operator, and their passwords."""
    _, client = ctl_client
    acc = accounts_of(client)
    made = {}
    for name, scope, role in (
        ("office", "subdistrict", "admin"),
        ("cadre", VILLAGE, "operator"),
        ("cadre2", OTHER_VILLAGE, "operator"),
    ):
        pw = "pw-" + secrets.token_urlsafe(12)
        acc.add_user(name, pw, scope, role)
        made[name] = pw
    return made


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(world):
    from playwright.async_api import async_playwright

    pw = await async_playwright().start()
    b = await pw.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=FLAGS + [f"--use-file-for-fake-audio-capture={world['wav']}"],
    )
    yield b
    await b.close()
    await pw.stop()


class Console:
    """One browser context logged in as one user, with its JavaScript errors collected."""

    def __init__(self, context, page, base: str) -> None:
        self.context, self.page, self.base = context, page, base
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, msg) -> None:
        # a 4xx answer the console handled (a refused page, a wrong password) is logged by the
        # browser as a failed resource load; that is the API speaking, not a script error
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.errors.append(f"console.error: {msg.text}")

    async def login(self, name: str, password: str) -> None:
        """Log in through the form and wait for the main screen."""
        p = self.page
        await p.goto(self.base + "/")
        await p.fill("#login-name", name)
        await p.fill("#login-password", password)
        await p.click("#login")
        await p.wait_for_selector("#talk", timeout=20000)

    async def csrf(self) -> str:
        """The session's CSRF token as the console keeps it."""
        return await self.page.evaluate("localStorage.getItem('bc.csrf')")

    async def close(self) -> None:
        """Close it, failing the test on any JavaScript error the page logged."""
        await self.context.close()
        assert not self.errors, f"the page logged JavaScript errors: {self.errors}"


@pytest_asyncio.fixture(loop_scope="module")
async def open_console(browser, ctl_client):
    """Open a console: await open_console(phone=…) -> Console; the test closes (and checks) it."""
    _, client = ctl_client
    base = str(client.make_url("")).rstrip("/")
    opened: list[Console] = []

    async def make(phone: bool = False) -> Console:
        opts = (
            {
                "viewport": {"width": 375, "height": 667},
                "is_mobile": True,
                "has_touch": True,
                "device_scale_factor": 2,
            }
            if phone
            else {"viewport": {"width": 1440, "height": 900}}
        )
        ctx = await browser.new_context(
            locale="zh-CN", timezone_id="Asia/Shanghai", permissions=["microphone"], **opts
        )
        page = await ctx.new_page()
        c = Console(ctx, page, base)
        opened.append(c)
        return c

    yield make
    for c in opened:  # a test that failed before closing its consoles
        await c.context.close()


def keep_shot(shots: Path, src: Path, name: str) -> None:
    """Copy a screenshot into docs/ when asked to ($BROADCASTER_CONSOLE_DOCS=1)."""
    if os.environ.get("BROADCASTER_CONSOLE_DOCS") == "1":
        shutil.copy(src, Path(__file__).resolve().parents[2] / "docs" / name)
