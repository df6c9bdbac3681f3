"""Decoded audio to a broadcast master: silence trimmed, loudness normalized, true peak limited."""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass

from . import transcoder
from .errors import EmptyAudioError, InvalidRequestError
from .transcoder import Loudness

MASTER_RATE = 48_000
TRANSPORT_RATES = (8_000, 16_000, 48_000)
# Below this, ebur128's absolute gate (-70 LUFS) leaves nothing to measure.
UNMEASURABLE_LUFS = -69.9


@dataclass(frozen=True)
class Settings:
    """Loudness target and input limits; the defaults suit outdoor horns and column speakers.

    -16 LUFS integrated / -1 dBTP is the AES TD1004/TD1008 level for speech heard on small or
    noisy playback systems: 7 LU louder than EBU R128's -23 LUFS broadcast level (which leaves
    headroom that a horn on a pole cannot use), and 1 dB of true-peak room for lossy codecs.
    """

    target_lufs: float = -16.0
    true_peak_dbtp: float = -1.0
    max_bytes: int = 200 * 1024 * 1024
    max_seconds: float = 30 * 60
    # Trim leading/trailing audio quieter than this many dB under the clip's own peak.
    silence_below_peak_db: float = 45.0
    pad_seconds: float = 0.1
    # Normalization stops once within this many LU of the target (the issue allows 1 LU).
    tolerance_lu: float = 0.3

    def __post_init__(self) -> None:
        if not -40.0 <= self.target_lufs <= -5.0:
            raise InvalidRequestError(f"loudness target {self.target_lufs} LUFS is outside -40..-5")
        if not -12.0 <= self.true_peak_dbtp <= 0.0:
            raise InvalidRequestError(
                f"true-peak limit {self.true_peak_dbtp} dBTP is outside -12..0"
            )
        if self.max_bytes <= 0 or self.max_seconds <= 0:
            raise InvalidRequestError("size and duration limits must be positive")


@dataclass(frozen=True)
class Master:
    """A broadcast-ready mono s16le 48 kHz master and its loudness before and after."""

    pcm: bytes
    before: Loudness
    after: Loudness

    @property
    def seconds(self) -> float:
        """Length of the master in seconds."""
        return len(self.pcm) / 2 / MASTER_RATE


def samples(pcm: bytes) -> array.array:
    """Mono s16le bytes as an array of ints (native byte order is converted)."""
    out = array.array("h")
    out.frombytes(pcm)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def trim_silence(pcm: bytes, rate: int, below_peak_db: float, pad_seconds: float) -> bytes:
    """Cut leading and trailing audio quieter than `below_peak_db` under the peak, keeping a pad."""
    data = samples(pcm)
    peak = max(max(data, default=0), -min(data, default=0))
    if peak < 4:  # under -78 dBFS: nothing but dither or digital silence
        return b""
    threshold = peak * 10 ** (-below_peak_db / 20)
    block = max(1, rate // 100)  # 10 ms blocks, so a single stray sample does not count as sound
    count = len(data)
    first = 0
    while first < count:
        chunk = data[first : first + block]
        if max(chunk) > threshold or -min(chunk) > threshold:
            break
        first += block
    last = count
    while last > first:
        chunk = data[max(first, last - block) : last]
        if max(chunk) > threshold or -min(chunk) > threshold:
            break
        last -= block
    pad = int(pad_seconds * rate)
    start, end = max(0, first - pad), min(count, last + pad)
    return pcm[start * 2 : end * 2]


def master(pcm: bytes, rate: int, settings: Settings, *, name: str) -> Master:
    """Trim, then find the gain (and limiting) that lands on the loudness target, in tolerance."""
    if rate != MASTER_RATE:
        pcm = transcoder.resample(pcm, rate, MASTER_RATE)
    trimmed = trim_silence(pcm, MASTER_RATE, settings.silence_below_peak_db, settings.pad_seconds)
    if not trimmed:
        raise EmptyAudioError("contains only silence", file=name)
    before = transcoder.measure(trimmed, MASTER_RATE)
    if before.integrated <= UNMEASURABLE_LUFS:
        raise EmptyAudioError("too short or too quiet to measure its loudness", file=name)
    target, ceiling = settings.target_lufs, settings.true_peak_dbtp
    gain = target - before.integrated
    out, after = trimmed, before
    # Linear gain alone is exact; when it would push peaks over the ceiling, a limiter shaves them
    # and costs some loudness, so the gain is raised by the shortfall and the pass repeated.
    for _ in range(6):
        limit = ceiling - 0.2 if before.true_peak + gain > ceiling else None
        out, after = transcoder.render(trimmed, MASTER_RATE, gain, limit)
        if abs(after.integrated - target) <= settings.tolerance_lu and after.true_peak <= ceiling:
            break
        gain += target - after.integrated
        if after.true_peak > ceiling:
            gain -= after.true_peak - ceiling
    return Master(pcm=out, before=before, after=after)
