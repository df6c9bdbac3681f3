"""Dial-in media by UDP only when UDP works both ways (issue 12): the controller acknowledges every
punch by UDP, the way the media would go, and the speaker's punches say (signed) whether those
acknowledgements reach it. A village router that lets the punches out but drops what comes back
keeps the media on the channel, and the horn plays.

Three levels: the pure pieces (punch flag, acknowledgement, the speaker's `Punches`, `MediaWay`);
the controller's side with a real channel and a real UDP socket standing in for the horn's RTP
socket; and a horn behind the namespace NAT whose router drops controller→horn UDP only.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import aiohttp
import pytest

import broadcaster.site as zones_mod
from broadcaster.core.controller import Controller
from broadcaster.protocol import dialin as msg
from tests.support import netns
from tests.support.audio import assert_recording_matches, sweep
from tests.support.harness import (
    ROOT,
    pair_key,
    playout_records,
    recorded_pcm,
    serve,
    wait_done,
    wait_for,
    wait_online,
)
from tests.support.sites import small_site

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


# --- the pure parts ------------------------------------------------------------------------


def test_the_punch_carries_a_signed_downlink_flag():
    key = os.urandom(32)
    for down in (False, True):
        p = msg.decode_punch(msg.encode_punch("h1-1", key, 99.5, 3, down), key)
        assert (p.speaker_id, p.ts, p.seq, p.downlink) == ("h1-1", 99.5, 3, down)
    # the flag is under the MAC: a relay cannot turn "not reached" into "reached"
    data = bytearray(msg.encode_punch("h1-1", key, 99.5, 3, False))
    data[-msg.PUNCH_MAC - 1] |= msg.DOWNLINK
    with pytest.raises(msg.DialInError):
        msg.decode_punch(bytes(data), key)
    # the old punch format (no flag) is not taken for the new one
    with pytest.raises(msg.DialInError):
        msg.punch_speaker(b"BCP1" + bytes(data[4:]))


def test_an_acknowledgement_names_one_punch_and_verifies():
    key = os.urandom(32)
    punch = msg.Punch("h1-1", 1000.25, 42, False)
    ack = msg.encode_ack(key, punch)
    assert ack.startswith(msg.ACK_MAGIC) and msg.decode_ack(ack, key) == (42, 1000.25)
    with pytest.raises(msg.DialInError):
        msg.decode_ack(ack, os.urandom(32))  # another speaker's key
    flipped = bytearray(ack)
    flipped[5] ^= 1
    with pytest.raises(msg.DialInError):
        msg.decode_ack(bytes(flipped), key)
    with pytest.raises(msg.DialInError):
        msg.decode_ack(ack[:-1], key)


def test_punches_say_whether_acknowledgements_arrive_and_go_at_once_when_that_changes():
    st = msg.Punches(every=5.0, lost_after=12.5)
    assert st.due(0.0) == 0.0  # the first at once
    seq, ts, down = st.next(100.0, 0.0)
    assert not down and st.due(0.1) == 5.0
    # an acknowledgement of another punch, or of this number with another stamp: not taken
    assert not st.acked(seq + 1, ts, 0.1)
    assert not st.acked(seq, ts + 1.0, 0.1)
    assert st.due(0.1) == 5.0
    # the real one: the next punch goes at once and says the way down works
    assert st.acked(seq, ts, 0.2)
    assert st.due(0.2) == 0.2
    seq2, ts2, down = st.next(100.0, 0.2)  # the speaker's estimate stepped back: still newer
    assert down and ts2 > ts and seq2 == seq + 1
    assert not st.acked(seq, ts, 0.3)  # acknowledged once only (a replay names nothing)
    # no acknowledgement for lost_after: a punch at once says the way down is lost
    assert st.due(0.3) == 5.2
    for now in (5.2, 10.2):
        st.next(100.0 + now, now)
    assert st.due(10.3) == 12.7  # 12.5 s after the last acknowledgement, before 15.2
    _, _, down = st.next(112.7, 12.7)
    assert not down
    # a new channel proves it afresh
    st.acked(*st.next(113.0, 13.0)[:2], 13.1)
    assert st.downlink(13.1)
    st.restart()
    assert not st.downlink(13.2) and st.due(13.2) == 13.2


def test_a_probe_punches_at_once_and_a_silent_way_down_is_given_up_after_probe_wait():
    st = msg.Punches(every=5.0, lost_after=12.5)
    st.acked(*st.next(100.0, 0.0)[:2], 0.1)
    assert st.next(100.2, 0.2)[2]  # saying the way down works
    assert st.due(1.0) == 5.2
    # media stopped at 2.0: a probe goes at once
    st.probe(3.0)
    assert st.due(3.0) == 3.0
    seq, ts, down = st.next(103.0, 3.0)
    assert down and st.due(3.1) == 3.0 + msg.PROBE_WAIT  # unanswered: say so when the wait ends
    assert st.downlink(3.0 + msg.PROBE_WAIT - 0.01)
    assert not st.downlink(3.0 + msg.PROBE_WAIT)  # long before PUNCH_LOST (12.6)
    assert not st.next(104.0, 4.0)[2]
    # an answer to the probe (or any later punch) restores it
    assert st.acked(seq, ts, 4.1) and st.downlink(4.1) and st.probe_at is None
    # a probe that is answered in time changes nothing
    st.next(104.2, 4.2)
    st.probe(6.0)
    seq, ts, _ = st.next(106.0, 6.0)
    assert st.acked(seq, ts, 6.2) and st.downlink(6.0 + msg.PROBE_WAIT + 1)


def test_media_take_udp_only_while_punches_arrive_and_say_the_way_down_works():
    way = msg.MediaWay()
    way.punched(100.0, downlink=False)  # punches arrive, ours do not reach the speaker
    assert way.uplink(100.0) and way.way(100.0) == msg.CHANNEL
    assert way.changes_at(100.0) is None
    way.punched(101.0, downlink=True)
    assert way.way(101.0) == msg.UDP and way.changes_at(101.0) == 101.0 + msg.PUNCH_LOST
    way.punched(106.0, downlink=False)  # the way down broke: off UDP at once
    assert way.way(106.0) == msg.CHANNEL
    way.punched(111.0, downlink=True)
    assert way.way(111.0 + msg.PUNCH_LOST) == msg.CHANNEL  # and punches stopping still counts


# --- the controller's side: a real channel, a UDP socket as the horn's RTP socket ------------


async def test_the_controller_acknowledges_punches_and_follows_their_flag(tmp_path):
    zones = small_site(tmp_path / "zones.yaml", villages=1, horns=1, columns=0)
    data = tmp_path / "data"
    data.mkdir()
    pair_key(zones, data, "h1-1", tmp_path / "k")
    site = zones_mod.load(zones)
    served = await serve(site, data)
    ctl, server = served.ctl, served.server
    key, dialin = ctl.keys["h1-1"], ctl.bc.dialin
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the horn's RTP socket
    rtp.bind(("127.0.0.1", 0))
    rtp.setblocking(False)
    loop = asyncio.get_running_loop()
    clock = ("127.0.0.1", ctl.bc.clock_port)

    async def punch(seq: int, down: bool, ts: float | None = None) -> bytes | None:
        """Send a punch from the RTP socket; the acknowledgement that comes back, if any."""
        rtp.sendto(msg.encode_punch("h1-1", key, ts or ctl.now(), seq, down), clock)
        try:
            return await asyncio.wait_for(loop.sock_recv(rtp, 100), 1.0)
        except TimeoutError:
            return None

    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"http://127.0.0.1:{server.port}/api/dial-in") as ws,
        ):
            challenge = await ws.receive_json(timeout=5)
            await ws.send_json(
                {
                    "t": "hello",
                    "v": msg.VERSION,
                    "speaker": "h1-1",
                    "nonce": "ef" * 16,
                    "mac": msg.hello_mac(key, challenge["nonce"], "h1-1"),
                }
            )
            await ws.receive_json(timeout=5)  # welcome
            await wait_for(lambda: "h1-1" in dialin.channels, 5, "no channel")
            assert dialin.way("h1-1") == msg.CHANNEL

            # a punch that says "your UDP does not reach me": acknowledged, media stay put
            ts = ctl.now()
            ack = await punch(1, False, ts)
            assert ack is not None and msg.decode_ack(ack, key) == (1, ts)
            assert dialin.media["h1-1"][1] == rtp.getsockname()[1]
            assert dialin.way("h1-1") == msg.CHANNEL
            # "it does": UDP
            assert await punch(2, True) is not None
            assert dialin.way("h1-1") == msg.UDP
            # "it no longer does": back on the channel at once, not after 12.5 s
            assert await punch(3, False) is not None
            assert dialin.way("h1-1") == msg.CHANNEL
            # a replayed punch is neither acknowledged nor followed
            assert await punch(2, True, ts) is None
            assert dialin.way("h1-1") == msg.CHANNEL and dialin.refused["replay"] == 1
            assert dialin.acks["h1-1"] == 3
    finally:
        rtp.close()
        await served.close()


# --- through the namespace NAT: the router drops controller→horn UDP -----------------------


def _block_downlink(vil: netns.Village, on: bool) -> None:
    """Drop (or pass again) every UDP datagram entering the village from the uplink; the horns'
    own UDP still goes out (a router, or a 4G plan, that lets UDP out but not back in)."""
    rule = ["FORWARD", "-i", vil.uplink, "-p", "udp", "-j", "DROP"]
    if on:
        netns.sh("iptables", "-I", rule[0], "1", *rule[1:], ns=vil.router_ns)
    else:
        netns.sh("iptables", "-D", *rule, ns=vil.router_ns)


async def _play_and_check(ctl: Controller, record: Path, sid: str) -> dict:
    src = sweep(8000, 1.0)
    b = await ctl.play(src, [sid])
    done = await wait_done(ctl, b.id)
    state = {r["speaker"]: r["state"] for r in done["speakers"]}[sid]
    recs = playout_records(record, b.id)
    assert state in ("played", "partial") and sid in recs, f"the horn did not play: {state}"
    pcm, _ = recorded_pcm(record, sid, b.id)
    assert_recording_matches(
        pcm, audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2), 8000, recs[sid]["lost"]
    )
    return recs[sid]


@pytest.mark.skipif(netns.unavailable() is not None, reason=netns.unavailable() or "")
async def test_udp_that_gets_out_but_not_back_keeps_media_on_the_channel(tmp_path):
    zones = small_site(tmp_path / "zones.yaml", villages=1, horns=1, columns=0)
    data, record = tmp_path / "data", tmp_path / "rec"
    data.mkdir()
    record.mkdir()
    sid = "h1-1"
    key = pair_key(zones, data, sid, tmp_path / f"{sid}.key")
    site = zones_mod.load(zones)
    with netns.village(horns=1) as vil:
        _block_downlink(vil, True)
        served = await serve(site, data, vil.host_addr, interface=vil.host_addr, playout_delay=0.3)
        ctl, server = served.ctl, served.server
        base = f"http://{vil.host_addr}:{server.port}"
        dialin = ctl.bc.dialin
        log = open(tmp_path / "horn.log", "w")
        try:
            vil.popen(
                [sys.executable, "-m", "broadcaster.cli.main", "--data", str(data), "speaker"]
                + ["--key-file", str(key), "--host", vil.horn_addrs[0], "--no-mdns"]
                + ["--record", str(record), "--controller", f"{vil.host_addr}:{server.port}"],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            # online and synced (its clock over the channel: the UDP answers never come back)
            await wait_online(ctl, 1, timeout=45)
            # its punches do get out: the controller knows where its RTP socket is
            await wait_for(lambda: sid in dialin.media, 10, "no punch arrived")
            assert dialin.media[sid][0] == vil.router_uplink

            # the horn plays, and what it played is the source
            rec = await _play_and_check(ctl, record, sid)
            print(f"downlink UDP dropped: played over the channel, lost {rec['lost']} frames")
            assert dialin.carried[sid, "channel"] > 0 and dialin.carried[sid, "udp"] == 0

            async with aiohttp.ClientSession() as http:

                async def row() -> dict:
                    async with http.get(f"{base}/api/speakers") as resp:
                        return {s["id"]: s for s in (await resp.json())["speakers"]}[sid]

                async def shows(media: str, clock: str, timeout: float) -> float:
                    t0 = time.monotonic()
                    while True:
                        r = await row()
                        if (r["media"], r["clock"]) == (media, clock):
                            return time.monotonic() - t0
                        if time.monotonic() - t0 > timeout:
                            raise TimeoutError(f"listed {r['media']}/{r['clock']}")
                        await asyncio.sleep(0.1)

                await shows("channel", "channel", 10)
                assert dialin.acks[sid] > 0  # acknowledged all along; none got through
                # the ways listed take nothing from the speaker's own clock report, which the
                # lead of a broadcast is chosen from
                await ctl.bc.poll(sid)
                assert ctl.paths.get(sid) is not None and ctl.registry.get(sid).clock_synced

                # the way down opens: media (and the clock) return to UDP
                _block_downlink(vil, False)
                t_udp = await shows("udp", "udp", 20)
                print(f"media and clock back on UDP {t_udp:.1f} s after the downlink opened")
                on_channel = dialin.carried[sid, "channel"]
                await _play_and_check(ctl, record, sid)
                assert dialin.carried[sid, "udp"] > 0
                assert dialin.carried[sid, "channel"] == on_channel

                # it closes again in the middle of a broadcast: the horn notices its media
                # stopped, probes, and the rest of the broadcast comes over the channel (without
                # the probe, not before PUNCH_LOST: 7.5-12.5 s, most of what was left)
                src = sweep(8000, 10.0)
                b = await ctl.play(src, [sid])
                udp0 = dialin.carried[sid, "udp"]
                await wait_for(lambda: dialin.carried[sid, "udp"] > udp0 + 50, 10, "no UDP")
                _block_downlink(vil, True)
                t_cut = time.monotonic()
                await wait_for(
                    lambda: dialin.carried[sid, "channel"] > on_channel, 9, "no channel media"
                )
                print(f"media on the channel {time.monotonic() - t_cut:.1f} s after the cut")
                done = await wait_done(ctl, b.id)
                assert {r["speaker"]: r["state"] for r in done["speakers"]}[sid] == "partial"
                rec = playout_records(record, b.id)[sid]
                pcm, _ = recorded_pcm(record, sid, b.id)
                assert_recording_matches(
                    pcm, audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2), 8000, rec["lost"]
                )
                print(f"downlink cut mid-broadcast: {rec['lost']} of 500 frames lost")
                assert 0 < rec["lost"] < 250, rec  # not the rest of the broadcast
                t_chan = await shows("channel", "channel", 30)
                print(f"listed on the channel {t_chan:.1f} s after the cut ended")
                await _play_and_check(ctl, record, sid)
                assert dialin.carried[sid, "channel"] > on_channel
                assert ctl.is_online(sid) and ctl.registry.get(sid).attacks == {}
        finally:
            await served.close()
            log.close()
