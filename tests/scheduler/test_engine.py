"""Real short schedules (seconds ahead) played to simulated speakers: on time, to the right
speakers, exactly once across restarts, late within grace, missed beyond it, refused when the
owner lost their scope — each checked in the recordings, the occurrence table and the audit log."""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings

import pytest

from broadcaster.access.principal import Principal
from tests.scheduler.world import World, add_clip, create, running, settled, site_time, system
from tests.support.audio import assert_recording_matches
from tests.support.harness import playout_records, recorded_pcm, wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("sched")).start()
    yield w
    w.stop()


def ahead(seconds: float) -> tuple[int, str]:
    """A whole second at least `seconds` from now, as Unix time and as site time."""
    at = int(time.time() + seconds) + 1
    return at, site_time(at)


async def test_fires_at_its_instant_to_exactly_its_speakers(world, tmp_path):
    async with running(world, world.data_dir("on-time")) as (ctl, services, sched):
        clip = add_clip(services, tmp_path)
        at, text = ahead(3)
        s = await create(
            services, system(world), to=["v1"], clip=clip, when={"kind": "once", "at": text}
        )
        assert s["next"] and s["next"][0].startswith(text.replace(" ", "T"))
        occ = (await settled(sched, s["id"]))[0]
        assert occ["state"] == "played" and occ["at"] == at and occ["why"] is None
        b = ctl.broadcast(occ["broadcast"]).to_dict()
        # the speakers were set up ahead: the first sample was fixed at the instant itself
        assert b["started_at"] == pytest.approx(at, abs=0.25)
        played = playout_records(world.record, b["id"])
        assert set(played) == set(world.site.resolve("v1")) == set(occ["speakers"])
        src = services.library.pcm(clip, 8000)
        for sid, rec in played.items():
            pcm, rate = recorded_pcm(world.record, sid, b["id"])
            expect = audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2)
            assert_recording_matches(pcm, expect[: len(pcm)], rate, rec["lost"])
            assert rec["first_sample_at"] == pytest.approx(at, abs=0.25)
        rows = services.audit.rows(actor="system")
        row = next(r for r in rows if r["action"] == "schedule_played")
        assert row["broadcast"] == b["id"] and row["outcome"]["state"] == "played"
        assert {k: v for k, v in row["outcome"].items() if k in played} == {
            sid: "played" for sid in played
        }


async def test_survives_a_restart_between_saving_and_firing(world, tmp_path):
    data = world.data_dir("restart-before")
    async with running(world, data) as (_ctl, services, sched):
        clip = add_clip(services, tmp_path)
        at, text = ahead(6)
        s = await create(
            services, system(world), to=["v2"], clip=clip, when={"kind": "once", "at": text}
        )
    assert time.time() < at - 1, "the first controller must be gone before the instant"
    async with running(world, data) as (_ctl, services, sched):
        occ = await settled(sched, s["id"])
        assert [o["state"] for o in occ] == ["played"]
        assert set(playout_records(world.record, occ[0]["broadcast"])) == set(
            world.site.resolve("v2")
        )


async def test_a_restart_during_playback_does_not_play_it_again(world, tmp_path):
    data = world.data_dir("restart-during")
    async with running(world, data) as (ctl, services, sched):
        clip = add_clip(services, tmp_path, seconds=4.0)
        at, text = ahead(3)
        s = await create(
            services, system(world), to=["v1"], clip=clip, when={"kind": "once", "at": text}
        )
        while time.time() < at + 1.0:  # stop the controller a second into the broadcast
            await asyncio.sleep(0.1)
        [occ] = sched.table.occurrences(s["id"])
        assert occ["state"] == "fired" and occ["broadcast"]
    async with running(world, data) as (ctl, services, sched):
        [occ] = await settled(sched, s["id"])
        assert occ["state"] == "interrupted" and "not played again" in occ["why"]
        await asyncio.sleep(2.0)
        assert len(sched.table.occurrences(s["id"])) == 1 and not ctl.broadcasts
        assert any(r["action"] == "schedule_interrupted" for r in services.audit.rows())


@pytest.mark.parametrize("grace, expected", [(300.0, "played"), (1.0, "missed")])
async def test_missed_while_down_plays_late_within_grace_else_is_recorded(
    world, tmp_path, grace, expected
):
    data = world.data_dir(f"missed-{expected}")
    async with running(world, data) as (_ctl, services, sched):
        clip = add_clip(services, tmp_path)
        at, text = ahead(2.5)
        s = await create(
            services, system(world), to=["v1"], clip=clip, when={"kind": "once", "at": text}
        )
    while time.time() < at + 2.0:  # the controller is down at the instant
        await asyncio.sleep(0.1)
    async with running(world, data, grace=grace) as (_ctl, services, sched):
        [occ] = await settled(sched, s["id"])
        assert occ["state"] == expected and occ["late"] >= 2.0
        if expected == "played":
            assert "late by" in occ["why"]
            assert set(playout_records(world.record, occ["broadcast"])) == set(
                world.site.resolve("v1")
            )
        else:
            assert occ["broadcast"] is None and "grace" in occ["why"]
        assert any(r["action"] == f"schedule_{expected}" for r in services.audit.rows())


async def test_an_owner_who_lost_the_scope_is_refused_at_firing_and_audited(world, tmp_path):
    async with running(world, world.data_dir("owner"), accounts=True) as (ctl, services, sched):
        accounts = services.accounts
        accounts.add_user("cun1", "pw-cun1-long-enough", "v1", "operator")
        accounts.add_user("cun2", "pw-cun2-long-enough", "v1", "operator")
        clip = add_clip(services, tmp_path)
        at, text = ahead(4)
        gone = await create(
            services,
            Principal("cun1", "v1"),
            to=["v1"],
            clip=clip,
            when={"kind": "once", "at": text},
        )
        moved = await create(
            services,
            Principal("cun2", "v1"),
            to=["v1"],
            clip=clip,
            when={"kind": "once", "at": site_time(at + 3)},
        )
        accounts.remove_user("cun1")  # the account is gone
        accounts.remove_user("cun2")
        accounts.add_user("cun2", "pw-cun2-long-enough", "v2", "operator")  # moved to v2
        [a] = await settled(sched, gone["id"])
        [b] = await settled(sched, moved["id"])
        assert a["state"] == "refused" and "owner_gone" in a["why"] and a["broadcast"] is None
        assert b["state"] == "refused" and "outside your scope" in b["why"]
        assert not ctl.broadcasts

        def refused() -> set:  # (the audit thread writes its rows a moment later)
            rows = services.audit.rows()
            return {r["what"]["schedule"] for r in rows if r["action"] == "schedule_refused"}

        with contextlib.suppress(TimeoutError):
            await wait_for(lambda: len(refused()) >= 2, 10)
        assert refused() == {gone["id"], moved["id"]}
