"""Audio sources: live feeds never build delay and never block the core; recorded ones render
before the start; sequences assemble chime and message; a stalled live broadcast stops at once."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

import broadcaster.site as zones
from broadcaster.errors import AudioInputError, InvalidInput
from broadcaster.sources.base import END, PcmSource, frame_bytes
from broadcaster.sources.live import LiveSource, WavStreamParser
from tests.support.audio import sweep
from tests.support.harness import SimProcess, controller, playout_records, wait_done, wait_online
from tests.support.sites import small_site

FRAME = frame_bytes(8000)


def wav_header(rate: int, bits: int = 16, channels: int = 1) -> bytes:
    """A streaming WAV header (sizes 0xFFFFFFFF, as sox writes to a pipe)."""
    fmt = struct.pack(
        "<HHIIHH", 1, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits
    )
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


def test_wav_stream_parser_takes_a_streaming_header_then_pcm():
    p = WavStreamParser()
    data = wav_header(16000) + bytes(range(10))
    out = b"".join(p.feed(data[i : i + 7]) for i in range(0, len(data), 7))
    assert p.rate == 16000 and out == bytes(range(10))
    with pytest.raises(AudioInputError) as err:
        WavStreamParser().feed(wav_header(16000, channels=2))
    assert "mono" in err.value.message
    with pytest.raises(AudioInputError):
        WavStreamParser().feed(b"not a wav header at all")


async def test_pcm_source_pads_to_whole_frames_and_ends():
    src = PcmSource(bytes(FRAME + 10), 8000)
    await src.prepare(8000)
    assert src.take() == bytes(FRAME) and len(src.take()) == FRAME and src.take() is END
    with pytest.raises(InvalidInput):
        await PcmSource(b"\0\0", 8000).prepare(16000)


async def test_a_stalled_live_broadcast_stops_at_once_and_its_delay_never_grew(
    tmp_path, data, record, tag
):
    path = small_site(tmp_path / "z.yaml", villages=1, horns=2, columns=1)
    site = zones.load(path)
    sim = SimProcess(path, data, record, tag, only=["h1-1", "h1-2"]).start()
    try:
        async with controller(site, data, tag, playout_delay=0.2) as (ctl, _):
            await wait_online(ctl, 2)
            live = LiveSource(in_rate=8000)
            b = await ctl.play(live, ["v1"], priority="live")
            pcm = sweep(8000, 1.0)
            for i in range(0, len(pcm), FRAME):  # one second in real time
                live.push(pcm[i : i + FRAME])
                await asyncio.sleep(0.02)
            await asyncio.sleep(1.0)  # the feed stalls: gaps, not a wait
            live.push(pcm[: FRAME * 50])  # a burst: only a backlog's worth survives
            asked = time.monotonic()
            await ctl.stop(b.id)
            done = await wait_done(ctl, b.id, timeout=10)
            took = time.monotonic() - asked
            assert done["state"] == "stopped" and took < 3.0
            src = done["source"]
            assert src["kind"] == "live" and src["frames_dropped"] >= 40
            recs = playout_records(record, b.id)
            assert set(recs) == {"h1-1", "h1-2"}
            # the speakers heard the first second, and nothing like the 50-frame burst: the
            # delay did not grow by the stall
            assert all(40 <= r["packets"] <= 60 for r in recs.values())
    finally:
        sim.stop()
