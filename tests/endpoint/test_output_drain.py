"""A real speaker whose output player is slow to drain never makes the next broadcast wait: the
player is reaped off the event loop, whether a broadcast ends, is stopped or is preempted."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import broadcaster.site as zones
from broadcaster.access.policy import rank
from tests.support.audio import sweep
from tests.support.harness import ROOT, controller, speaker_command, wait_done, wait_online
from tests.support.net import free_even_port, free_port
from tests.support.sites import small_site

DRAIN = 2.0  # the player sleeps this long before reading: closing its input waits that long


async def test_a_draining_player_never_blocks_the_speaker(tmp_path, data, tag):
    port = free_port()
    path = small_site(
        tmp_path / "z.yaml", villages=1, horns=1, columns=1, static={"h1-1": f"127.0.0.1:{port}"}
    )
    site = zones.load(path)
    keyfile = tmp_path / "h1-1.key"
    await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "broadcaster.cli.main",
            "--data",
            str(data),
            "speaker",
            "pair",
            "h1-1",
            "--out",
            str(keyfile),
        ],
        cwd=ROOT,
        env={**os.environ, "BROADCASTER_ZONES": str(path)},
        capture_output=True,
        check=True,
    )
    rec = tmp_path / "rec"
    proc = await asyncio.create_subprocess_exec(
        *speaker_command(keyfile, port, free_even_port(), "--no-mdns"),
        "--record",
        str(rec),
        "--output",
        f"pipe:sleep {DRAIN}; cat >/dev/null",
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with controller(site, data, tag, mdns=False) as (ctl, _):
            await wait_online(ctl, 1, timeout=30)
            a = ctl.bc.addresses["h1-1"]
            slowest = 0.0

            async def probe(until: float) -> None:
                """Signed /status requests all along: none may wait behind a draining player."""
                nonlocal slowest
                while time.monotonic() < until:
                    t0 = time.monotonic()
                    await ctl.link.call("h1-1", a.host, a.port, "GET", "/status", timeout=5)
                    slowest = max(slowest, time.monotonic() - t0)
                    await asyncio.sleep(0.05)

            # 1. a short broadcast ends by itself while its player still sleeps
            probing = asyncio.ensure_future(probe(time.monotonic() + 0.5 + DRAIN))
            first = await wait_done(ctl, (await ctl.play(sweep(8000, 0.4), ["h1-1"])).id)
            assert first["summary"]["played"] == 1
            await probing
            print(f"slowest status answer around a natural end: {slowest * 1000:.0f} ms")
            assert slowest < DRAIN / 2

            # 2. a long broadcast preempted by an emergency 0.3 s in: the emergency's set-up
            # (its /play) is answered at once, and its first sample is where it was scheduled
            long = await ctl.play(sweep(8000, 3.0), ["h1-1"], rank=rank("announcement", "village"))
            t0 = time.monotonic()
            while ctl.broadcast(long.id).state != "playing":
                assert time.monotonic() - t0 < 5
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            em = await ctl.play(
                sweep(8000, 0.6),
                ["h1-1"],
                priority="emergency",
                rank=rank("emergency", "subdistrict"),
            )
            t0 = time.monotonic()
            while ctl.broadcast(em.id).state == "starting":
                await asyncio.sleep(0.005)
            setup = time.monotonic() - t0
            print(f"emergency set-up while the preempted player drains: {setup * 1000:.0f} ms")
            assert setup < DRAIN / 2
            done = await wait_done(ctl, em.id)
            cut = await wait_done(ctl, long.id)
            r = done["speakers"][0]
            assert r["state"] == "played" and r["lost"] == 0
            assert abs(r["first_sample_at"] - done["started_at"]) < 0.05
            assert cut["speakers"][0]["state"] == "cut" and cut["speakers"][0]["cut_by"] == em.id
    finally:
        proc.terminate()
        await proc.wait()
