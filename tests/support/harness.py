"""Process harness shared by the tests and the benchmarks: simulated speakers in a child process,
a controller with its API in this one, and helpers to read what each speaker played."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from broadcaster.core.broadcast import ACTIVE
from broadcaster.core.controller import Controller, ControllerConfig
from broadcaster.core.services import Services
from broadcaster.endpoint.simulator import playout_records, recorded_pcm  # noqa: F401
from broadcaster.site import Site
from broadcaster.web.api import make_app

ROOT = Path(__file__).resolve().parents[2]


def make_zones(path: Path, *, multicast: bool = False) -> Path:
    """Write the standard 113-speaker site (scripts/make_zones), with or without multicast."""
    cmd = [sys.executable, str(ROOT / "scripts" / "make_zones"), "-o", str(path)]
    if not multicast:
        cmd.append("--no-multicast")
    subprocess.run(cmd, check=True, capture_output=True)
    return path


def site_tag() -> str:
    """A fresh mDNS site tag, so concurrent runs never see each other's speakers."""
    return "t" + secrets.token_hex(4)


class SimProcess:
    """`broadcaster speaker --simulate` in a child process."""

    def __init__(
        self,
        zones: Path,
        data: Path,
        record: Path | None,
        tag: str,
        *,
        only: list[str] | None = None,
        impair: str | None = None,
        clock_skew: float = 0.0,
        seed: int = 1,
        mdns: bool = True,
        light: bool = False,
    ) -> None:
        self.ready = data / f"sim-{secrets.token_hex(3)}.json"
        self.cmd = [
            sys.executable,
            "-m",
            "broadcaster.cli.main",
            "--data",
            str(data),
            "speaker",
            "--simulate",
            str(zones),
            "--site-tag",
            tag,
            "--ready-file",
            str(self.ready),
            "--seed",
            str(seed),
        ]
        if record:
            self.cmd += ["--record", str(record)]
        if only:
            self.cmd += ["--only", ",".join(only)]
        if impair:
            self.cmd += ["--impair", impair]
        if clock_skew:
            self.cmd += ["--clock-skew", str(clock_skew)]
        if not mdns:
            self.cmd.append("--no-mdns")
        if light:
            self.cmd.append("--light")
        self.proc: subprocess.Popen | None = None
        self.info: dict = {}

    def start(self, timeout: float = 60) -> SimProcess:
        """Start and wait until every speaker is listening and advertised."""
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        end = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"simulator exited: {out[-2000:]}")
            if time.monotonic() > end:
                raise TimeoutError("simulator did not become ready")
            time.sleep(0.05)
        self.info = json.loads(self.ready.read_text())
        return self

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """Kill it at once, as a power cut would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """Stop it cleanly (mDNS goodbyes), or kill it if it hangs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()


@asynccontextmanager
async def controller(
    site: Site,
    data: Path,
    tag: str,
    max_upload: int | None = None,
    accounts: bool = False,
    **config,
):
    """A started Controller and an HTTP test client on its API (real server on port 0).

    accounts=False runs it open (every request acts as the system), for tests of other parts;
    accounts=True enforces logins, tokens and scopes as `broadcaster serve` does.
    """
    ctl = Controller(site, ControllerConfig(data, site_tag=tag, **config))
    services = Services.for_controller(ctl, accounts=accounts)
    services.start()
    await ctl.start()
    app = make_app(services, max_upload) if max_upload else make_app(services)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield ctl, client
    finally:
        await client.close()
        await ctl.close()
        services.close()


class Served:
    """A started Controller (no mDNS, no accounts) with its real HTTP API on `host`, port 0."""

    def __init__(self, ctl: Controller, services: Services, server: TestServer, host: str):
        self.ctl, self.services, self.server = ctl, services, server
        self.base = f"http://{host}:{server.port}"

    async def close(self) -> None:
        """Stop the API, the controller and its services."""
        await self.server.close()
        await self.ctl.close()
        self.services.close()


