"""Decode any audio file ffmpeg reads into mono signed 16-bit PCM at a chosen rate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class DecodeError(Exception):
    """The file is not audio ffmpeg can decode; the message names the file and the reason."""


def decode_file(path: str | Path, rate: int) -> bytes:
    """Return the file's audio as mono s16le PCM at `rate` Hz, resampled with an anti-alias filter."""
    path = Path(path)
    if not path.is_file():
        raise DecodeError(f"{path}: no such file")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise DecodeError("ffmpeg is not installed (run scripts/setup)")
    # swresample's default filter is a windowed sinc: unlike pydub's set_frame_rate it removes
    # content above the new Nyquist frequency before decimating.
    proc = subprocess.run(
        [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1",
         "-af", f"aresample={rate}:filter_size=64:cutoff=0.91", "-f", "s16le",
         "-acodec", "pcm_s16le", "pipe:1"],
        capture_output=True, check=False,
    )
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise DecodeError(f"{path.name}: not decodable audio ({reason[-1] if reason else 'ffmpeg failed'})")
    if not proc.stdout:
        raise DecodeError(f"{path.name}: contains no audio samples")
    return proc.stdout
