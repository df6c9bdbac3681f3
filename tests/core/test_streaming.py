"""The 113-speaker site end to end: real mDNS and SRTP on loopback, speakers in a child process.

One simulator and one controller serve the whole module; each test checks what the speakers'
virtual sound cards actually played.
"""

from __future__ import annotations

import asyncio
import subprocess
import warnings

import pytest
import pytest_asyncio

from tests.support.audio import assert_recording_matches, sweep, wav_file
from tests.support.harness import (
    SimProcess,
    controller,
    playout_records,
    recorded_pcm,
    site_tag,
    wait_done,
    wait_online,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def world(tmp_path_factory, zones_unicast):
    base = tmp_path_factory.mktemp("world")
    data, record = base / "data", base / "rec"
    data.mkdir()
    record.mkdir()
    tag = site_tag()
    sim = SimProcess(zones_unicast, data, record, tag).start()
    yield {"data": data, "record": record, "tag": tag, "sim": sim, "base": base}
    sim.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ctl_client(world, site_unicast):
    # a generous playout delay: the tests check content, not latency, on a possibly busy machine
    async with controller(
        site_unicast, world["data"], world["tag"], max_upload=2 * 1024 * 1024, playout_delay=0.3
    ) as (ctl, client):
        await wait_online(ctl, 113, timeout=60)
        yield ctl, client


async def play(ctl, pcm, targets, codec="pcmu"):
    b = await ctl.play(pcm, targets, codec=codec)
    return await wait_done(ctl, b.id)


async def test_all_113_speakers_discovered_over_mdns(ctl_client):
    ctl, client = ctl_client
    resp = await client.get("/api/speakers")
    body = await resp.json()
    assert body["counts"] == {"online": 113, "total": 113, "unassigned": 0}
    assert {s["source"] for s in body["speakers"]} == {"mdns"}
    assert all(s["address"].startswith("127.0.") for s in body["speakers"])
    horn = next(s for s in body["speakers"] if s["id"] == "horn-01-01-1")
    assert horn["zone_path"] == "示例街道/第一管区/示例一村" and horn["kind"] == "horn"


@pytest.mark.parametrize(
    "target", ["v-03-02", "area-05", "road-1", "seat-columns", "horn-09-05-1", "subdistrict"]
)
async def test_a_target_reaches_exactly_its_speakers(ctl_client, world, site_unicast, target):
    ctl, _ = ctl_client
    b = await play(ctl, sweep(8000, 0.2), [target])
    expected = site_unicast.resolve(target)
    played = playout_records(world["record"], b["id"])
    assert set(played) == set(expected)
    # on a busy machine a frame may come late: the record then says "partial", honestly
    assert b["state"] == "done" and b["summary"]["heard"] == len(expected)
    assert all(r["packets"] + r["lost"] == 10 and r["packets"] > 0 for r in played.values())
    by = {r["speaker"]: r for r in b["speakers"]}
    assert all(
        by[s]["state"] == ("played" if r["lost"] == 0 else "partial") for s, r in played.items()
    )
    if target == "subdistrict":
        assert len(expected) == 113
    if target == "v-03-02":
        assert expected == {s for s in site_unicast.speakers if s.startswith("horn-03-02-")}


@pytest.mark.parametrize("codec,rate", [("pcmu", 8000), ("l16", 16000)])
async def test_recorded_audio_equals_the_source(ctl_client, world, codec, rate):
    ctl, _ = ctl_client
    src = sweep(rate, 1.0)
    b = await play(ctl, src, ["v-02-01"], codec=codec)
    expect = audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2) if codec == "pcmu" else src
    recs = playout_records(world["record"], b["id"])
    for sid in ("horn-02-01-1", "horn-02-01-2"):
        pcm, got_rate = recorded_pcm(world["record"], sid, b["id"])
        assert got_rate == rate
        assert_recording_matches(pcm, expect, rate, recs[sid]["lost"])


