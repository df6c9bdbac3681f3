"""Faults in the structure itself (issue 7 point 6, issue 13 point 5), each against real speakers:
a stop during set-up, a malformed status answer, a long decode before the start, and leaks of
sockets and tasks after many broadcasts that end every way."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import warnings

from aiohttp import web

import broadcaster.site as zones
from broadcaster.access.policy import rank
from broadcaster.endpoint.simulator import load_keys
from broadcaster.errors import AuthError
from broadcaster.protocol.auth import ReplayGuard, response_mac
from tests.endpoint.direct import udp_sockets
from tests.support.audio import assert_recording_matches, sweep, wav_file
from tests.support.harness import (
    SimProcess,
    controller,
    playout_records,
    recorded_pcm,
    wait_done,
    wait_online,
)
from tests.support.harness import (
    wait_for as until,
)
from tests.support.net import free_port
from tests.support.sites import small_site
from tests.support.tools import need

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

LOW = rank("announcement", "village")
HIGH = rank("emergency", "subdistrict")


def static_site(tmp_path, **shape):
    """A small site whose every speaker has a static loopback address (no mDNS needed)."""
    probe = zones.load(small_site(tmp_path / "probe.yaml", **shape))
    static = {sid: f"127.0.0.1:{free_port()}" for sid in probe.speakers}
    path = small_site(tmp_path / "z.yaml", static=static, **shape)
    return path, zones.load(path)


class FakeSpeaker:
    """A real HTTP server on 127.0.0.1 that checks signed requests and signs its answers with the
    pairing key, as the endpoint does, but answers /status with whatever body it is given."""

    def __init__(self, sid: str, key: bytes, port: int) -> None:
        self.sid, self.key, self.port = sid, key, port
        self.guard = ReplayGuard()
        self.bodies: list[bytes] = []  # /status answers still to give, in order
        self.last = json.dumps(
            {
                "id": sid,
                "kind": "horn",
                "volume": 80,
                "rtp_port": 40000,
                "playing": None,
                "priority": None,
                "counters": {},
                "clock": {"synced": True, "offset": 0.0, "rtt": 0.0},
            }
        ).encode()
        self.served = 0
        self.play_delay = 0.0
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None

    async def start(self) -> FakeSpeaker:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def close(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            nonce = self.guard.check(
                self.key,
                request.method,
                request.path_qs,
                body,
                request.headers.get("Authorization", ""),
                time.time(),
                self.sid,
            )
        except AuthError:
            return web.Response(status=401)
        self.requests.append(request.path)
        if request.path == "/status":
            out = self.bodies.pop(0) if self.bodies else self.last
            self.served += 1
        elif request.path == "/play":
            await asyncio.sleep(self.play_delay)
            out = json.dumps({"ok": True, "rtp_port": 40000}).encode()
        else:
            out = json.dumps({"ok": True}).encode()
        resp = web.Response(body=out, content_type="application/json")
        resp.headers["X-BC-MAC"] = response_mac(self.key, nonce, 200, out)
        return resp


async def statuses(ctl, ids: list[str]) -> dict[str, dict]:
    """Each speaker's own answer to a signed /status."""

    async def one(sid):
        a = ctl.bc.addresses[sid]
        return sid, await ctl.link.call(sid, a.host, a.port, "GET", "/status")

    return dict(await asyncio.gather(*(one(s) for s in ids)))


# --- a stop during set-up ----------------------------------------------------------------------


