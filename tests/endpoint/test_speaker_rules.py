"""The endpoint's own rules, whatever its controller does: a broadcast that never starts or whose
packets stop ends; a lower priority never displaces a higher stream; a stream that ended or was
refused here is known by its key, so its packets are never counted as attacks; bad fields are
refused before anything moves; multicast sockets are released whichever way a broadcast ends."""

from __future__ import annotations

import asyncio
import json
import random
import time
import warnings

import aiohttp
import pytest

import broadcaster.endpoint.speaker as speaker_mod
import broadcaster.protocol.playout as playout_mod
from broadcaster.endpoint.simulator import playout_records, recorded_pcm
from broadcaster.errors import SpeakerError
from broadcaster.protocol.auth import sign_request
from tests.endpoint.direct import Stream, call, endpoints, udp_sockets
from tests.support.audio import assert_recording_matches, sweep
from tests.support.harness import wait_for as until

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ATTACKS = ("dropped_unauthenticated", "dropped_replay", "dropped_malformed")


async def raw_post(sp, path: str, body: dict) -> tuple[int, dict]:
    """A signed POST whose HTTP status the test sees (the link turns errors into exceptions)."""
    raw = json.dumps(body).encode()
    auth = sign_request(sp.spec.speaker_id, sp.spec.key, "POST", path, raw, time.time())
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://{sp.spec.host}:{sp.control_port}{path}",
            data=raw,
            headers={"Authorization": auth},
        ) as resp,
    ):
        return resp.status, await resp.json()


def attacks(sp) -> dict:
    return {k: sp.counters.get(k, 0) for k in ATTACKS}


async def test_a_broadcast_that_never_starts_or_whose_packets_stop_ends_idle(monkeypatch, tmp_path):
    monkeypatch.setattr(playout_mod, "ARM_TIMEOUT", 1.0)
    async with endpoints(2, tmp_path) as (sps, link):
        never = Stream("never", 20, sps)  # armed, then its controller dies before the start
        for sp in sps:
            await call(link, sp, "POST", "/play", never.body(sp))
        assert all(sp.status()["playing"] == "never" for sp in sps)
        took = await until(lambda: all(sp.status()["playing"] is None for sp in sps), 5)
        assert 0.9 < took < 3
        for sp in sps:
            rep = await call(link, sp, "GET", "/playout/never")
            assert rep["ended"] == "idle" and rep["samples"] == 0 and rep["first_sample_at"] is None

        cut = Stream("cut", 20, sps)  # starts, then its packets stop (no end report ever)
        for sp in sps:
            await call(link, sp, "POST", "/play", cut.body(sp))
        cut.start()
        await cut.send(sweep(8000, 0.5))
        await until(
            lambda: all(sp.status()["playing"] is None for sp in sps), playout_mod.IDLE_END + 2
        )
        for sp in sps:
            rep = await call(link, sp, "GET", "/playout/cut")
            assert rep["ended"] == "idle" and rep["packets"] == 25
        cut.close()
        never.close()


def test_an_armed_playout_waits_its_arm_timeout_for_the_first_report():
    from broadcaster.protocol.codecs import PCMU

    p = playout_mod.Playout("b", PCMU, 1, 0, None, armed_at=100.0)
    assert not p.finished(100.0 + playout_mod.ARM_TIMEOUT - 0.01)
    assert p.finished(100.0 + playout_mod.ARM_TIMEOUT + 0.01)
    p.base_time = 104.0  # the first sender report came: the arm timeout no longer applies
    assert not p.finished(100.0 + playout_mod.ARM_TIMEOUT + 0.01)


