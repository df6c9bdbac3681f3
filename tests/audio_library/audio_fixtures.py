"""Audio files for audio_library tests, made here with sox, ffmpeg, PyAV and by hand."""

from __future__ import annotations

import array
import math
import random
import struct
import subprocess
import wave
from pathlib import Path

import av

RATE = 48_000


def run(*cmd: str) -> None:
    """Run a fixture-making command, failing the test loudly if it fails."""
    subprocess.run(cmd, check=True, capture_output=True)


def tone_pcm(freqs: tuple[float, ...], seconds: float, rate: int, amp: float = 0.5) -> bytes:
    """Sum of equal sines as mono s16le."""
    n = int(seconds * rate)
    scale = amp * 32767 / len(freqs)
    steps = [2 * math.pi * f / rate for f in freqs]
    return array.array(
        "h", (int(scale * sum(math.sin(s * i) for s in steps)) for i in range(n))
    ).tobytes()


def write_wav(path: Path, pcm: bytes, rate: int, channels: int = 1) -> Path:
    """A plain PCM WAV file."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return path


def encode_with_pyav(
    path: Path, fmt: str, codec: str, rate: int, pcm: bytes, bit_rate: int | None = None
) -> Path:
    """Encode mono s16le with PyAV's bundled FFmpeg (the only AMR-NB encoder on this machine)."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        if bit_rate:
            stream.bit_rate = bit_rate
        total = len(pcm) // 2
        for start in range(0, total, 1024):
            n = min(1024, total - start)
            frame = av.AudioFrame(format="s16", layout="mono", samples=n)
            frame.planes[0].update(pcm[start * 2 : (start + n) * 2])
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


# AMR-WB speech frame payload sizes (bytes) per mode, RFC 4867 storage format.
AMR_WB_SIZES = {0: 17, 1: 23, 2: 32, 3: 36, 4: 40, 5: 46, 6: 50, 7: 58, 8: 60}


def write_amr_wb(path: Path, seconds: float = 1.5, mode: int = 2, seed: int = 7) -> Path:
    """An AMR-WB (.awb) file built frame by frame: no AMR-WB encoder exists on this machine.

    Debian's ffmpeg and sox have no AMR-WB encoder and PyAV's FFmpeg lacks libvo_amrwbenc, so the
    frames carry pseudo-random speech parameters: a valid stream that decodes to noisy audio.
    """
    rnd = random.Random(seed)
    with open(path, "wb") as out:
        out.write(b"#!AMR-WB\n")
        for _ in range(int(seconds * 50)):  # 20 ms frames
            out.write(bytes([(mode << 3) | 0x04]))
            out.write(bytes(rnd.randrange(256) for _ in range(AMR_WB_SIZES[mode])))
    return path


def wav_with_format_tag(path: Path, tag: int, seconds: float = 1.0) -> Path:
    """A WAV whose fmt chunk names an audio codec nobody implements."""
    data = b"\x01\x02" * int(8000 * seconds)
    fmt = struct.pack("<HHIIHH", tag, 1, 8000, 16000, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path
