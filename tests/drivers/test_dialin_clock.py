"""Dial-in without UDP (issue 12.1): the clock exchange, and the heartbeat it carries, over the
channel. The speaker's signed requests ("BCK3") and the controller's answers ("BCK2") travel
unchanged as binary WebSocket frames while UDP brings no answers, and go back to UDP when it does.

Three levels: the speaker's `ClockSync` against a real UDP clock service that answers or not; the
controller's side of a real channel (a WebSocket client that proves a pairing key); and a horn
behind the namespace NAT whose router drops UDP, playing beside a LAN column.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import warnings
from collections import Counter

import aiohttp
import pytest

import broadcaster.endpoint.clocks as clocks
import broadcaster.site as zones_mod
from broadcaster.endpoint.clocks import ClockSync, LocalClock
from broadcaster.net.udp import open_udp
from broadcaster.protocol import clock as clk
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


# --- the speaker's side: ClockSync ------------------------------------------------------------


class _ClockRig:
    """A ClockSync against a UDP clock service whose answers can be switched off, and a
    "channel" that answers every request; what went each way is kept."""

    def __init__(self) -> None:
        self.key = os.urandom(32)
        self.controller = LocalClock(offset=5.0)  # the controller's clock, 5 s ahead
        self.udp_answers = False
        self.by_udp: list[bytes] = []
        self.by_channel: list[bytes] = []
        self.counters: Counter = Counter()
        self.sync = ClockSync("h1-1", self.key, "127.0.0.1", LocalClock(), self.counters)
        self.service = None

    def answer(self, req: bytes) -> bytes:
        t2 = self.controller.now()
        t1, _ = clk.decode_request(req, self.key)  # the very bytes the UDP service would check
        return clk.encode_response(self.key, t1, t2, self.controller.now())

    def on_udp(self, data: bytes, addr: tuple) -> None:
        self.by_udp.append(data)
        if self.udp_answers:
            self.service.sendto(self.answer(data), addr)

    def channel(self, req: bytes) -> bool:
        self.by_channel.append(req)
        asyncio.get_running_loop().call_soon(self.sync.on_channel_answer, self.answer(req))
        return True

    async def start(self) -> None:
        self.service = await open_udp("127.0.0.1", 0, self.on_udp)
        self.sync.attach_channel(self.channel)
        self.sync.set_target(f"127.0.0.1:{self.service.port}")

    def in_step(self) -> bool:
        return abs(self.sync.controller_now() - self.controller.now()) < 0.005

    def close(self) -> None:
        self.sync.close()
        if self.service is not None:
            self.service.close()


async def test_clock_sync_takes_the_channel_while_udp_is_silent_and_returns_to_udp(monkeypatch):
    monkeypatch.setattr(clocks, "CHANNEL_AFTER", 0.3)  # protocol timers shortened (3 s, 5 s, 1 s)
    monkeypatch.setattr(clocks, "UDP_RETRY", 0.4)
    monkeypatch.setattr(clocks, "ANSWER_WAIT", 0.1)
    rig = _ClockRig()
    sync = rig.sync
    try:
        await rig.start()
        await wait_for(
            lambda: sync.via_channel and sync.estimator.synced, 5, "not synced by channel"
        )
        assert rig.by_udp, "UDP is tried first"
        assert rig.in_step()
        # while on the channel, UDP is still tried now and then (its answer would switch back)
        tried = len(rig.by_udp)
        await wait_for(lambda: len(rig.by_udp) > tried, 2, "UDP not retried")

        # a forged answer over the channel is dropped like a forged datagram
        sync.on_channel_answer(clk.encode_response(os.urandom(32), 1.0, 2.0, 3.0))
        assert rig.counters["dropped_clock"] == 1

        # UDP answers again: back to UDP at the next retry; the channel falls silent
        rig.udp_answers = True
        await wait_for(lambda: not sync.via_channel, 3, "did not return to UDP")
        quiet = len(rig.by_channel)
        await asyncio.sleep(0.6)
        assert len(rig.by_channel) == quiet
        assert rig.in_step()

        # without a channel (a LAN speaker, or the channel dropped) it only ever uses UDP
        rig.udp_answers = False
        sync.attach_channel(None)
        await asyncio.sleep(0.6)
        assert not sync.via_channel and len(rig.by_channel) == quiet
    finally:
        rig.close()


async def test_spaced_exchanges_stay_on_udp_once_it_answers_and_leave_it_when_it_stops(
    monkeypatch,
):
    """Exchanges further apart than CHANNEL_AFTER (a steady path: CLOCK_SPACED 4 s against 3 s)
    must not go back to the channel each time merely because the last UDP answer is old."""
    monkeypatch.setattr(clocks, "CHANNEL_AFTER", 0.3)  # the same proportions, a tenth of the time
    monkeypatch.setattr(clocks, "UDP_RETRY", 0.5)
    monkeypatch.setattr(clocks, "ANSWER_WAIT", 0.1)
    monkeypatch.setattr(clocks, "exchange_interval", lambda est: 0.4)
    rig = _ClockRig()
    sync = rig.sync
    try:
        await rig.start()
        await wait_for(lambda: sync.via_channel and sync.estimator.synced, 5, "not on the channel")
        rig.udp_answers = True
        await wait_for(lambda: not sync.via_channel, 3, "did not return to UDP")
        quiet, sent = len(rig.by_channel), len(rig.by_udp)
        await wait_for(lambda: len(rig.by_udp) >= sent + 5, 10, "UDP exchanges stopped")
        assert len(rig.by_channel) == quiet and not sync.via_channel  # five spaced, all by UDP
        assert rig.in_step()

        # UDP stops answering: the requests take the channel again, and it stays in step
        rig.udp_answers = False
        await wait_for(lambda: len(rig.by_channel) > quiet, 5, "not back on the channel")
        assert sync.via_channel
        n = len(rig.by_channel)
        await wait_for(lambda: len(rig.by_channel) >= n + 2, 5, "channel exchanges stopped")
        assert rig.in_step()
    finally:
        rig.close()


# --- the controller's side: a real channel -------------------------------------------------------


async def test_the_controller_answers_clock_requests_over_the_channel_and_takes_heartbeats(
    tmp_path,
):
    zones = small_site(tmp_path / "zones.yaml", villages=1, horns=2, columns=0)
    data = tmp_path / "data"
    data.mkdir()
    pair_key(zones, data, "h1-1", tmp_path / "k")
    site = zones_mod.load(zones)
    served = await serve(site, data)
    ctl, server = served.ctl, served.server
    key, other = ctl.keys["h1-1"], ctl.keys["h1-2"]
    boot = 7

    def request(sid: str, k: bytes, seq: int) -> tuple[bytes, float]:
        t1 = ctl.now() - 0.5  # any clock: the answer carries it back
        beat = clk.Heartbeat(boot, seq, True, ctl.now(), 0.001, 0.002, 5004, 0, 0)
        return clk.encode_request(sid, k, t1, beat), t1

    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"http://127.0.0.1:{server.port}/api/dial-in") as ws,
        ):
            challenge = await ws.receive_json(timeout=5)
            nonce = "cd" * 16
            await ws.send_json(
                {
                    "t": "hello",
                    "v": msg.VERSION,
                    "speaker": "h1-1",
                    "nonce": nonce,
                    "mac": msg.hello_mac(key, challenge["nonce"], "h1-1"),
                }
            )
            welcome = await ws.receive_json(timeout=5)
            assert msg.check_mac(msg.welcome_mac(key, nonce, "h1-1"), welcome["mac"])

            async def exchange(req: bytes) -> bytes | None:
                await ws.send_bytes(req)
                try:
                    while True:  # skip the controller's status polls (text frames)
                        m = await ws.receive(timeout=1.0)
                        if m.type == aiohttp.WSMsgType.BINARY:
                            return m.data
                except TimeoutError:
                    return None

            for seq in (1, 2, 3):
                req, t1 = request("h1-1", key, seq)
                got = await exchange(req)
                assert got is not None and got.startswith(clk.RESP_MAGIC)
                a1, t2, t3 = clk.decode_response(got, key)
                assert a1 == t1 and t2 <= t3 <= ctl.now()
            assert ctl.bc.dialin.clock_carried["h1-1"] == 3
            assert ctl.registry.get("h1-1").heartbeats == 3  # each one a heartbeat, as by UDP

            # another speaker's request (even correctly signed) on this channel: not answered
            req, _ = request("h1-2", other, 4)
            assert await exchange(req) is None
            # a forged one, and a media-like frame: not answered, no heartbeat
            req, _ = request("h1-1", os.urandom(32), 5)
            assert await exchange(req) is None
            assert await exchange(bytes([0x80, 0]) + os.urandom(30)) is None
            assert ctl.registry.get("h1-1").heartbeats == 3
            assert ctl.bc.dialin.refused["channel frame"] == 2
    finally:
        await served.close()


# --- through the namespace NAT, UDP dropped by the router ----------------------------------------

# A horn with a simulated clock error, so that playing in step proves its clock synced, and with
# `simulated=True`, so that its report carries the true instant of its first sample. Run inside
# the village namespace (the simulator's own addresses are loopback ones, which cannot leave it).
_HORN = """
import asyncio, json, sys
from pathlib import Path
from broadcaster.endpoint.dialin import run_dialin
from broadcaster.endpoint.speaker import SpeakerSpec
keyfile, host, controller, record, tag, offset = sys.argv[1:]
info = json.loads(Path(keyfile).read_text())
spec = SpeakerSpec(info["speaker"], "horn", bytes.fromhex(info["key"]), tag, host=host,
                   multicast_iface=host, record_dir=Path(record), clock_offset=float(offset),
                   simulated=True)