async def test_play_a_file_through_the_api_decodes_with_ffmpeg(ctl_client, world, tmp_path):
    ctl, client = ctl_client
    src = sweep(8000, 0.5)
    flac = tmp_path / "notice.flac"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(wav_file(tmp_path / "n.wav", 8000, src)),
            str(flac),
        ],
        check=True,
    )
    resp = await client.post(
        "/api/broadcasts",
        params=[("to", "v-04-01"), ("name", "notice.flac")],
        data=flac.read_bytes(),
    )
    assert resp.status == 201, await resp.text()
    b = await wait_done(ctl, (await resp.json())["id"])
    pcm, _ = recorded_pcm(world["record"], "horn-04-01-1", b["id"])
    lost = playout_records(world["record"], b["id"])["horn-04-01-1"]["lost"]
    assert_recording_matches(pcm, audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2), 8000, lost)
    got = await (await client.get(f"/api/broadcasts/{b['id']}")).json()
    assert got["state"] == "done" and got["source"]["name"] == "notice.flac"
    assert {s["speaker"] for s in got["speakers"] if s["played"]} == set(
        ctl.site.resolve("v-04-01")
    )


async def test_disjoint_broadcasts_play_at_the_same_time(ctl_client, world):
    ctl, _ = ctl_client
    a = await ctl.play(sweep(8000, 1.0), ["area-06"])
    b = await ctl.play(sweep(8000, 1.0), ["area-07"])
    ra, rb = await wait_done(ctl, a.id), await wait_done(ctl, b.id)
    pa = playout_records(world["record"], a.id)
    pb = playout_records(world["record"], b.id)
    assert ra["summary"]["played"] == len(pa) > 0 and rb["summary"]["played"] == len(pb) > 0
    start_a = min(r["first_sample_at"] for r in pa.values())
    start_b = min(r["first_sample_at"] for r in pb.values())
    assert abs(start_a - start_b) < 1.0  # both one-second clips were sounding together


async def test_stop_cuts_a_broadcast_on_every_speaker(ctl_client, world):
    ctl, client = ctl_client
    b = await ctl.play(sweep(8000, 5.0), ["area-08"])
    while ctl.broadcast(b.id).state == "starting":
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    resp = await client.post(f"/api/broadcasts/{b.id}/stop")
    assert resp.status == 200
    done = await wait_done(ctl, b.id)
    assert done["state"] == "stopped"
    recs = playout_records(world["record"], b.id)
    assert recs and all(r["ended"] == "stopped" and r["samples"] < 8000 * 2 for r in recs.values())


async def test_errors_name_what_is_wrong(ctl_client, tmp_path):
    ctl, client = ctl_client
    r = await client.post("/api/broadcasts", params={"to": "v-99-99"}, data=b"x")
    assert r.status == 404
    assert "v-99-99" in (await r.json())["message"]
    r = await client.post(
        "/api/broadcasts",
        params={"to": "v-01-01", "name": "notice.mp3"},
        data=b"this is not audio at all" * 10,
    )
    body = await r.json()
    assert r.status == 422 and body["error"] == "bad_audio" and "notice.mp3" in body["message"]
    r = await client.post("/api/broadcasts", params={"to": "v-01-01"}, data=b"")
    assert r.status == 422 and "empty" in (await r.json())["message"]
    r = await client.post("/api/broadcasts", params={"to": "v-01-01"}, data=bytes(3 * 1024 * 1024))
    body = await r.json()
    assert r.status == 413 and "2 MiB" in body["message"]
    r = await client.post("/api/broadcasts", data=b"x")
    assert r.status == 400 and "target" in (await r.json())["message"]
    r = await client.get("/api/broadcasts/nope")
    assert r.status == 404 and "nope" in (await r.json())["message"]
    # the server keeps serving
    assert (await client.get("/api/speakers")).status == 200


async def test_broadcasts_and_events_are_journaled_in_the_data_dir(ctl_client, world):
    import json

    ctl, _ = ctl_client
    b = await play(ctl, sweep(8000, 0.1), ["v-05-01"])
    assert ctl.journal.flush()  # its lines are written on the journal's own thread
    lines = (world["data"] / "log" / "broadcasts.jsonl").read_text().splitlines()
    logged = [json.loads(x) for x in lines]
    mine = next(r for r in logged if r["id"] == b["id"])
    assert mine["state"] == "done" and mine["summary"]["played"] == b["summary"]["played"]
    events = [
        json.loads(x) for x in (world["data"] / "log" / "events.jsonl").read_text().splitlines()
    ]
    assert sum(e["kind"] == "online" for e in events) >= 113
