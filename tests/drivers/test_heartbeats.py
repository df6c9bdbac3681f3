"""Speakers report in: signed heartbeats on the clock exchange instead of a status poll each.

Real simulated speakers on loopback for what an operator sees (the speaker list, offline and
back); the driver's acceptance rule for a heartbeat (fresh, ordered, from a located speaker) is
checked directly, with a host that records what the driver told it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

import broadcaster.site as zones
from broadcaster.drivers.base import DriverOptions
from broadcaster.drivers.bcspeaker.driver import Address, BcSpeakerDriver
from broadcaster.protocol.clock import Heartbeat
from tests.support.audio import sweep
from tests.support.harness import SimProcess, controller, wait_done, wait_for, wait_online
from tests.support.sites import small_site


async def _rows(client) -> dict[str, dict]:
    body = await (await client.get("/api/speakers")).json()
    return {s["id"]: s for s in body["speakers"]}


async def test_speakers_report_in_and_are_not_polled(tmp_path, data, tag):
    path = small_site(tmp_path / "z.yaml", villages=1, horns=2, columns=1)
    site = zones.load(path)
    sim = SimProcess(path, data, None, tag).start()
    try:
        async with controller(site, data, tag) as (ctl, client):
            await wait_online(ctl, len(site.speakers))
            before = await _rows(client)
            await asyncio.sleep(6.0)
            after = await _rows(client)
            for sid in site.speakers:
                beats = after[sid]["heartbeats"] - before[sid]["heartbeats"]
                polls = after[sid]["status_answers"] - before[sid]["status_answers"]
                print(f"{sid}: {beats} heartbeats, {polls} status answers in 6 s")
                assert after[sid]["online"]
                assert beats >= 2
                assert polls <= 1  # polled every 2 s this would be 3
    finally:
        sim.stop()


async def test_what_a_speaker_plays_still_reaches_the_list(tmp_path, data, record, tag):
    path = small_site(tmp_path / "z.yaml", villages=1, horns=2, columns=1)
    site = zones.load(path)
    sim = SimProcess(path, data, record, tag).start()
    try:
        async with controller(site, data, tag) as (ctl, client):
            await wait_online(ctl, len(site.speakers))
            before = await _rows(client)
            b = await ctl.play(sweep(8000, 5.0), ["v1"])
            horns = sorted(site.speakers_under("v1"))

            async def playing() -> set[str]:
                return {s for s, r in (await _rows(client)).items() if r["playing"] == b.id}

            end = time.monotonic() + 4.5
            seen: set[str] = set()
            while time.monotonic() < end and seen != set(horns):
                seen = await playing()
                await asyncio.sleep(0.1)
            assert seen == set(horns)  # the heartbeat names what plays
            await wait_done(ctl, b.id)
            await wait_for(lambda: not any(ctl.registry.get(h).playing for h in horns), 10)
            after = await _rows(client)
            for h in horns:  # start and end came by heartbeat: no burst of status requests
                assert after[h]["status_answers"] - before[h]["status_answers"] <= 1
    finally:
        sim.stop()


async def test_a_silent_speaker_goes_offline_and_comes_back(tmp_path, data, tag):
    path = small_site(tmp_path / "z.yaml", villages=1, horns=2, columns=1)
    site = zones.load(path)
    others = sorted(set(site.speakers) - {"h1-1"})
    main = SimProcess(path, data, None, tag, only=others).start()
    victim = SimProcess(path, data, None, tag, only=["h1-1"]).start()
    try:
        async with controller(site, data, tag) as (ctl, _):
            await wait_online(ctl, len(site.speakers))
            os.kill(victim.pid, signal.SIGSTOP)  # frozen: no heartbeat, no answer
            t0 = time.monotonic()
            await wait_for(lambda: not ctl.registry.get("h1-1").online, 20)
            print(f"offline {time.monotonic() - t0:.1f} s after the speaker fell silent")
            assert all(ctl.registry.get(s).online for s in others)
            os.kill(victim.pid, signal.SIGCONT)
            await wait_for(lambda: ctl.registry.get("h1-1").online, 20)
    finally:
        main.stop()
        victim.stop()


class _Host:
    """What the driver tells the core, recorded."""

    def __init__(self) -> None:
        self.alive: list[str] = []
        self.clock_now = 1.7e9

    def speaker_alive(self, speaker: str, status: dict) -> None:
        self.alive.append(speaker)

    def speaker_failed(self, speaker: str, error: str) -> None:
        pass

    def speaker_seen(self, speaker: str, status: dict) -> None:
        pass

    def now(self) -> float:
        return self.clock_now


@pytest.fixture
async def driver(tmp_path):
    site = zones.load(small_site(tmp_path / "z.yaml", villages=1, horns=1, columns=0))
    drv = BcSpeakerDriver(site, {"h1-1": b"k" * 32}, DriverOptions(mdns=False))
    drv._host = _Host()  # type: ignore[assignment]
    drv.link.clock = drv._host.now
    yield drv
    await drv.close()


def _beat(seq: int, *, boot: int = 1, at: float = 1.7e9, synced: bool = True) -> Heartbeat:
    return Heartbeat(boot, seq, synced, at, 0.0002, 0.0003, 40000, 5, 0)


async def test_a_heartbeat_counts_only_fresh_in_order_and_from_a_located_speaker(driver):
    host = driver._host
    now = host.clock_now
    driver._heartbeat("h1-1", _beat(1), now)
    assert host.alive == []  # not located yet: verification comes first
    driver.addresses["h1-1"] = Address("127.0.0.1", 9, source="static")
    driver._heartbeat("h1-1", _beat(1, synced=False), now)
    assert host.alive == []  # an unsynced speaker's stamp cannot be judged
    driver._heartbeat("h1-1", _beat(1), now)
    assert host.alive == ["h1-1"]
    driver._heartbeat("h1-1", _beat(1), now + 1)  # the same datagram again: a replay
    driver._heartbeat("h1-1", _beat(0), now + 1)  # an older one
    driver._heartbeat("h1-1", _beat(9, at=now - 30), now)  # recorded long ago
    assert host.alive == ["h1-1"]
    driver._heartbeat("h1-1", _beat(2), now + 2)
    driver._heartbeat("h1-1", _beat(1, boot=2), now + 2)  # the speaker restarted: new boot
    assert host.alive == ["h1-1"] * 3
    assert driver.addresses["h1-1"].rtp_port == 40000
