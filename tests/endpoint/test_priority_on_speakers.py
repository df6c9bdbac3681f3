"""Priority on real (simulated) speakers behind a real controller: a low broadcast, a high one that
takes part of its speakers, then a low one again — refused by the controller, and by each speaker
on its own when it is sent anyway. The preempted stream goes on elsewhere; nothing counts as an
attack anywhere."""

from __future__ import annotations

import asyncio
import time
import warnings

import pytest

import broadcaster.site as zones
from broadcaster.access.policy import rank
from broadcaster.errors import BroadcasterError, SpeakerError
from broadcaster.protocol.auth import wrap_key
from broadcaster.protocol.srtp import new_key
from tests.support.audio import assert_recording_matches, sweep
from tests.support.harness import (
    SimProcess,
    controller,
    playout_records,
    recorded_pcm,
    wait_done,
    wait_online,
)
from tests.support.sites import small_site

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

LOW = rank("announcement", "village")
HIGH = rank("emergency", "subdistrict")
SECURITY = ("dropped_unauthenticated", "dropped_replay", "dropped_malformed", "control_refused")


async def counters(ctl, ids):
    """Each speaker's own security counters, from a signed /status."""
    out = {}
    for sid in ids:
        a = ctl.bc.addresses[sid]
        st = await ctl.link.call(sid, a.host, a.port, "GET", "/status")
        out[sid] = {k: st["counters"].get(k, 0) for k in SECURITY}
        out[sid]["late_previous_broadcast"] = st["counters"].get("late_previous_broadcast", 0)
    return out


async def test_low_then_high_then_low(tmp_path, data, record, tag):
    path = small_site(tmp_path / "z.yaml", villages=2, horns=2, columns=2, village_multicast=True)
    site = zones.load(path)
    ids = sorted(site.speakers)
    taken = sorted(site.resolve_many(["v1", "col-1"]))
    sim = SimProcess(path, data, record, tag).start()
    try:
        async with controller(site, data, tag) as (ctl, _):
            await wait_online(ctl, len(ids))
            before = await counters(ctl, ids)
            low_src, high_src = sweep(8000, 4.0), sweep(8000, 1.5)
            low = await ctl.play(low_src, ["sd"], rank=LOW)
            t0 = time.monotonic()
            while ctl.broadcast(low.id).state != "playing":
                assert time.monotonic() - t0 < 10
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.8)
            high = await ctl.play(high_src, ["v1", "col-1"], priority="emergency", rank=HIGH)
            while ctl.broadcast(high.id).state != "playing":
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)

            # a low request now: the controller refuses it ...
            with pytest.raises(BroadcasterError) as refused:
                await ctl.play(sweep(8000, 1.0), ["h1-1"], rank=LOW)
            assert refused.value.status == 409 and high.id in refused.value.message
            # ... and so does the speaker, if a (buggy) controller sends it anyway
            for sid in ("h1-1", "col-1"):
                a = ctl.bc.addresses[sid]
                body = {
                    "broadcast": "stray",
                    "codec": "PCMU",
                    "ssrc": 7,
                    "base_ts": 0,
                    "base_time": None,
                    "priority": LOW,
                    "volume": 80,
                    "multicast": None,
                    "key": wrap_key(ctl.keys[sid], new_key(), f"{sid}/stray"),
                }
                with pytest.raises(SpeakerError) as err:
                    await ctl.link.call(sid, a.host, a.port, "POST", "/play", body)
                assert err.value.code == "outranked"
                assert f"holds this speaker at priority {HIGH}" in err.value.message

            h = await wait_done(ctl, high.id)
            lo = await wait_done(ctl, low.id)
            after = await counters(ctl, ids)
    finally:
        sim.stop()

    assert h["state"] == "done" and h["summary"]["played"] == len(taken)
    hrecs = playout_records(record, high.id)
    for sid in taken:
        pcm, _ = recorded_pcm(record, sid, high.id)
        assert_recording_matches(
            pcm, audioop.ulaw2lin(audioop.lin2ulaw(high_src, 2), 2), 8000, hrecs[sid]["lost"]
        )  # emergency: full volume
    by = {r["speaker"]: r for r in lo["speakers"]}
    lrecs = playout_records(record, low.id)
    for sid in ids:
        if sid in taken:
            assert by[sid]["state"] == "cut" and by[sid]["cut_by"] == high.id, by[sid]
            assert lrecs[sid]["ended"] == "preempted" and lrecs[sid]["preempted_by"] == high.id
        else:  # the low broadcast went on, undisturbed, where the high one did not go
            assert by[sid]["state"] == "played", by[sid]
            assert lrecs[sid]["ended"] == "end" and lrecs[sid]["samples"] == len(low_src) // 2
    assert playout_records(record, "stray") == {}  # never played anywhere
    assert not [e for e in ctl.events if e["kind"] == "attack"]
    for sid in ids:
        assert {k: after[sid][k] for k in SECURITY} == {k: before[sid][k] for k in SECURITY}, sid
    print(
        "late packets of the preempted stream, recognised:",
        {sid: after[sid]["late_previous_broadcast"] for sid in taken},
    )
