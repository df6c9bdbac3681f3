"""The scale rig's light speakers: real control, heartbeats and packet accounting, no decoding."""

from __future__ import annotations

import asyncio
import os
import signal

import broadcaster.site as zones
from tests.support.audio import sweep
from tests.support.harness import (
    SimProcess,
    controller,
    playout_records,
    records_follow_reports,
    wait_done,
    wait_online,
)
from tests.support.sites import small_site


async def test_light_speakers_play_and_report_beside_full_ones(tmp_path, data, record, tag):
    path = small_site(tmp_path / "z.yaml", villages=1, horns=3, columns=1)
    site = zones.load(path)
    light = ["h1-1", "h1-2"]
    full = sorted(set(site.speakers) - set(light))
    sims = [
        SimProcess(path, data, record, tag, only=light, light=True).start(),
        SimProcess(path, data, record, tag, only=full).start(),
    ]
    try:
        async with controller(site, data, tag) as (ctl, _):
            await wait_online(ctl, len(site.speakers))
            b = await wait_done(ctl, (await ctl.play(sweep(8000, 2.0), ["sd"])).id)
            recs = playout_records(record, b["id"])
            assert set(recs) == set(site.speakers)
            records_follow_reports(b, recs)
            for sid in light:
                assert recs[sid]["light"] is True
                # every frame accounted for by its header: played or lost, 2 s = 100 frames
                assert recs[sid]["packets"] + recs[sid]["lost"] == 100
                assert recs[sid]["samples"] == 16000
                assert not (record / sid / f"{b['id']}.wav").exists()  # no recording kept
            for sid in full:
                assert "light" not in recs[sid]
                assert recs[sid]["samples"] == 16000
    finally:
        for s in sims:
            s.stop()


async def test_a_light_speaker_behind_on_its_reading_counts_packets_by_when_they_arrived(
    tmp_path, data, record, tag
):
    # the rig's own slowness is not the controller's loss: a light speaker whose process stops
    # for half a second mid-broadcast reads its queued packets late, and each still counts as
    # arrived in time by its kernel receive stamp (by the time it was read, 26 of the 100 had
    # passed their play instant: counted lost before)
    path = small_site(tmp_path / "z.yaml", villages=1, horns=2, columns=1)
    site = zones.load(path)
    light = ["h1-1", "h1-2"]
    full = sorted(set(site.speakers) - set(light))
    slow = SimProcess(path, data, record, tag, only=light, light=True).start()
    sims = [slow, SimProcess(path, data, record, tag, only=full).start()]
    try:
        async with controller(site, data, tag) as (ctl, _):
            await wait_online(ctl, len(site.speakers))
            bid = (await ctl.play(sweep(8000, 2.0), ["sd"])).id
            await asyncio.sleep(0.6)
            os.kill(slow.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(0.5)
            finally:
                os.kill(slow.pid, signal.SIGCONT)
            b = await wait_done(ctl, bid)
            recs = playout_records(record, b["id"])
            for sid in light:
                assert recs[sid]["light"] is True
                assert (recs[sid]["packets"], recs[sid]["lost"]) == (100, 0), recs[sid]
            records_follow_reports(b, recs)
    finally:
        for s in sims:
            s.stop()
