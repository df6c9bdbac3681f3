"""The permission matrix on the real zones.yaml, judged by what the speakers actually recorded.

Users at each tier (the subdistrict, two areas, three villages) play a 0.1 s clip to every zone
and group of /work/main/zones.yaml (113 speakers, simulated in one child process). A target
allowed to a user must be heard on exactly the speakers it reaches; a refused one answers 403
naming the target and the first speaker outside the scope, and leaves no recording at all. Then
each user's listings (speakers, broadcasts, events, audit) show only what is in their scope.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
from pathlib import Path

import pytest

import broadcaster.site as zones
from broadcaster.core import operations
from broadcaster.endpoint.simulator import sim_host
from broadcaster.site import Site
from tests.support.audio import sweep, wav_file
from tests.support.harness import (
    ROOT,
    SimProcess,
    controller,
    playout_records,
    site_tag,
    wait_done,
    wait_online,
)
from tests.web.helpers import bearer, make_user

REAL_ZONES = ROOT / "zones.yaml"
# (user, scope): the subdistrict, two areas, three villages (one inside area-01, one in the
# road-1 group, one in the flood-watch group, which spans area-07 and area-08)
USERS = [
    ("office", "subdistrict"),
    ("area1", "area-01"),
    ("area7", "area-07"),
    ("v0101", "v-01-01"),
    ("v0301", "v-03-01"),
    ("v0701", "v-07-01"),
]


def prepared(text: str) -> str:
    """zones.yaml for this run, its tree, speakers and groups as they are, but:

    - without multicast groups: every speaker gets its own stream, so what it recorded depends
      only on who may reach it (and a fixed group would mix with other runs on the machine);
    - with a static loopback address per speaker (the simulator's own, a free port), so the
      matrix does not hang on discovery; mDNS still runs with a fresh site tag.
    """
    text = re.sub(r'^\s*multicast: "[^"]*".*\n', "", text, flags=re.MULTILINE)
    ids = sorted(re.findall(r"{id: ([\w-]+), name: [^,]+, kind: (?:column|horn)", text))

    def address(m: re.Match) -> str:
        host = sim_host(ids.index(m.group(1)))
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        return f'{{id: {m.group(1)}, address: "{host}:{port}",'

    return re.sub(r"{id: ([\w-]+),(?= name: [^,]+, kind: (?:column|horn))", address, text)


class World:
    """The real site's 113 speakers in one child process, and their pairing keys."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.zones = base / "zones.yaml"
        self.zones.write_text(prepared(REAL_ZONES.read_text(encoding="utf-8")), encoding="utf-8")
        self.site: Site = zones.load(self.zones)
        self.keys, self.record = base / "keys", base / "rec"
        self.keys.mkdir()
        self.record.mkdir()
        self.tag = site_tag()
        self.sim = SimProcess(self.zones, self.keys, self.record, self.tag)

    def data_dir(self, name: str) -> Path:
        """A controller data directory holding the speakers' pairing keys."""
        d = self.base / name
        d.mkdir()
        shutil.copy(self.keys / "speaker-keys.json", d / "speaker-keys.json")
        return d

    def recorded_broadcasts(self) -> set[str]:
        """Every broadcast id any speaker has a playout record of."""
        out = set()
        for f in self.record.glob("*/playout.jsonl"):
            out |= {
                line.split('"broadcast": "', 1)[1].split('"', 1)[0]
                for line in f.read_text().splitlines()
                if line
            }
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("real-site"))
    w.sim.start(timeout=120)
    yield w
    w.sim.stop()


def targets(site: Site) -> list[str]:
    """Every zone and group of the site."""
    return sorted(site.zones) + sorted(site.groups)


def first_outside(site: Site, scope: str, target: str) -> str | None:
    """The oracle, from speaker sets alone: the first speaker the target reaches outside."""
    outside = sorted(site.resolve(target) - site.speakers_under(scope))
    return outside[0] if outside else None


