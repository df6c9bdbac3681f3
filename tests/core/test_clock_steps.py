"""Wall-clock steps (NTP, an operator) mid-broadcast, on the controller and on a speaker: nothing a
user would notice. Both ends pace and time out on monotonic clocks; the speakers judge signed
requests against the controller's play clock. So after a step of +5 s, -5 s or +40 s every
speaker plays the whole broadcast (or counts the few frames it lost), raises no alarm, stays
online, and the record says what the speakers played.

Real processes: simulated speakers in a child (`--clock-step` steps one speaker's wall source),
the controller in this process (its `time.time` is stepped by monkeypatching).
"""

from __future__ import annotations

import asyncio
import time

import pytest

import broadcaster.site as zones
from broadcaster.core.registry import SECURITY_COUNTERS
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

STEPS = (5.0, -5.0, 40.0)
FEW = 10  # frames (200 ms): a hole "as long as a resync" would be far longer; anchored: none
SPEAKER_STEP_AT = 20.0  # seconds after the simulator starts: after start-up even on a busy machine


def expected(src: bytes) -> bytes:
    """What a speaker plays of a PCMU broadcast: the source through µ-law."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    return audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2)


def security(ctl) -> dict[str, dict[str, int]]:
    """Every speaker's security counters as the controller last saw them."""
    return {
        sid: {k: st.counters.get(k, 0) for k in SECURITY_COUNTERS}
        for sid, st in ctl.registry.speakers.items()
        if st.assigned
    }


def check_broadcast(ctl, record, b: dict, src: bytes) -> dict[str, int]:
    """The record is truthful and every speaker heard all of it (or counted its few losses)."""
    assert b["state"] == "done", b
    recs = playout_records(record, b["id"])
    assert set(recs) == set(ctl.site.speakers)
    lost = {}
    for r in b["speakers"]:
        rec = recs[r["speaker"]]
        # the record says what the speaker says it played
        assert (r["packets"], r["lost"], r["samples"]) == (
            rec["packets"],
            rec["lost"],
            rec["samples"],
        )
        assert r["state"] == ("played" if rec["packets"] >= b["frames"] else "partial"), r
        assert rec["ended"] == "end"
        pcm, rate = recorded_pcm(record, r["speaker"], b["id"])
        assert_recording_matches(pcm, expected(src), rate, rec["lost"])
        assert rec["lost"] <= FEW, (r["speaker"], rec["lost"])
        lost[r["speaker"]] = rec["lost"]
    return lost


async def test_wall_clock_steps_move_nothing(tmp_path, data, record, tag, monkeypatch):
    path = small_site(tmp_path / "z.yaml", villages=2, horns=2, columns=0)
    site = zones.load(path)
    stepped = {"h1-1": 5.0, "h1-2": -5.0, "h2-1": 40.0}
    sim = SimProcess(path, data, record, tag)
    sim.cmd += [
        "--clock-step",
        ";".join(f"{sid}={SPEAKER_STEP_AT}:{step:+}" for sid, step in stepped.items()),
    ]
    t_spawn = time.monotonic()
    sim.start()
    real_time = time.time
    try:
        async with controller(site, data, tag) as (ctl, _):
            await wait_online(ctl, len(site.speakers))
            await asyncio.sleep(1.0)  # synced, and every speaker's counters seen once
            before = security(ctl)

            # 1. a step of each size on one speaker each, mid-broadcast
            await asyncio.sleep(max(0.0, t_spawn + SPEAKER_STEP_AT - 2.0 - time.monotonic()))
            seconds = max(4.0, t_spawn + SPEAKER_STEP_AT + 6.0 - time.monotonic())
            src = sweep(8000, round(seconds))
            t0 = time.monotonic()
            b = await wait_done(ctl, (await ctl.play(src, ["sd"])).id, timeout=60)
            assert t0 < t_spawn + SPEAKER_STEP_AT  # the steps came while it played
            check_broadcast(ctl, record, b, src)
            steps = {
                sid: ctl.registry.get(sid).counters.get("wall_clock_steps", 0)
                for sid in site.speakers
            }
            assert steps == {sid: int(sid in stepped) for sid in site.speakers}, steps

            # 2. the controller's wall clock steps +5, -5 (back) and +40 s, mid-broadcast
            offset = 0.0
            for step in STEPS:
                src = sweep(8000, 4.0)
                bc = await ctl.play(src, ["sd"])
                await asyncio.sleep(2.0)
                offset += step
                monkeypatch.setattr(time, "time", lambda o=offset: real_time() + o)
                b = await wait_done(ctl, bc.id, timeout=60)
                check_broadcast(ctl, record, b, src)
                await asyncio.sleep(2.5)  # a full round of health polls after the step

            # no false alarm, no speaker lost
            kinds = [e["kind"] for e in ctl.events]
            assert "attack" not in kinds and "offline" not in kinds, kinds
            assert security(ctl) == before
            assert all(st.online for st in ctl.registry.speakers.values() if st.assigned)
    finally:
        monkeypatch.setattr(time, "time", real_time)
        sim.stop()


@pytest.mark.parametrize("spec", ["h1-1=3", "h1-1=x:+5", "nobody=1:+5"])
def test_a_bad_clock_step_is_refused_naming_it(tmp_path, data, spec):
    import subprocess
    import sys

    from tests.support.harness import ROOT

    path = small_site(tmp_path / "z.yaml", villages=1, horns=1, columns=0)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "broadcaster.cli.main",
            "--data",
            str(data),
            "speaker",
            "--simulate",
            str(path),
            "--no-mdns",
            "--clock-step",
            spec,
        ],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "--clock-step" in out.stderr
    assert "Traceback" not in out.stderr
