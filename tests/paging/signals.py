"""Test signals for paging: speech-like talk spurts with pauses, and how to find them again."""

from __future__ import annotations

import math
import random
import struct
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def talk(
    rate: int,
    seconds: float,
    seed: int = 7,
    level: int = 6000,
    spurt: tuple[float, float] = (1.2, 2.2),
    pause: tuple[float, float] = (0.3, 0.6),
) -> tuple[bytes, list[tuple[int, int]]]:
    """Noise-like 'speech' in spurts separated by near-silent pauses (room noise at -70 dBFS);
    returns the PCM and the (start, end) sample of each spurt."""
    rng = random.Random(seed)
    n = int(rate * seconds)
    out = []
    spurts = []
    i = 0
    while i < n:
        length = int(rate * rng.uniform(*spurt))
        spurts.append((i, min(n, i + length)))
        phase = rng.uniform(0, 6.28)
        for j in range(min(length, n - i)):
            env = math.sin(math.pi * j / length) ** 0.3  # words swell and fade
            out.append(int(level * env * (rng.gauss(0, 0.5) + 0.5 * math.sin(phase + j * 0.2))))
        i += length
        gap = min(int(rate * rng.uniform(*pause)), n - i)
        out.extend(rng.randint(-10, 10) for _ in range(gap))
        i += gap
    pcm = struct.pack(f"<{n}h", *(max(-32768, min(32767, v)) for v in out[:n]))
    return pcm, spurts


def samples(pcm: bytes) -> list[int]:
    """s16le bytes as ints."""
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def find(recording: bytes, piece: bytes, lo: int = 0, hi: int | None = None) -> int:
    """The sample offset in `recording` (searched between lo and hi) where `piece` fits best."""
    hi = len(recording) // 2 if hi is None else min(hi, len(recording) // 2)
    lo = max(0, lo)
    window = recording[lo * 2 : hi * 2 + len(piece)]
    if len(window) < len(piece):
        return -1
    # findfit divides by the window's energy: digital silence (before the voice) would make it
    # 0/0 and stop the search, so the window is lifted by one step
    offset, _ = audioop.findfit(audioop.bias(window, 2, 1), piece)
    return lo + offset


def correlation(a: bytes, b: bytes) -> float:
    """Normalized correlation of two equal-length s16 signals (gain does not matter)."""
    x, y = samples(a), samples(b)
    n = min(len(x), len(y))
    sxy = sum(x[i] * y[i] for i in range(n))
    sxx = sum(v * v for v in x[:n])
    syy = sum(v * v for v in y[:n])
    return sxy / math.sqrt(sxx * syy) if sxx and syy else 0.0


def track(
    recording: bytes,
    ref: bytes,
    rate: int,
    voiced: int = 800,
    match: float = 0.8,
    resync: float = 1.0,
) -> dict[int, int | None]:
    """Where each voiced 20 ms frame k of `ref` sits in `recording`: {k: lag in samples (its
    position less k's), or None when it is not there}. A frame is looked for within three frames
    of the last one's lag, so a dropped or inserted frame shows as a change of lag. A frame not
    there is looked for again, three frames long, within `resync` seconds of that lag: after a
    stall that moved the sound by more than three frames (a gap filled, then frames dropped), the
    track picks the voice up again — one break where the listener hears one, not every frame after
    it until the lag happens to come back."""
    step = rate // 50
    out: dict[int, int | None] = {}
    lag: int | None = None
    for k in range(len(ref) // (step * 2)):
        piece = ref[k * step * 2 : (k + 1) * step * 2]
        if audioop.rms(piece, 2) < voiced:
            continue  # a pause: nothing to recognise
        s = k * step
        three = ref[s * 2 : (s + 3 * step) * 2]  # this frame and the next two: surer to find
        if lag is None:  # the first voiced frame: searched from the start
            pos = find(recording, three, 0, s + 2 * rate)
        else:
            pos = find(recording, piece, s + lag - 3 * step, s + lag + 3 * step)
            if pos < 0 or correlation(recording[pos * 2 : (pos + step) * 2], piece) < match:
                span = int(resync * rate)  # not there: the voice moved, or this frame is gone
                pos = find(recording, three, s + lag - span, s + lag + span)
                got = recording[pos * 2 : pos * 2 + len(three)]
                if pos >= 0 and correlation(got, three) < match:
                    pos = -1
        if pos < 0 or correlation(recording[pos * 2 : (pos + step) * 2], piece) < match:
            out[k] = None
            continue
        lag = pos - s
        out[k] = lag
    return out


def breaks(tracked: dict[int, int | None]) -> int:
    """Voiced frames missing, plus jumps of lag between two frames next to each other (a frame
    cut out of, or silence put into, the middle of a sound): what a listener hears as broken."""
    missing = sum(lag is None for lag in tracked.values())
    jumps = sum(
        1
        for k, lag in tracked.items()
        if lag is not None and tracked.get(k + 1) not in (None, lag) and k + 1 in tracked
    )
    return missing + jumps
