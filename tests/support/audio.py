"""Test audio: source signals, and the check that a speaker's recording is the source.

A recording matches when every 20 ms frame is the source's frame at the same position, except
frames the speaker itself reports lost, which must be silence. On a busy machine a frame may be
late; the speaker then says so, and the check still catches any corrupted or shifted frame.
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path


def sweep(rate: int, seconds: float) -> bytes:
    """A rising tone with a little noise-like detail, so misalignment or corruption shows."""
    n = int(rate * seconds)
    return struct.pack(
        f"<{n}h",
        *(
            int(
                9000 * math.sin(2 * math.pi * (200 + 400 * i / n) * i / rate)
                + 3000 * math.sin(i * 1.3)
            )
            for i in range(n)
        ),
    )


def wav_file(path: Path, rate: int, pcm: bytes) -> Path:
    """Write mono s16 PCM as a WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def assert_recording_matches(pcm: bytes, expect: bytes, rate: int, lost: int) -> None:
    """Every frame equals the source's at its position, or is silence counted in `lost`."""
    step = rate // 50 * 2
    assert len(pcm) == len(expect), f"recorded {len(pcm)} bytes, source has {len(expect)}"
    bad = [i // step for i in range(0, len(pcm), step) if pcm[i : i + step] != expect[i : i + step]]
    silent = bytes(step)
    assert all(pcm[i * step : (i + 1) * step] == silent for i in bad), (
        f"frames {[i for i in bad if pcm[i * step : (i + 1) * step] != silent][:5]} are corrupted"
    )
    assert len(bad) == lost, f"{len(bad)} frames differ but the speaker reported {lost} lost"
    assert len(bad) < len(pcm) // step // 2, "most of the audio was lost"