async def test_a_stop_during_set_up_leaves_no_speaker_playing(tmp_path, data, record, tag):
    path, site = static_site(tmp_path, villages=3, horns=3, columns=2)  # 11 speakers
    slow_id = "col-2"
    sims = sorted(set(site.speakers) - {slow_id})
    keys = load_keys(data, site)
    slow = await FakeSpeaker(slow_id, keys[slow_id], site.speakers[slow_id].address[1]).start()
    sim = SimProcess(path, data, record, tag, only=sims, mdns=False).start()
    try:
        async with controller(site, data, tag, mdns=False, poll_interval=0.5) as (ctl, _):
            await wait_online(ctl, len(site.speakers))

            # the stop comes as soon as play returns
            b = await ctl.play(sweep(8000, 5.0), ["sd"])
            assert ctl.broadcast(b.id).state == "starting"
            await ctl.stop(b.id)
            assert (await wait_done(ctl, b.id, 5))["state"] == "stopped"
            st = await statuses(ctl, sims)
            assert all(s["playing"] is None for s in st.values())

            # the stop comes while set-up waits for one slow speaker, the others already armed
            slow.play_delay = 1.0
            b = await ctl.play(sweep(8000, 5.0), ["sd"], priority="live", rank=HIGH)
            await until(lambda: "/play" in slow.requests, 5)
            t0 = time.monotonic()
            while any(s["playing"] != b.id for s in (await statuses(ctl, sims)).values()):
                assert time.monotonic() - t0 < 3, "the speakers were never armed"
                await asyncio.sleep(0.02)
            assert ctl.broadcast(b.id).state == "starting"
            stopped_at = time.monotonic()
            await ctl.stop(b.id)

            async def all_idle():
                return all(s["playing"] is None for s in (await statuses(ctl, sims)).values())

            while not await all_idle():
                assert time.monotonic() - stopped_at < 2.5, "speakers still playing"
                await asyncio.sleep(0.05)
            print(
                f"every speaker idle {time.monotonic() - stopped_at:.2f} s after the stop "
                f"(set-up held {slow.play_delay} s by the slow speaker)"
            )
            res = await wait_done(ctl, b.id, 5)
            assert res["state"] == "stopped" and res["frames"] == 0
            assert {r["state"] for r in res["speakers"]} == {"stopped"}
            assert slow.requests.count("/stop") == 1
            for sid in sims:
                a = ctl.bc.addresses[sid]
                rep = await ctl.link.call(sid, a.host, a.port, "GET", f"/playout/{b.id}")
                assert rep["ended"] == "stopped" and rep["samples"] == 0
    finally:
        sim.stop()
        await slow.close()


# --- a malformed status answer -----------------------------------------------------------------

MALFORMED = [
    b"[1, 2, 3]",
    b"null",
    b'"a string"',
    b"42",
    b"not json at all",
    b"\xff\xfe\x00",
    b"[" * 100_000,  # nesting deep enough to overflow the parser's recursion
    b'{"counters": "12", "rtp_port": "abc", "clock": [1], "playing": 5}',
    b'{"rtp_port": 1e400, "counters": {"dropped_replay": "x", "control_refused": [1]}}',
    b'{"counters": null, "clock": {"synced": "yes", "offset": "x"}, "volume": {}}',
    b'{"rtp_port": -1, "id": ["h2-2"], "counters": {"dropped_replay": 1e300}}',
]


async def test_a_malformed_status_answer_is_that_speakers_fault_alone(tmp_path, data, record, tag):
    path, site = static_site(tmp_path, villages=2, horns=2, columns=1)
    bad_id = "h2-2"
    good = sorted(set(site.speakers) - {bad_id})
    keys = load_keys(data, site)
    bad = await FakeSpeaker(bad_id, keys[bad_id], site.speakers[bad_id].address[1]).start()
    bad.bodies = MALFORMED * 2
    sim = SimProcess(path, data, record, tag, only=good, mdns=False).start()
    errors: set[str] = set()
    try:
        async with controller(site, data, tag, mdns=False, poll_interval=0.3) as (ctl, client):
            await wait_online(ctl, len(good))
            mark = time.time()
            t0 = time.monotonic()
            while bad.bodies:
                errors.add(ctl.registry.get(bad_id).last_error or "")
                assert time.monotonic() - t0 < 30, "the bad speaker stopped being polled"
                await asyncio.sleep(0.01)
            # everyone else kept being polled, and still is, all the while
            await until(lambda: all(ctl.registry.get(s).last_seen > mark + 0.5 for s in good), 5)
            assert all(ctl.registry.get(s).online for s in good)
            assert any("not a JSON object" in e for e in errors), errors
            # nesting past the parser's depth, and numbers past a double, are "not JSON" too
            assert any("answer is not JSON" in e for e in errors), errors
            body = await (await client.get("/api/speakers")).json()
            assert {s["id"] for s in body["speakers"] if s["online"]} >= set(good)
            assert not [e for e in ctl.events if e["kind"] == "attack"]
            # and the bad speaker, answering properly again, is monitored as before
            await until(
                lambda: (
                    ctl.registry.get(bad_id).online and ctl.registry.get(bad_id).last_error is None
                ),
                5,
            )
            b = await wait_done(ctl, (await ctl.play(sweep(8000, 0.3), good)).id)
            assert b["summary"]["played"] == len(good)
    finally:
        sim.stop()
        await bad.close()


# --- a long decode before the start ------------------------------------------------------------


