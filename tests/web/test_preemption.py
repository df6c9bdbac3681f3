"""Preemption through the API, judged by the speakers' own playout records.

A village announcement is cut on some of its village's horns by an area live broadcast, which an
emergency from the subdistrict cuts in turn; speakers outside each higher broadcast keep playing
the lower one; a background clip pauses where it is outranked and resumes; the records say who
cut whom, where. A lower request to a held speaker is refused 409 naming the holder, or waits
with queue=true; only the subdistrict may start an emergency.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

import broadcaster.site as zones
from tests.support.audio import sweep, wav_file
from tests.support.harness import SimProcess, controller, site_tag, wait_done, wait_online
from tests.support.sites import small_site
from tests.web.helpers import bearer, make_user


@pytest.fixture
def world(tmp_path):
    path = small_site(tmp_path / "zones.yaml", villages=2, horns=3, columns=1)
    keys, record = tmp_path / "keys", tmp_path / "rec"
    keys.mkdir()
    record.mkdir()
    tag = site_tag()
    sim = SimProcess(path, keys, record, tag).start()
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(keys / "speaker-keys.json", data / "speaker-keys.json")
    yield zones.load(path), data, record, tag
    sim.stop()


def records(record, bid: str) -> dict[str, list[dict]]:
    """Every playout record of a broadcast, per speaker (a resumed speaker has several)."""
    out: dict[str, list[dict]] = {}
    for f in record.glob("*/playout.jsonl"):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if rec["broadcast"] == bid:
                out.setdefault(rec["speaker"], []).append(rec)
    return out


async def test_cut_chain_resume_refuse_and_queue(world, tmp_path):
    site, data, record, tag = world

    def clip(name: str, seconds: float) -> bytes:
        return wav_file(tmp_path / name, 8000, sweep(8000, seconds)).read_bytes()

    async with controller(site, data, tag, accounts=True, playout_delay=0.3) as (ctl, client):
        await wait_online(ctl, len(site.speakers), timeout=30)
        tok = {
            name: make_user(client, name, scope)[1]
            for name, scope in (("office", "sd"), ("area", "a1"), ("village", "v1"))
        }

        async def play(who: str, audio: bytes, priority: str, *to: str, queue: bool = False):
            resp = await client.post(
                "/api/broadcasts",
                data=audio,
                headers={**bearer(tok[who]), "Content-Type": "audio/wav"},
                params=[
                    ("priority", priority),
                    ("name", "clip.wav"),
                    ("queue", str(queue).lower()),
                    *(("to", t) for t in to),
                ],
            )
            return resp.status, await resp.json()

        st, bg = await play("office", clip("bg.wav", 9.0), "background", "sd")
        assert st == 201, bg
        await asyncio.sleep(1.0)
        st, ann = await play("village", clip("ann.wav", 5.0), "announcement", "v1")
        assert st == 201, ann
        await asyncio.sleep(0.8)
        st, live = await play("area", clip("live.wav", 3.0), "live", "h1-1", "h1-2", "h2-1", "h2-2")
        assert st == 201, live
        await asyncio.sleep(0.8)
        # an area may not start an emergency; the subdistrict may
        st, body = await play("area", clip("em0.wav", 0.5), "emergency", "h1-1")
        assert st == 403 and "emergency" in body["message"], body
        st, em = await play("office", clip("em.wav", 1.0), "emergency", "h1-1", "h2-1")
        assert st == 201, em
        await asyncio.sleep(0.2)
        # a lower request to a held speaker: refused naming the holder, or queued
        st, body = await play("village", clip("late.wav", 0.4), "announcement", "h1-2")
        assert st == 409 and live["id"] in body["message"], body
        assert body["detail"]["held"] == {"h1-2": live["id"]}
        st, queued = await play(
            "village", clip("late.wav", 0.4), "announcement", "h1-2", queue=True
        )
        assert st == 201 and queued["state"] == "queued", queued

        done = {
            b["id"]: await wait_done(ctl, b["id"], timeout=60) for b in (em, live, ann, queued, bg)
        }
        cut_by = {
            bid: {s["speaker"]: s["cut_by"] for s in b["speakers"]} for bid, b in done.items()
        }
        state = {bid: {s["speaker"]: s["state"] for s in b["speakers"]} for bid, b in done.items()}
        E, L, A, Q, B = em["id"], live["id"], ann["id"], queued["id"], bg["id"]

        # the controller's record: who cut whom, where
        assert state[E] == {"h1-1": "played", "h2-1": "played"}
        assert cut_by[L] == {"h1-1": E, "h1-2": None, "h2-1": E, "h2-2": None}
        assert state[L] == {"h1-1": "cut", "h1-2": "played", "h2-1": "cut", "h2-2": "played"}
        assert cut_by[A] == {"h1-1": L, "h1-2": L, "h1-3": None}
        assert state[A] == {"h1-1": "cut", "h1-2": "cut", "h1-3": "played"}
        assert state[Q] == {"h1-2": "played"}
        assert done[Q]["started_at"] >= done[L]["ended_at"] - 0.5  # it waited for the holder

        # the speakers' own records agree: what played where, who preempted whom
        rec = {bid: records(record, bid) for bid in (E, L, A, Q, B)}
        assert set(rec[E]) == {"h1-1", "h2-1"}
        for sid in ("h1-2", "h2-2"):
            assert rec[L][sid][-1]["ended"] != "preempted"
        for sid in ("h1-1", "h2-1"):
            assert rec[L][sid][0]["ended"] == "preempted"
            assert rec[L][sid][0].get("preempted_by") in (E, None)
        assert rec[A]["h1-3"][-1]["ended"] != "preempted"
        assert all(rec[A][s][0]["ended"] == "preempted" for s in ("h1-1", "h1-2"))
        # the background kept playing where nobody outranked it, and came back elsewhere
        assert state[B]["col-1"] == "played" and state[B]["h2-3"] == "played", state[B]
        resumed = {s for s, recs in rec[B].items() if len(recs) > 1}
        assert resumed >= {"h2-2", "h1-3"}, {
            s: [(r["ended"], r["packets"]) for r in recs] for s, recs in rec[B].items()
        }