async def serve(
    site: Site, data: Path, host: str = "127.0.0.1", accounts: bool = False, **config
) -> Served:
    """Start a controller for `site` and its API on `host` (dial-in tests: the speakers connect
    to it over a real socket); `config` as ControllerConfig takes it. Close with `.close()`."""
    config.setdefault("site_tag", site_tag())
    ctl = Controller(site, ControllerConfig(data, mdns=False, **config))
    services = Services.for_controller(ctl, accounts=accounts)
    services.start()
    await ctl.start()
    server = TestServer(make_app(services), host=host, port=0)
    await server.start_server()
    return Served(ctl, services, server, host)


async def wait_for(pred, timeout: float, what: str = "") -> float:
    """Wait until pred() is true; returns the seconds it took (TimeoutError(what) past
    `timeout`)."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def pair_key(zones: Path, data: Path, sid: str, out: Path) -> Path:
    """`broadcaster speaker pair SID --out OUT` for the site in `zones`: the speaker's key file."""
    subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", "--data", str(data)]
        + ["speaker", "pair", sid, "--out", str(out)],
        check=True,
        cwd=ROOT,
        env={**os.environ, "BROADCASTER_ZONES": str(zones)},
        capture_output=True,
    )
    return out


async def wait_paths(
    ctl: Controller, speakers: list[str], *, delay: float = 0.0, jitter: float = 0.0, timeout=30.0
) -> float:
    """Wait until the controller's measured path of each speaker shows at least this one-way
    delay and jitter (they come with the speakers' heartbeats); returns the seconds it took."""

    def measured() -> bool:
        paths = [ctl.paths.get(s) for s in speakers]
        return all(p is not None and p.delay > delay and p.jitter > jitter for p in paths)

    return await wait_for(measured, timeout)


async def wait_online(
    ctl: Controller, count: int, timeout: float = 30.0, synced: bool = True
) -> float:
    """Wait until `count` assigned speakers are online (and, by default, have synced their
    clocks and seen a second status poll since: on a busy machine the first exchanges carry
    long round trips); returns the seconds it took."""
    t0 = time.monotonic()

    def ready() -> int:
        rows = [s for s in ctl.registry.speakers.values() if s.assigned and s.online]
        if not synced:
            return len(rows)
        return sum(s.clock_synced or ctl.site.speakers[s.id].driver != "bcspeaker" for s in rows)

    while ready() < count:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(
                f"only {ready()}/{count} speakers online" + (" and clock-synced" if synced else "")
            )
        await asyncio.sleep(0.05)
    if synced:
        await asyncio.sleep(ctl.config.poll_interval)  # more exchanges: shorter round trips
    return time.monotonic() - t0


async def wait_done(ctl: Controller, bid: str, timeout: float = 60.0) -> dict:
    """Wait until a broadcast has ended; returns its JSON form."""
    t0 = time.monotonic()
    while ctl.broadcast(bid).state in ACTIVE:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"broadcast {bid} still {ctl.broadcast(bid).state}")
        await asyncio.sleep(0.05)
    return ctl.broadcast(bid).to_dict()


def speaker_command(keyfile: Path, port: int | str, rtp_port: int | str, *extra: str) -> list[str]:
    """The command line of one real speaker endpoint on 127.0.0.1 (`broadcaster speaker`)."""
    return [
        sys.executable,
        "-m",
        "broadcaster.cli.main",
        "speaker",
        "--key-file",
        str(keyfile),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--rtp-port",
        str(rtp_port),
        *extra,
    ]


def records_follow_reports(b: dict, recs: dict) -> None:
    """The controller's record of each speaker is what that speaker reported: played when it
    played every frame sent, partial when not. (A full simulated speaker on a loaded machine may
    miss a frame whose instant passed while its process waited for a core; that is the machine,
    and the record must say so rather than the test assume a core to spare.)"""
    for r in b["speakers"]:
        rec = recs[r["speaker"]]
        assert r["packets"] == rec["packets"], (r, rec)
        assert r["state"] == ("played" if rec["packets"] >= r["frames_sent"] else "partial"), (
            r,
            rec,
        )