async def test_a_lower_priority_never_displaces_a_higher_stream(tmp_path):
    src = sweep(8000, 1.5)
    async with endpoints(1, tmp_path) as ([sp], link):
        low = Stream("low", 10, [sp])
        await call(link, sp, "POST", "/play", low.body(sp))
        low.start()
        await low.send(src, 10)

        high = Stream("high", 30, [sp])  # higher: preempts
        await call(link, sp, "POST", "/play", high.body(sp))
        rep = await call(link, sp, "GET", "/playout/low")
        assert rep["ended"] == "preempted" and rep["preempted_by"] == "high"
        assert sp.status()["playing"] == "high" and sp.status()["priority"] == 30
        high.start()
        sending = asyncio.ensure_future(high.send(src))
        await asyncio.sleep(0.3)

        low2 = Stream("low2", 10, [sp])  # lower, as a buggy controller might send it
        status, body = await raw_post(sp, "/play", low2.body(sp))
        assert status == 409 and body["error"] == "outranked"
        assert "holds this speaker at priority 30" in body["message"] and "high" in body["message"]
        with pytest.raises(SpeakerError) as err:
            await call(link, sp, "POST", "/play", low2.body(sp))
        assert err.value.code == "outranked"
        assert sp.status()["playing"] == "high"
        await sending
        high.end()
        await until(lambda: sp.status()["playing"] is None, 3)
        rec = playout_records(tmp_path, "high")[sp.spec.speaker_id]
        assert rec["ended"] == "end" and rec["samples"] == len(src) // 2
        pcm, _ = recorded_pcm(tmp_path, sp.spec.speaker_id, "high")
        assert_recording_matches(
            pcm, audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2), 8000, rec["lost"]
        )
        assert "low2" not in sp.reports and sp.counters["play_outranked"] == 2

        same = Stream("same", 30, [sp])  # an equal priority takes an idle or equal speaker
        again = Stream("again", 30, [sp])
        await call(link, sp, "POST", "/play", same.body(sp))
        await call(link, sp, "POST", "/play", again.body(sp))
        assert sp.reports["same"]["preempted_by"] == "again"
        assert attacks(sp) == dict.fromkeys(ATTACKS, 0)
        for s in (low, high, low2, same, again):
            s.close()


async def test_packets_of_a_preempted_or_refused_stream_are_not_attacks(tmp_path):
    async with endpoints(2, tmp_path) as (sps, link):
        low = Stream("low", 10, sps)
        for sp in sps:
            await call(link, sp, "POST", "/play", low.body(sp))
        low.start()
        low_src = sweep(8000, 6.0)
        # the old broadcast's controller never learns: it streams to the end, 6 s
        old = asyncio.ensure_future(low.send(low_src))
        await asyncio.sleep(1.0)
        high = Stream("high", 30, sps)
        for sp in sps:
            await call(link, sp, "POST", "/play", high.body(sp))
        high.start()
        await high.send(sweep(8000, 1.0))
        high.end()
        refused = Stream("refused", 5, sps)  # refused while high plays; sent anyway
        await until(lambda: all(sp.status()["playing"] is None for sp in sps), 3)
        high2 = Stream("high2", 30, sps)  # armed, holding the speakers at 30
        for sp in sps:
            await call(link, sp, "POST", "/play", high2.body(sp))
        for sp in sps:
            with pytest.raises(SpeakerError, match="priority 30"):
                await call(link, sp, "POST", "/play", refused.body(sp))
        refused.start()
        await refused.send(sweep(8000, 0.5))
        await old
        low.end()
        await asyncio.sleep(0.2)
        for sp in sps:
            assert attacks(sp) == dict.fromkeys(ATTACKS, 0), sp.counters
            # every frame of low after the preemption, and all of refused, were recognised
            assert sp.counters["late_previous_broadcast"] >= 200 + 25
            assert sp.reports["low"]["ended"] == "preempted"
            assert sp.reports["high"]["ended"] == "end" and sp.reports["high"]["lost"] == 0

        # a replay of one of low's packets is still an attack, and so is a forgery with its SSRC
        sent: list[bytes] = []
        low.sender.send = lambda data, addr: (sent.append(data), low.sock.sendto(data, addr))
        low.sender.frame(low.sent, bytes(320), time.time())
        await asyncio.sleep(0.1)
        sp = sps[0]
        late = sp.counters["late_previous_broadcast"]
        low.sock.sendto(sent[0], (sp.spec.host, sp.rtp_port))
        forged = bytearray(sent[0])  # low's SSRC, a sequence number never sent, a bad tag
        forged[2:4] = ((int.from_bytes(forged[2:4], "big") + 1000) & 0xFFFF).to_bytes(2, "big")
        low.sock.sendto(bytes(forged), (sp.spec.host, sp.rtp_port))
        await until(lambda: sp.counters["dropped_replay"] == 1, 2)
        await until(lambda: sp.counters["dropped_unauthenticated"] == 1, 2)
        assert sp.counters["late_previous_broadcast"] == late

        # a minute after its last packet, an old stream's key is forgotten
        sp.mono = lambda: time.monotonic() + speaker_mod.PREVIOUS_GRACE + 1
        low.sender.frame(low.sent + 1, bytes(320), time.time())
        await until(lambda: sp.counters["dropped_unauthenticated"] >= 2, 2)  # (and its SR)
        for s in (low, high, high2, refused):
            s.close()


