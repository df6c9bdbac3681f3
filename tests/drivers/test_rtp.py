"""Plain RTP paging speakers beside our own: ffmpeg (a standard receiver) stands in for the horn."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
import subprocess
import time
import warnings
from pathlib import Path

import broadcaster.site as zones
from broadcaster.drivers.base import Capability, Driver
from broadcaster.drivers.rtp.driver import RtpDriver
from broadcaster.drivers.rtp.paging import Holders, fan_out, route_name
from broadcaster.protocol.codecs import PCMU
from broadcaster.protocol.rtp import Bye, RtpPacket, parse_rtcp
from broadcaster.protocol.sdp import stream_sdp
from broadcaster.sources.resample import Resampler
from tests.support.audio import assert_recording_matches, sweep
from tests.support.harness import (
    SimProcess,
    controller,
    playout_records,
    recorded_pcm,
    wait_done,
    wait_online,
)
from tests.support.net import free_even_port
from tests.support.tools import need

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME = 320  # bytes of 8 kHz s16 PCM in 20 ms


def random_group() -> tuple[str, int]:
    """A group and even port of our own for this run: multicast is shared by the whole machine."""
    rng = random.Random()
    return (
        f"239.{rng.randrange(100, 200)}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}",
        2 * rng.randrange(12000, 16000),
    )


class Ffmpeg:
    """ffmpeg receiving plain RTP described by an SDP, writing 8 kHz s16 PCM: a paging horn."""

    def __init__(self, tmp: Path, name: str, host: str, port: int) -> None:
        need("ffmpeg")
        self.host, self.port = host, port
        self.sdp = tmp / f"{name}.sdp"
        self.sdp.write_text(stream_sdp(PCMU, host, port))
        self.out = tmp / f"{name}.raw"
        # -localaddr: join the group on loopback; without it ffmpeg joins on the default route's
        # interface (the IGMP report leaves the machine) and hears nothing sent on 127.0.0.1
        self.proc = subprocess.Popen(
            [
                "ffmpeg",
                "-v",
                "error",
                "-nostdin",
                "-protocol_whitelist",
                "file,udp,rtp",
                "-localaddr",
                "127.0.0.1",
                "-i",
                str(self.sdp),
                "-f",
                "s16le",
                "-acodec",
                "pcm_s16le",
                "-ar",
                "8000",
                "-ac",
                "1",
                "-y",
                str(self.out),
            ],
            stderr=subprocess.PIPE,
        )

    async def listening(self, timeout: float = 15.0) -> None:
        """Wait until ffmpeg holds its RTP port (a bind without SO_REUSEADDR then fails)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()  # type: ignore
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind((self.host, self.port))
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        await asyncio.sleep(0.3)  # the group join follows the bind
                        return
                    raise
            await asyncio.sleep(0.05)
        raise TimeoutError("ffmpeg did not open its port")

    def finish(self) -> tuple[bytes, str]:
        """Stop it (SIGTERM finishes the file) and return the PCM it decoded."""
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=20)
        return (self.out.read_bytes() if self.out.exists() else b""), err.decode()

    def kill(self) -> None:
        """Make sure it is gone (after a failed test)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class GroupTap:
    """A plain UDP socket joined to a group on loopback: counts what really arrives there."""

    def __init__(self, group: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((group, port))
        self.sock.setsockopt(
            socket.IPPROTO_IP,
            socket.IP_ADD_MEMBERSHIP,
            socket.inet_aton(group) + socket.inet_aton("127.0.0.1"),
        )
        self.sock.setblocking(False)

    def drain(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(2048))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


def assert_heard(got: bytes, err: str, src: bytes) -> None:
    """What ffmpeg decoded is the source through µ-law, frame for frame, in order.

    ffmpeg may drop the first packets while it starts; it inserts nothing for a missing packet,
    so each decoded 20 ms frame must be one of the source's frames, later than the one before.
    """
    expect = audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2)
    where = {expect[i : i + FRAME]: i // FRAME for i in range(0, len(expect), FRAME)}
    frames = [got[i : i + FRAME] for i in range(0, len(got) - FRAME + 1, FRAME)]
    assert len(frames) >= len(expect) // FRAME // 2, f"decoded only {len(frames)} frames: {err}"
    found = [where.get(f) for f in frames]
    assert None not in found, f"frame {found.index(None)} is not the source's: {err}"
    assert found == sorted(set(found)), "frames out of order or repeated"  # type: ignore


def write_zones(path: Path, unicast: tuple[str, int], group: tuple[str, int]) -> Path:
    """One village: two of our horns and three paging horns (one unicast, two on one group)."""
    u, g = f"{unicast[0]}:{unicast[1]}", f"{group[0]}:{group[1]}"
    path.write_text(
        f"""\
