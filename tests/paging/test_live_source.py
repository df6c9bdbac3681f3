"""The live source's depth control and end rules, and the leveller, as pure cores: a simulated
client pushes frames on its own (drifting, stalling) clock and the core takes one per 20 ms."""

from __future__ import annotations

import asyncio
import math
import struct
import warnings

from broadcaster.sources.base import END
from broadcaster.sources.leveller import Leveller, dbfs
from broadcaster.sources.live import LiveSource
from tests.paging.signals import talk

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 8000
STEP = RATE // 50 * 2


def run(
    source: LiveSource,
    pcm: bytes,
    speed: float,
    stall: tuple[float, float] | None = None,
    seconds: float | None = None,
) -> list[tuple[int, int]]:
    """Push `pcm` frame k at k*20ms/speed (held back during `stall` and then sent at once);
    take every 20 ms. Returns (take index, depth before the take) for every take."""
    asyncio.run(source.prepare(RATE))
    frames = [pcm[i : i + STEP] for i in range(0, len(pcm), STEP)]
    total = seconds or len(frames) * 0.02 / speed + 0.5
    depths = []
    k = 0
    for n in range(int(total / 0.02)):
        now = n * 0.02
        while k < len(frames) and k * 0.02 / speed <= now:
            if stall and stall[0] <= k * 0.02 / speed < stall[1] and now < stall[1]:
                break
            source.push(frames[k])
            k += 1
        if k == len(frames):
            source.end()
        depths.append((n, source.depth))
        if source.take() is END:
            break
    return depths


def test_a_fast_client_loses_its_surplus_in_pauses_and_the_delay_stays():
    pcm, _ = talk(RATE, 120)
    src = LiveSource(RATE, max_backlog=6)
    depths = run(src, pcm, speed=1.001)
    # 120 s at +0.1 % is 6 frames too many: dropped one at a time, in pauses, none at the cap
    # (one insertion at the start may settle the buffer on its target)
    assert src.inserted <= 1 and 4 <= src.dropped_quiet - src.inserted <= 7
    assert src.dropped == 0
    assert src.gaps == 0
    early = max(d for n, d in depths[100:600])
    late = max(d for n, d in depths[-600:-100])
    assert late <= early + 1


def test_a_slow_client_gets_silence_added_in_pauses_not_gaps_mid_word():
    pcm, _ = talk(RATE, 120)
    src = LiveSource(RATE, max_backlog=6)
    depths = run(src, pcm, speed=0.999)
    assert 5 <= src.inserted <= 8 and src.dropped_quiet <= 1
    assert src.gaps <= 1  # the first frame may land just after a take
    assert max(d for n, d in depths[-600:-100]) >= 1  # never starved


def test_a_stall_costs_a_gap_and_the_delay_comes_back():
    pcm, _ = talk(RATE, 20)
    src = LiveSource(RATE, max_backlog=6)
    depths = run(src, pcm, speed=1.0, stall=(5.0, 5.3))
    assert 12 <= src.gaps <= 16  # ~300 ms of silence at the speakers
    before = max(d for n, d in depths[150:240])
    after = max(d for n, d in depths[-150:-30])
    assert after <= before + 1, (before, after)  # the burst's surplus went in the next pauses


def test_the_voice_waits_for_the_prefix_and_early_audio_is_discarded():
    opened = []
    played = []

    chime = LiveSource(RATE)
    asyncio.run(chime.prepare(RATE))
    chime.push(b"\x01\x00" * (STEP // 2) * 3)
    chime.end()
    src = LiveSource(
        RATE, prefix=chime, gate=True, on_open=lambda: opened.append(1), recorder=played.append
    )
    asyncio.run(src.prepare(RATE))
    src.push(b"\x05\x00" * (STEP // 2))  # before ready: dropped
    assert [src.take() for _ in range(3)] == [b"\x01\x00" * (STEP // 2)] * 3
    assert not opened
    src.push(b"\x07\x00" * (STEP // 2))  # still before the channel opened
    assert src.take() == bytes(STEP)  # open now, the talker has not begun: silence, not a gap
    assert opened == [1] and src.discarded == 2 * STEP
    src.push(b"\x09\x00" * (STEP // 2))
    assert src.take() == bytes(STEP)  # the voice begins once its 20 ms margin is there
    src.push(b"\x0b\x00" * (STEP // 2))
    assert src.take() == b"\x09\x00" * (STEP // 2)
    assert len(played) == 6


def test_a_client_that_goes_quiet_ends_the_page():
    src = LiveSource(RATE, idle_frames=40, start_frames=100)
    asyncio.run(src.prepare(RATE))
    src.push(bytes(STEP))
    src.push(bytes(STEP))
    assert src.take() == bytes(STEP) and src.take() == bytes(STEP)
    takes = [src.take() for _ in range(40)]
    assert takes[:39] == [None] * 39 and takes[39] is END and src.end_reason == "idle"
    never = LiveSource(RATE, start_frames=100)
    asyncio.run(never.prepare(RATE))
    assert [never.take() for _ in range(100)][-1] is END and never.end_reason == "no_audio"


def tone(level: float, n: int = RATE // 50, freq: float = 440.0) -> bytes:
    return struct.pack(
        f"<{n}h", *(int(level * 32767 * math.sin(2 * math.pi * freq * i / RATE)) for i in range(n))
    )


def test_leveller_raises_a_quiet_voice_and_never_clips_a_loud_one():
    lv = Leveller()
    out = [lv.process(tone(0.01))[0] for _ in range(150)]  # -43 dBFS RMS, 3 s
    assert abs(dbfs(audioop.rms(b"".join(out[-25:]), 2)) - (-43 + 24)) < 1.5  # max gain
    lv = Leveller()
    for _ in range(10):
        loud, quiet = lv.process(tone(1.0))
        assert audioop.max(loud, 2) <= 29205 and not quiet  # -1 dBFS ceiling
    out = [lv.process(tone(0.99))[0] for _ in range(100)]
    assert abs(dbfs(audioop.rms(b"".join(out[-25:]), 2)) - (-20)) < 1.5
    # a pause after speech is not pumped up: the gain is held, the frame is quiet
    gain = lv.gain_db
    _, quiet = lv.process(tone(0.0005))
    assert quiet and lv.gain_db <= gain