async def test_a_long_file_plays_from_its_first_frame(tmp_path, data, record, tag):
    need("ffmpeg")
    path, site = static_site(tmp_path, villages=1, horns=1, columns=1)
    src = sweep(8000, 180.0)  # three minutes: the decode takes a while
    flac = tmp_path / "long.flac"
    await asyncio.to_thread(
        subprocess.run,
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(wav_file(tmp_path / "long.wav", 8000, src)),
            str(flac),
        ],
        check=True,
    )
    sim = SimProcess(path, data, record, tag, mdns=False).start()
    try:
        async with controller(site, data, tag, mdns=False) as (ctl, client):
            await wait_online(ctl, len(site.speakers))
            resp = await client.post(
                "/api/broadcasts",
                params=[("to", "sd"), ("name", "long.flac")],
                data=flac.read_bytes(),
            )
            assert resp.status == 201, await resp.text()
            bid = (await resp.json())["id"]
            await until(lambda: ctl.broadcast(bid).state == "playing", 10)
            await asyncio.sleep(1.6)
            assert (await client.post(f"/api/broadcasts/{bid}/stop")).status == 200
            b = await wait_done(ctl, bid)
            assert b["state"] == "stopped"
    finally:
        sim.stop()
    step = 8000 // 50 * 2
    n = 50 * step  # the first second
    expect = audioop.ulaw2lin(audioop.lin2ulaw(src[:n], 2), 2)
    recs = playout_records(record, bid)
    assert set(recs) == set(site.speakers)
    for sid, rec in recs.items():
        pcm, _ = recorded_pcm(record, sid, bid)
        assert len(pcm) >= n, f"{sid} played {len(pcm) // step} frames"
        bad = [
            i
            for i in range(50)
            if pcm[i * step : (i + 1) * step] != expect[i * step : (i + 1) * step]
        ]
        assert_recording_matches(pcm[:n], expect, 8000, len(bad))  # lost frames are silence
        assert len(bad) <= 2 and len(bad) <= rec["lost"], (sid, bad, rec)
        assert rec["ended"] == "stopped"


# --- no leaks -----------------------------------------------------------------------------------


async def test_a_hundred_broadcasts_leave_no_socket_or_task_behind(tmp_path, data, record, tag):
    path, site = static_site(tmp_path, villages=4, horns=2, columns=2, village_multicast=True)
    sim = SimProcess(path, data, None, tag, mdns=False).start()
    fds = f"/proc/{sim.pid}/fd"
    try:
        async with controller(site, data, tag, mdns=False, poll_interval=0.5) as (ctl, _):
            await wait_online(ctl, len(site.speakers))
            await wait_done(ctl, (await ctl.play(sweep(8000, 0.3), ["sd"])).id)  # warm up
            await asyncio.sleep(1.0)
            base_fds, base_udp = len(os.listdir(fds)), udp_sockets(sim.pid)
            base_tasks = len(asyncio.all_tasks())
            tone = sweep(8000, 0.6)
            ended: dict[str, str] = {}
            count = 0
            while count < 100:
                targets = ["v1", "v2", "v3", "v4", "col-1", "col-2"]  # disjoint, played at once
                bs = [await ctl.play(tone, [t], rank=LOW) for t in targets]
                await until(
                    lambda bs=bs: all(ctl.broadcast(b.id).state != "starting" for b in bs), 10
                )
                await asyncio.sleep(0.15)
                await ctl.stop(bs[1].id)  # v2's is stopped
                cut = await ctl.play(
                    sweep(8000, 0.2), ["h1-1", "col-1"], priority="live", rank=HIGH
                )  # takes one horn of v1's group, and col-1
                stopped_early = await ctl.play(tone, ["h3-1"], priority="live", rank=HIGH)
                await ctl.stop(stopped_early.id)  # stopped during its set-up
                for b in [*bs, cut, stopped_early]:
                    ended[b.id] = (await wait_done(ctl, b.id))["state"]
                count += len(bs) + 2
            states = {}
            for s in ended.values():
                states[s] = states.get(s, 0) + 1
            print(f"{len(ended)} broadcasts: {states}")
            assert states.get("stopped", 0) >= 2 * len(ended) // 8
            assert not [e for e in ctl.events if e["kind"] == "attack"]

            async def settled() -> bool:
                await asyncio.sleep(0.2)
                return (
                    udp_sockets(sim.pid) <= base_udp
                    and len(os.listdir(fds)) <= base_fds + 12
                    and len(asyncio.all_tasks()) <= base_tasks + 2
                )

            t0 = time.monotonic()
            while not await settled():
                if time.monotonic() - t0 > 10:
                    raise AssertionError(
                        f"simulator: {udp_sockets(sim.pid)} UDP sockets (was {base_udp}), "
                        f"{len(os.listdir(fds))} fds (was {base_fds}); controller: "
                        f"{len(asyncio.all_tasks())} tasks (was {base_tasks})"
                    )
            print(
                f"after: {udp_sockets(sim.pid)} UDP sockets (was {base_udp}), "
                f"{len(os.listdir(fds))} fds (was {base_fds}), "
                f"{len(asyncio.all_tasks())} tasks (was {base_tasks})"
            )
    finally:
        sim.stop()