async def test_permission_matrix_by_what_speakers_recorded(world, tmp_path, monkeypatch):
    site = world.site
    assert len(site.speakers) == 113 and site.groups
    clip = wav_file(tmp_path / "clip.wav", 8000, sweep(8000, 0.1)).read_bytes()
    async with controller(
        site, world.data_dir("matrix"), world.tag, accounts=True, playout_delay=1.5
    ) as (ctl, client):
        tokens = {name: make_user(client, name, scope)[1] for name, scope in USERS}
        await wait_online(ctl, 113, timeout=60)
        gate = asyncio.Semaphore(4)  # broadcasts playing at once: a 2-core machine

        async def request(name: str, target: str) -> tuple[int, dict]:
            async with gate:
                resp = await client.post(
                    "/api/broadcasts",
                    data=clip,
                    headers={**bearer(tokens[name]), "Content-Type": "audio/wav"},
                    params={"to": target, "name": "clip.wav", "queue": "true"},
                )
                body = await resp.json()
                if resp.status == 201:
                    await wait_done(ctl, body["id"], timeout=120)
                return resp.status, body

        # one user at a time: a higher tier would cut a lower one's announcement where they
        # meet (arbitration, tested in test_preemption.py); equal ranks queue
        cases = [(name, scope, t) for name, scope in USERS for t in targets(site)]
        answers = []
        for name, _ in USERS:
            answers += await asyncio.gather(*(request(n, t) for n, _, t in cases if n == name))
        allowed: dict[str, tuple[str, str]] = {}
        wrong = []
        for (name, scope, target), (status, body) in zip(cases, answers, strict=True):
            outside = first_outside(site, scope, target)
            if outside is None:
                if status != 201:
                    wrong.append(f"{name} -> {target}: {status} {body}")
                else:
                    allowed[body["id"]] = (name, target)
            elif (
                status != 403
                or body["detail"]["speaker"] != outside
                or target not in body["message"]
            ):
                wrong.append(
                    f"{name} -> {target}: expected 403 naming {outside}, got {status} {body}"
                )
        assert not wrong, "\n".join(wrong)
        assert len(allowed) == sum(first_outside(site, s, t) is None for _, s, t in cases)

        heard_wrong = []
        for bid, (name, target) in allowed.items():
            records = playout_records(world.record, bid)
            # reached: the speaker ran a playout of this broadcast and its audio arrived (on a
            # starved 2-core machine some frames may come after their instant: "late", not lost)
            heard = {sid for sid, rec in records.items() if rec["packets"] + rec["late"] > 0}
            expect = site.resolve(target)
            if heard != expect:
                results = ctl.broadcast(bid).results
                why = {
                    sid: (
                        results[sid].state if sid in results else None,
                        {k: records[sid].get(k) for k in ("packets", "lost", "late", "ended")}
                        if sid in records
                        else "no playout record",
                    )
                    for sid in sorted(expect - heard)[:3]
                }
                heard_wrong.append(
                    f"{name} -> {target} ({bid}): missing "
                    f"{sorted(expect - heard)[:5]} {why}, "
                    f"extra {sorted(heard - expect)[:5]}"
                )
            states = {r.speaker: r.state for r in ctl.broadcast(bid).results.values()}
            if set(states) != expect or set(states.values()) & {
                "unreachable",
                "refused",
                "offline",
                "cut",
                "stopped",
            }:
                heard_wrong.append(f"{name} -> {target}: record says {states}")
        assert not heard_wrong, "\n".join(heard_wrong)
        # refused requests left no recording anywhere: every recorded broadcast was allowed
        assert world.recorded_broadcasts() == set(allowed)

        # the speaker list is built a few rows per turn of the loop: it must still join up whole
        monkeypatch.setattr(operations, "LIST_CHUNK", 3)
        await check_listings(site, ctl, client, tokens, allowed)


async def check_speaker_filters(site: Site, client, h: dict, name: str, scope: str) -> None:
    """GET /api/speakers by zone and by page: inside the scope the rows are exactly the zone's,
    pages join up to the whole sorted list with the scope's counts on each; a zone outside the
    scope is refused naming it, an unknown one named."""
    mine = site.speakers_under(scope)
    inner = sorted(z for z in site.zones if set() < site.speakers_under(z) < mine)
    inner = inner or [scope]
    for zone in (scope, inner[-1]):
        resp = await client.get("/api/speakers", params={"zone": zone}, headers=h)
        body = await resp.json()
        assert {s["id"] for s in body["speakers"]} == site.speakers_under(zone), (name, zone)
        assert body["matched"] == len(site.speakers_under(zone))
        assert body["counts"]["total"] == len(mine)
    pages = []
    for offset in (0, 2, 4):
        resp = await client.get(
            "/api/speakers", params={"offset": str(offset), "limit": "2"}, headers=h
        )
        body = await resp.json()
        assert body["counts"]["total"] == len(mine) and body["matched"] == len(mine)
        pages += [s["id"] for s in body["speakers"]]
    assert pages == sorted(mine)[:6], name
    outside = sorted(z for z in site.zones if not site.speakers_under(z) & mine)
    if outside:
        resp = await client.get("/api/speakers", params={"zone": outside[0]}, headers=h)
        assert resp.status == 403 and outside[0] in (await resp.json())["message"]
    resp = await client.get("/api/speakers", params={"zone": "no-such-zone"}, headers=h)
    assert resp.status == 404 and "no-such-zone" in (await resp.json())["message"]
    resp = await client.get("/api/speakers", params={"limit": "0"}, headers=h)
    assert resp.status == 400


async def check_listings(
    site: Site, ctl, client, tokens: dict[str, str], allowed: dict[str, tuple[str, str]]
) -> None:
    """Each user's speakers, broadcasts, events and audit rows: in scope, and complete."""
    await asyncio.sleep(0.5)  # the last audit rows are written on the audit thread
    for name, scope in USERS:
        mine = site.speakers_under(scope)
        whole = scope == site.root.id
        h = bearer(tokens[name])
        speakers = (await (await client.get("/api/speakers", headers=h)).json())["speakers"]
        assert [s["id"] for s in speakers] == sorted(mine), name
        await check_speaker_filters(site, client, h, name, scope)

        listed = (
            await (await client.get("/api/broadcasts", params={"limit": "1000"}, headers=h)).json()
        )["broadcasts"]
        expect = {bid for bid, (_, t) in allowed.items() if site.resolve(t) & mine}
        assert {b["id"] for b in listed} == expect, name

        events = (
            await (await client.get("/api/events", params={"limit": "1000"}, headers=h)).json()
        )["events"]
        assert events
        for ev in events:
            sp = [ev["speaker"]] if "speaker" in ev else ev.get("speakers_list", [])
            assert (set(sp) & mine) if sp else whole, (name, ev)
        seen_bids = {ev.get("broadcast") for ev in events}
        assert seen_bids - {None} <= expect, name

        rows = (await (await client.get("/api/audit", params={"limit": "1000"}, headers=h)).json())[
            "rows"
        ]
        assert (
            any(r["actor"] == name and r["action"] == "broadcast_refused" for r in rows) or whole
        ), name
        for r in rows:
            if whole:
                continue
            reach: set[str] = set()
            for t in r["targets"]:
                if t in site.zones or t in site.groups or t in site.speakers:
                    reach |= site.resolve(t)
            touches = (
                reach & mine
                or set(r["outcome"]) & mine
                or r["actor_scope"] in site.zones
                and scope in site.path(r["actor_scope"])
            )
            assert touches, (name, r)
            assert r.get("broadcast") in expect | {None}, (name, r)