async def test_the_known_streams_are_bounded(tmp_path):
    async with endpoints(1) as ([sp], link):
        streams = [Stream(f"b{i}", 10, [sp]) for i in range(speaker_mod.PREVIOUS_KEPT + 8)]
        for s in streams:
            await call(link, sp, "POST", "/play", s.body(sp))
        assert len(sp._known) == speaker_mod.PREVIOUS_KEPT
        for s in streams:
            s.close()


async def test_bad_play_fields_are_refused_before_anything_moves(tmp_path):
    async with endpoints(1) as ([sp], link):
        good = Stream("good", 20, [sp])
        await call(link, sp, "POST", "/play", good.body(sp))
        bad = Stream("bad", 90, [sp])
        for field, value, words in [
            ("priority", "high", "priority must be an integer"),
            ("ssrc", 1.5, "ssrc must be an integer"),
            ("volume", 500, "volume 500 is outside 0-100"),
            ("multicast", "10.0.0.1:5000", "not GROUP:PORT"),
            ("multicast", "239.1.2.3:http", "not GROUP:PORT"),
            ("base_time", "soon", "base_time must be a number"),
        ]:
            status, body = await raw_post(sp, "/play", bad.body(sp) | {field: value})
            assert status == 400 and words in body["message"], (field, body)
        status, body = await raw_post(sp, "/play", [1, 2])
        assert status == 400 and "JSON object" in body["message"]
        assert sp.status()["playing"] == "good" and sp.status()["priority"] == 20
        good.close()
        bad.close()


async def test_multicast_sockets_are_released_however_a_broadcast_ends(tmp_path):
    rng = random.Random()
    async with endpoints(3) as (sps, link):
        before = udp_sockets()
        for rnd in range(4):
            streams = []
            for i in range(6):  # concurrent plays race on each speaker: each preempts the last
                s = Stream(f"r{rnd}-{i}", 10 + i % 3, sps)
                streams.append(s)
            group = f"239.78.{rng.randrange(1, 250)}.{rng.randrange(1, 250)}"

            async def play(s, sp, n, group=group):
                body = s.body(sp) | {"multicast": f"{group}:{2 * rng.randrange(20000, 30000) + n}"}
                try:
                    await call(link, sp, "POST", "/play", body)
                except SpeakerError as exc:
                    assert exc.code == "outranked"

            await asyncio.gather(*(play(s, sp, n) for n, s in enumerate(streams) for sp in sps))
            for sp in sps:  # the one left playing: stopped, or preempted by the next round
                if rnd % 2:
                    bid = sp.status()["playing"]
                    await call(link, sp, "POST", "/stop", {"broadcast": bid})
            for s in streams:
                s.close()
        for sp in sps:
            await call(link, sp, "POST", "/stop", {"broadcast": sp.status()["playing"]})
        assert all(sp.active is None for sp in sps)
        assert udp_sockets() <= before


def test_a_stream_taken_up_mid_way_starts_at_the_frame_now_due():
    from broadcaster.protocol.codecs import PCMU

    p = playout_mod.Playout("b", PCMU, 1, 0, base_time=1000.0, armed_at=1010.0, join_late=True)
    frames = p.due(1010.001, 0.0)  # 10 s in: frame 500 is due now, the ones before are skipped
    # (but those within the card's underrun tolerance, which any tick may still write)
    assert [f.index for f in frames] == [498, 499, 500] and p.first_index == 498
    assert p.stats.lost == 3  # no packet came for them
    assert not p.finished(1011.0) and p.finished(1010.0 + playout_mod.IDLE_END + 0.1)
    fresh = playout_mod.Playout("c", PCMU, 1, 0, base_time=1000.0, armed_at=999.0)
    assert [f.index for f in fresh.due(1000.03, 0.0)] == [0, 1]  # frame 0 just due: played