site:
  id: sd
  name: 测试街道
  areas:
    - id: a1
      name: 一管区
      villages:
        - id: v1
          name: 村1
          speakers:
            - {{id: h1, kind: horn}}
            - {{id: h2, kind: horn}}
            - {{id: r-u, kind: horn, driver: rtp, address: "{u}"}}
            - {{id: r-m1, kind: horn, driver: rtp, address: "{g}"}}
            - {{id: r-m2, kind: horn, driver: rtp, address: "{g}"}}
""",
        encoding="utf-8",
    )
    return path


# -- the pure parts ---------------------------------------------------------------------------


def test_paging_fans_out_one_stream_per_address():
    g, u = ("239.1.2.3", 50000), ("10.0.0.9", 5004)
    assert fan_out({"b": g, "a": g, "c": u}) == {u: ["c"], g: ["a", "b"]}
    assert route_name(g) == "rtp multicast 239.1.2.3:50000"
    assert route_name(("horn.lan", 5004)) == "rtp unicast horn.lan:5004"
    held: Holders[str] = Holders()
    a, b = "run-a", "run-b"
    assert held.take(g, a) is None and held.take(g, a) is None
    assert held.take(g, b) == a  # the newer broadcast takes the group over
    held.release(g, a)  # the older one ending later must not free it
    assert held.held_by(g) == b
    held.release(g, b)
    assert held.held_by(g) is None


def test_driver_declares_multicast_only(tmp_path):
    site = zones.load(write_zones(tmp_path / "z.yaml", ("127.0.0.1", 5004), random_group()))
    drv = RtpDriver(site, None)
    assert isinstance(drv, Driver)
    assert drv.capabilities == {Capability.MULTICAST}  # no clock, no keys, no report, no volume


# -- through the controller, with ffmpeg as the paging horns ----------------------------------


async def test_mixed_village_plays_on_both_kinds(tmp_path, data, record, tag):
    unicast, group = ("127.0.0.1", free_even_port()), random_group()
    path = write_zones(tmp_path / "z.yaml", unicast, group)
    site = zones.load(path)
    sim = SimProcess(path, data, record, tag, only=["h1", "h2"]).start()
    horn_u = Ffmpeg(tmp_path, "unicast", *unicast)
    horn_m = Ffmpeg(tmp_path, "group", *group)
    tap, tap_rtcp = GroupTap(*group), GroupTap(group[0], group[1] + 1)
    try:
        async with controller(site, data, tag) as (ctl, client):
            await wait_online(ctl, 5)
            rows = {
                s["id"]: s for s in (await (await client.get("/api/speakers")).json())["speakers"]
            }
            for sid, addr in (("r-u", unicast), ("r-m1", group), ("r-m2", group)):
                assert rows[sid]["online"] and rows[sid]["driver"] == "rtp"
                assert rows[sid]["source"] == "static"
                assert rows[sid]["address"] == f"{addr[0]}:{addr[1]}"
            assert rows["h1"]["driver"] == "bcspeaker"
            await horn_u.listening()
            await horn_m.listening()
            tap.drain()

            src = sweep(8000, 2.0)
            b = await wait_done(ctl, (await ctl.play(src, ["v1"])).id)
            by = {r["speaker"]: r for r in b["speakers"]}
            assert b["state"] == "done"
            # our horns say what they played; the paging horns can only be said to be sent to
            recs = playout_records(record, b["id"])
            expect = audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2)
            for sid in ("h1", "h2"):
                assert (
                    by[sid]["state"] in ("played", "partial") and by[sid]["driver"] == "bcspeaker"
                )
                pcm, rate = recorded_pcm(record, sid, b["id"])
                assert_recording_matches(pcm, expect, rate, recs[sid]["lost"])
            g = f"{group[0]}:{group[1]}"
            assert {
                s: (by[s]["state"], by[s]["route"], by[s]["driver"])
                for s in ("r-u", "r-m1", "r-m2")
            } == {
                "r-u": ("sent", f"rtp unicast {unicast[0]}:{unicast[1]}", "rtp"),
                "r-m1": ("sent", f"rtp multicast {g}", "rtp"),
                "r-m2": ("sent", f"rtp multicast {g}", "rtp"),
            }
            assert all(by[s]["frames_sent"] == b["frames"] == 100 for s in ("r-u", "r-m1"))
            assert by["r-m1"]["packets"] is None  # nobody claims what a paging horn heard
            # the standard receivers decoded the audio (ffmpeg ends by itself on the RTCP BYE)
            assert_heard(*horn_u.finish(), src)
            assert_heard(*horn_m.finish(), src)

            # two horns on one group: one stream (one SSRC, every sequence number once), PCMU
            pkts = [RtpPacket.parse(d) for d in tap.drain()]
            assert len({p.ssrc for p in pkts}) == 1
            assert len({p.sequence for p in pkts}) == len(pkts) <= b["frames"]
            assert len(pkts) >= b["frames"] // 2
            assert {(p.payload_type, len(p.payload)) for p in pkts} == {(0, 160)}
            rtcp = [m for d in tap_rtcp.drain() for m in parse_rtcp(d)]  # RTCP on port + 1
            assert any(isinstance(m, Bye) and m.ssrc == pkts[0].ssrc for m in rtcp)

            # a 16 kHz L16 broadcast reaches the paging horns as 8 kHz PCMU all the same
            wide = sweep(16000, 0.6)
            b2 = await wait_done(ctl, (await ctl.play(wide, ["r-m1", "r-m2"], codec="l16")).id)
            assert {r["state"] for r in b2["speakers"]} == {"sent"}
            pkts = [RtpPacket.parse(d) for d in tap.drain()]
            assert {(p.payload_type, len(p.payload)) for p in pkts} == {(0, 160)}
            down = Resampler(16000, 8000)
            want = [
                audioop.lin2ulaw(down.convert(wide[i : i + 640]), 2)
                for i in range(0, len(wide), 640)
            ]
            ts0 = min(p.timestamp for p in pkts)
            assert all(p.payload == want[(p.timestamp - ts0) // 160] for p in pkts)
    finally:
        sim.stop()
        horn_u.kill()
        horn_m.kill()
        tap.close()
        tap_rtcp.close()


async def test_stop_and_takeover_end_the_stream_on_the_group(tmp_path, data, tag):
    group = random_group()
    site = zones.load(write_zones(tmp_path / "z.yaml", ("127.0.0.1", free_even_port()), group))
    tap, tap_rtcp = GroupTap(*group), GroupTap(group[0], group[1] + 1)
    try:
        async with controller(site, data, tag, mdns=False) as (ctl, _):
            await wait_online(ctl, 3)  # the paging horns: online while configured
            first = await ctl.play(sweep(8000, 10.0), ["r-m1"])
            await asyncio.sleep(0.5)
            # another horn on the same group: the core sees two different speakers, but the
            # horns would mix two pages on one group, so the first broadcast's stream ends there
            second = await ctl.play(sweep(8000, 0.6), ["r-m2"])
            await wait_done(ctl, second.id)
            pkts = [RtpPacket.parse(d) for d in tap.drain()]
            ssrcs = [p.ssrc for p in pkts]
            a, b = ssrcs[0], ssrcs[-1]
            assert a != b and set(ssrcs) == {a, b}
            assert ssrcs.index(b) > len(ssrcs) - 1 - ssrcs[::-1].index(a)  # no interleaving
            byes = [m.ssrc for d in tap_rtcp.drain() for m in parse_rtcp(d) if isinstance(m, Bye)]
            assert a in byes and b in byes
            assert any(
                e["kind"] == "rtp_taken_over"
                and e["broadcast"] == first.id
                and e["by"] == second.id
                for e in ctl.events
            )
            await ctl.stop(first.id)
            await wait_done(ctl, first.id)
            tap.drain()
            tap_rtcp.drain()

            third = await ctl.play(sweep(8000, 10.0), ["r-m1", "r-m2"])
            await asyncio.sleep(0.5)
            await ctl.stop(third.id)
            res = await wait_done(ctl, third.id)
            assert res["state"] == "stopped" and res["frames"] < 100
            await asyncio.sleep(0.3)
            pkts = [RtpPacket.parse(d) for d in tap.drain()]
            ssrc = pkts[-1].ssrc
            assert len(pkts) <= res["frames"]  # nothing after the stop
            byes = [m.ssrc for d in tap_rtcp.drain() for m in parse_rtcp(d) if isinstance(m, Bye)]
            assert ssrc in byes
    finally:
        tap.close()
        tap_rtcp.close()
