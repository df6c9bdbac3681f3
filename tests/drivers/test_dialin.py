"""Dial-in (issue 12.1, 12.2, 12.6): horns behind a real NAT connect out, are controlled and play.

A village of two horns sits behind a masquerading router (tests/support/netns.py): the horns are
real `broadcaster speaker --key-file … --controller HOST:PORT` processes inside the village
namespace; the controller runs in this process on the host's end of the uplink and cannot reach
them. One column is simulated on 127.0.0.1 with a static address (zones.yaml `address:`) — the
normal LAN way: the controller's --interface is the uplink address, which the column reaches as
a local address, so one controller serves both kinds without mDNS.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import aiohttp
import pytest

import broadcaster.site as zones_mod
from broadcaster.core.controller import Controller
from broadcaster.endpoint.dialin import BACKOFF_CAP, backoff
from broadcaster.protocol import dialin as msg
from tests.support import netns
from tests.support.audio import assert_recording_matches, sweep
from tests.support.harness import (
    ROOT,
    SimProcess,
    pair_key,
    playout_records,
    recorded_pcm,
    serve,
    site_tag,
    wait_done,
    wait_for,
    wait_online,
)
from tests.support.net import free_port
from tests.support.sites import small_site

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

HORNS = ["h1-1", "h1-2"]


# --- the pure parts ------------------------------------------------------------------------


def test_punch_round_trip_and_forgery():
    key, other = os.urandom(32), os.urandom(32)
    data = msg.encode_punch("h1-1", key, 1234.5, 7)
    p = msg.decode_punch(data, key)
    assert (p.speaker_id, p.ts, p.seq) == ("h1-1", 1234.5, 7)
    assert msg.punch_speaker(data) == "h1-1"
    with pytest.raises(msg.DialInError):
        msg.decode_punch(data, other)
    flipped = bytearray(data)
    flipped[-20] ^= 1
    with pytest.raises(msg.DialInError):
        msg.decode_punch(bytes(flipped), key)
    with pytest.raises(msg.DialInError):
        msg.punch_speaker(b"BCK1" + data[4:])


def test_handshake_macs_bind_nonce_and_speaker():
    key = os.urandom(32)
    assert msg.hello_mac(key, "n1", "h1-1") != msg.hello_mac(key, "n2", "h1-1")
    assert msg.hello_mac(key, "n1", "h1-1") != msg.hello_mac(key, "n1", "h1-2")
    assert msg.hello_mac(key, "n1", "h1-1") != msg.welcome_mac(key, "n1", "h1-1")
    assert not msg.check_mac(msg.hello_mac(key, "n", "x"), None)


def test_media_take_udp_while_punches_arrive_else_the_channel():
    way = msg.MediaWay()
    assert way.way(100.0) == msg.CHANNEL and way.changes_at(100.0) is None  # no punch yet
    way.punched(100.0)
    assert way.way(100.0) == msg.UDP
    assert way.changes_at(101.0) == 100.0 + msg.PUNCH_LOST
    # one punch lost (at 5 % loss, often) keeps UDP; two in a row do not
    assert way.way(100.0 + 2 * msg.PUNCH_EVERY) == msg.UDP
    assert way.way(100.0 + msg.PUNCH_LOST) == msg.CHANNEL
    way.punched(130.0)  # punches again: straight back to UDP
    assert way.way(130.0) == msg.UDP


def test_backoff_doubles_is_capped_and_jittered():
    rng = random.Random(1)
    waits = [backoff(n, rng) for n in range(1, 12)]
    assert 0.25 <= waits[0] <= 0.5 and waits[3] > waits[0]
    assert all(w <= BACKOFF_CAP for w in waits) and waits[-1] >= BACKOFF_CAP / 2
    assert len({round(backoff(8, rng), 3) for _ in range(20)}) > 1  # not in lockstep


# --- through a real NAT --------------------------------------------------------------------


def _cli(data: Path, *args: str, **kw) -> list[str]:
    return [sys.executable, "-m", "broadcaster.cli.main", "--data", str(data), *args]


async def _play_and_check(
    ctl: Controller, record: Path, targets: list[str], speakers: list[str]
) -> dict[str, dict]:
    src = sweep(8000, 1.0)
    b = await ctl.play(src, targets)
    done = await wait_done(ctl, b.id)
    results = {r["speaker"]: r for r in done["speakers"]}
    recs = playout_records(record, b.id)
    expect = audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2)
    for sid in speakers:
        assert results[sid]["state"] in ("played", "partial"), results[sid]
        pcm, _ = recorded_pcm(record, sid, b.id)
        assert_recording_matches(pcm, expect, 8000, recs[sid]["lost"])
    return recs


def _connect(host: str, port: int) -> str:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        return type(exc).__name__
    return "connected"


@pytest.mark.skipif(netns.unavailable() is not None, reason=netns.unavailable() or "")
async def test_horns_behind_nat_dial_in_play_in_step_and_survive_a_cut(tmp_path):
    col_port = free_port()
    zones = small_site(
        tmp_path / "zones.yaml",
        villages=1,
        horns=2,
        columns=1,
        static={"col-1": f"127.0.0.1:{col_port}"},
    )
    data, record = tmp_path / "data", tmp_path / "rec"
    data.mkdir()
    record.mkdir()
    keys = {sid: pair_key(zones, data, sid, tmp_path / f"{sid}.key") for sid in HORNS}
    site = zones_mod.load(zones)
    tag = site_tag()
    with netns.village(horns=2) as vil:
        served = await serve(
            site, data, vil.host_addr, interface=vil.host_addr, site_tag=tag, playout_delay=0.3
        )
        ctl, server = served.ctl, served.server
        col = SimProcess(zones, data, record, tag, only=["col-1"], mdns=False).start()
        logs = []
        try:
            for sid, addr in zip(HORNS, vil.horn_addrs):
                log = open(tmp_path / f"{sid}.log", "w")
                logs.append(log)
                vil.popen(
                    _cli(
                        data,
                        "speaker",
                        "--key-file",
                        str(keys[sid]),
                        "--host",
                        addr,
                        "--controller",
                        f"{vil.host_addr}:{server.port}",
                        "--no-mdns",
                        "--record",
                        str(record),
                    ),
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            await wait_online(ctl, 3, timeout=45)
            # listed like any other speaker: dial-in, at the router's address
            for sid in HORNS:
                st = ctl.registry.get(sid)
                assert (st.source, st.host) == ("dial-in", vil.router_uplink), st
                assert ctl.bc.dialin.media[sid][0] == vil.router_uplink
            assert ctl.registry.get("col-1").source == "static"
            # the controller cannot open a connection to a horn, nor through the router
            assert _connect(vil.horn_addrs[0], 8700) != "connected"
            assert _connect(vil.router_uplink, 8700) != "connected"

            # a broadcast to the whole subdistrict plays on both kinds, in step
            recs = await _play_and_check(ctl, record, [site.id], ["col-1", *HORNS])
            starts = [recs[s]["first_sample_at"] for s in ("col-1", *HORNS)]
            spread = max(starts) - min(starts)
            print(
                f"first_sample_at spread (controller time as each speaker knows it): "
                f"{spread * 1000:.2f} ms"
            )
            assert spread < 0.05  # loose: echo starts at ~30-40 ms; the CPU may be busy

            # stop works over the channel
            b = await ctl.play(sweep(8000, 6.0), [site.id])
            await asyncio.sleep(1.5)
            await ctl.stop(b.id)
            done = await wait_done(ctl, b.id)
            states = {r["speaker"]: r["state"] for r in done["speakers"]}
            assert all(states[s] == "stopped" for s in HORNS), states
            recs = playout_records(record, b.id)
            assert all(recs[s]["ended"] == "stopped" for s in HORNS), recs

            # a forged packet from inside the village is dropped and counted; nothing plays
            before = ctl.registry.get(HORNS[0]).counters.get("dropped_unauthenticated", 0)
            forger = vil.socket()
            forged = bytes([0x80, 0]) + os.urandom(10) + bytes(160)
            for _ in range(5):
                forger.sendto(forged, (vil.horn_addrs[0], 5004))
            forger.close()
            await wait_for(
                lambda: (
                    ctl.registry.get(HORNS[0]).counters.get("dropped_unauthenticated", 0)
                    >= before + 5
                ),
                10,
                "forgery not counted",
            )
            assert any(e["kind"] == "attack" and e.get("speaker") == HORNS[0] for e in ctl.events)
            assert ctl.registry.get(HORNS[0]).playing is None

            # the uplink fails: offline within ~10 s; restored: they dial in again and play
            vil.cut()
            t_off = await wait_for(
                lambda: not any(ctl.is_online(s) for s in HORNS),
                15,
                "horns still online after the cut",
            )
            print(f"offline {t_off:.1f} s after the cut")
            assert ctl.is_online("col-1")
            t_closed = await wait_for(
                lambda: all(ctl.bc.dialin.channels[s].closed for s in HORNS),
                15,
                "the channels outlived the cut",
            )  # heartbeats missed
            print(f"channels closed {t_off + t_closed:.1f} s after the cut")
            assert dict(ctl.bc.dialin.sessions) == {s: 1 for s in HORNS}
            vil.restore()
            t_on = await wait_for(
                lambda: all(ctl.is_online(s) for s in HORNS), 45, "horns did not come back"
            )
            print(f"online again {t_on:.1f} s after the restore")
            assert dict(ctl.bc.dialin.sessions) == {s: 2 for s in HORNS}  # they called again
            await wait_online(ctl, 3, timeout=30)
            await _play_and_check(ctl, record, [site.id], ["col-1", *HORNS])
        finally:
            col.stop()
            await served.close()
            for log in logs:
                log.close()


async def test_a_channel_that_fails_authentication_is_closed_and_alarmed(tmp_path):
    zones = small_site(tmp_path / "zones.yaml", villages=1, horns=1, columns=0)
    data = tmp_path / "data"
    data.mkdir()
    pair_key(zones, data, "h1-1", tmp_path / "k")
    site = zones_mod.load(zones)
    served = await serve(site, data, accounts=True)  # no token needed for dial-in
    ctl, server = served.ctl, served.server
    try:
        async with aiohttp.ClientSession() as http:
            for speaker in ("h1-1", "nobody"):
                async with http.ws_connect(f"http://127.0.0.1:{server.port}/api/dial-in") as ws:
                    challenge = await ws.receive_json(timeout=5)
                    assert challenge["t"] == "challenge"
                    await ws.send_json(
                        {
                            "t": "hello",
                            "speaker": speaker,
                            "nonce": "ab" * 16,
                            "mac": msg.hello_mac(os.urandom(32), challenge["nonce"], speaker),
                        }
                    )
                    m = await ws.receive(timeout=5)
                    assert m.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                    assert ws.close_code == 4401
        attacks = [e for e in ctl.events if e["kind"] == "attack"]
        assert [e.get("speaker") for e in attacks] == ["h1-1", None]
        assert all(e["counters"] == {"dialin_refused": 1} for e in attacks)
        assert not ctl.bc.dialin.channels and not ctl.is_online("h1-1")
        # a punch without a channel moves no media
        ctl.bc.dialin.on_punch(
            msg.encode_punch("h1-1", ctl.keys["h1-1"], ctl.now(), 1), ("127.0.0.9", 5004), ctl.now()
        )
        assert not ctl.bc.dialin.media
    finally:
        await served.close()


# --- UDP blocked: the media take the channel -------------------------------------------------


def _horn_command(data: Path, keyfile: Path, addr: str, record: Path, *extra: str) -> list[str]:
    return _cli(
        data,
        "speaker",
        "--key-file",
        str(keyfile),
        "--host",
        addr,
        "--no-mdns",
        "--record",
        str(record),
        *extra,
    )


async def _media_of(http: aiohttp.ClientSession, base: str, sid: str) -> str:
    async with http.get(f"{base}/api/speakers") as resp:
        rows = {s["id"]: s for s in (await resp.json())["speakers"]}
    return rows[sid]["media"]


@pytest.mark.skipif(netns.unavailable() is not None, reason=netns.unavailable() or "")
async def test_udp_blocked_by_the_village_router_audio_goes_over_the_channel(tmp_path):
    """The router forwards TCP only: no punch gets out, so the SRTP packets go, unchanged, over
    the dial-in channel (so does the clock exchange: test_dialin_clock.py); the horn plays them;
    when UDP is let through again the media go back to UDP, and fall back once more when punches
    stop."""
    zones = small_site(tmp_path / "zones.yaml", villages=1, horns=1, columns=0)
    data, record = tmp_path / "data", tmp_path / "rec"
    data.mkdir()
    record.mkdir()
    sid = "h1-1"
    key = pair_key(zones, data, sid, tmp_path / f"{sid}.key")
    site = zones_mod.load(zones)
    with netns.village(horns=1) as vil:
        vil.block_udp()
        served = await serve(site, data, vil.host_addr, interface=vil.host_addr, playout_delay=0.3)
        ctl, server = served.ctl, served.server
        base = f"http://{vil.host_addr}:{server.port}"
        dialin = ctl.bc.dialin
        log = open(tmp_path / "horn.log", "w")
        try:
            vil.popen(
                _horn_command(
                    data,
                    key,
                    vil.horn_addrs[0],
                    record,
                    "--controller",
                    f"{vil.host_addr}:{server.port}",
                ),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            # online for control (its channel is TCP)
            await wait_online(ctl, 1, timeout=45, synced=False)
            async with aiohttp.ClientSession() as http:
                await wait_for(lambda: ctl.registry.get(sid).media == "channel", 10, "not listed")
                assert await _media_of(http, base, sid) == "channel"
                assert sid not in dialin.media  # no punch ever arrived

                recs = await _play_and_check(ctl, record, [sid], [sid])
                assert dialin.carried[sid, "channel"] > 0 and dialin.carried[sid, "udp"] == 0
                print(
                    f"over the channel: {dialin.carried[sid, 'channel']} packets, "
                    f"{dialin.carried_bytes[sid, 'channel']} bytes; lost {recs[sid]['lost']}"
                )
                assert ctl.registry.get(sid).attacks == {}  # nothing it got was refused

                # UDP let through again: the next punch (within 5 s) brings the media back
                vil.allow_udp()
                t_udp = await wait_for(lambda: dialin.way(sid) == "udp", 15, "no punch came")
                await wait_for(lambda: ctl.registry.get(sid).media == "udp", 5, "list not updated")
                assert await _media_of(http, base, sid) == "udp"
                print(f"back on UDP {t_udp:.1f} s after UDP was let through")
                assert dialin.media[sid][0] == vil.router_uplink
                on_channel = dialin.carried[sid, "channel"]
                await _play_and_check(ctl, record, [sid], [sid])
                assert dialin.carried[sid, "udp"] > 0
                assert dialin.carried[sid, "channel"] == on_channel

                # punches stop (blocked again): back to the channel once two are missed
                vil.block_udp()
                t_chan = await wait_for(lambda: dialin.way(sid) == "channel", 20, "still UDP")
                await wait_for(lambda: ctl.registry.get(sid).media == "channel", 5, "list stale")
                print(f"back on the channel {t_chan:.1f} s after UDP was blocked again")
                await _play_and_check(ctl, record, [sid], [sid])
                assert dialin.carried[sid, "channel"] > on_channel
                assert dialin.switches[sid] >= 2
                assert ctl.is_online(sid)
        finally:
            await served.close()
            log.close()