chost, _, cport = controller.rpartition(":")
asyncio.run(run_dialin([spec], (chost, int(cport))))
"""
HORN_CLOCK_ERROR = 0.25  # s: the horn's clock ahead of true time (unsynced, it plays this late)


@pytest.mark.skipif(netns.unavailable() is not None, reason=netns.unavailable() or "")
async def test_a_horn_without_udp_syncs_its_clock_over_the_channel_and_plays_in_step(tmp_path):
    col_port = free_port()
    zones = small_site(
        tmp_path / "zones.yaml",
        villages=1,
        horns=1,
        columns=1,
        static={"col-1": f"127.0.0.1:{col_port}"},
    )
    data, record = tmp_path / "data", tmp_path / "rec"
    data.mkdir()
    record.mkdir()
    sid = "h1-1"
    key = pair_key(zones, data, sid, tmp_path / f"{sid}.key")
    site = zones_mod.load(zones)
    tag = site_tag()
    with netns.village(horns=1) as vil:
        vil.block_udp()  # from the start: not one datagram gets through, either way
        served = await serve(
            site, data, vil.host_addr, interface=vil.host_addr, site_tag=tag, playout_delay=0.3
        )
        ctl, server = served.ctl, served.server
        base = f"http://{vil.host_addr}:{server.port}"
        dialin = ctl.bc.dialin
        col = SimProcess(zones, data, record, tag, only=["col-1"], mdns=False, clock_skew=0.2)
        log = open(tmp_path / "horn.log", "w")
        try:
            col.start()
            vil.popen(
                [sys.executable, "-c", _HORN, str(key), vil.horn_addrs[0]]
                + [f"{vil.host_addr}:{server.port}", str(record), tag, str(HORN_CLOCK_ERROR)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            # online, and clock-synced: the exchange can only have gone over the channel
            await wait_online(ctl, 2, timeout=45)
            assert sid not in dialin.media  # no punch (no UDP at all) ever arrived
            assert dialin.clock_carried[sid] > 0
            async with aiohttp.ClientSession() as http:

                async def row() -> dict:
                    async with http.get(f"{base}/api/speakers") as resp:
                        return {s["id"]: s for s in (await resp.json())["speakers"]}[sid]

                first = await row()
                assert first["clock_synced"] is True and first["media"] == "channel"
                # the list says which way its clock goes: what the controller receives
                await _until_row(row, "clock", "channel", 5)
                # its heartbeats arrive (over the channel: nothing else reaches the controller)
                t0 = time.monotonic()
                while (await row())["heartbeats"] <= first["heartbeats"]:
                    assert time.monotonic() - t0 < 15, "no heartbeat over the channel in 15 s"
                    await asyncio.sleep(0.25)

                # a broadcast plays on both, the horn's recording matches, and in step
                skews = []
                for _ in range(3):
                    src = sweep(8000, 1.0)
                    b = await ctl.play(src, [site.id])
                    done = await wait_done(ctl, b.id)
                    states = {r["speaker"]: r["state"] for r in done["speakers"]}
                    assert states[sid] in ("played", "partial"), states
                    recs = playout_records(record, b.id)
                    pcm, _ = recorded_pcm(record, sid, b.id)
                    expect = audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2)
                    assert_recording_matches(pcm, expect, 8000, recs[sid]["lost"])
                    skews.append(
                        recs[sid]["first_sample_true"] - recs["col-1"]["first_sample_true"]
                    )
                print(
                    "channel-synced horn vs LAN column, true first-sample instants (ms): "
                    + ", ".join(f"{s * 1000:+.2f}" for s in skews)
                    + f" (its clock is {HORN_CLOCK_ERROR * 1000:.0f} ms off; "
                    f"{dialin.clock_carried[sid]} clock exchanges over the channel)"
                )
                # generous (echo is heard at ~30 ms; unsynced it would be 250 ms off): the exact
                # figure depends on the machine's load, so it is printed, not asserted tightly
                assert all(abs(s) < 0.02 for s in skews), skews

                # UDP let through: the exchange goes back to UDP (the channel falls silent)
                # (the speaker retries UDP every UDP_RETRY, on its next exchange: up to ~9 s)
                vil.allow_udp()
                t_back = await _until_row(row, "clock", "udp", 20)
                print(f"clock exchange back on UDP {t_back:.1f} s after UDP was let through")
                assert ctl.registry.get(sid).clock_synced
                # and the channel falls silent (a request already on its way may still arrive)
                n = dialin.clock_carried[sid]
                await _until_quiet(lambda: dialin.clock_carried[sid], 20, clocks.CLOCK_SPACED + 1)
                assert dialin.clock_carried[sid] - n <= 1
                # blocked again: back over the channel
                vil.block_udp()
                n = dialin.clock_carried[sid]
                t_chan = await wait_for(
                    lambda: dialin.clock_carried[sid] > n, 20, "not back on the channel"
                )
                print(f"clock exchange back on the channel {t_chan:.1f} s after UDP was blocked")
                # and its heartbeats with it: a steady path exchanges every 4 s (CLOCK_SPACED)
                beats = (await row())["heartbeats"]
                t0 = time.monotonic()
                while (await row())["heartbeats"] <= beats:
                    assert time.monotonic() - t0 < 15, "no heartbeat over the channel in 15 s"
                    await asyncio.sleep(0.25)
        finally:
            col.stop()
            await served.close()
            log.close()


async def _until_quiet(count, timeout: float, quiet: float = 3.0) -> float:
    """Seconds until `count()` stops growing for `quiet` seconds (returns when it stopped)."""
    t0 = last_change = time.monotonic()
    last = count()
    while time.monotonic() - last_change < quiet:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("still growing")
        await asyncio.sleep(0.1)
        if count() != last:
            last, last_change = count(), time.monotonic()
    return last_change - t0


async def _until_row(row, field: str, value: str, timeout: float) -> float:
    """Seconds until the speaker's row in GET /api/speakers shows `field` == `value`."""
    t0 = time.monotonic()
    while (got := (await row())[field]) != value:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{field} is {got!r}, not {value!r}")
        await asyncio.sleep(0.1)
    return time.monotonic() - t0
