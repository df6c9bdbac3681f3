"""Real-time loudness levelling of a live voice: a slow automatic gain control and a peak limiter.

Pure and frame by frame (20 ms of mono s16le in, 20 ms out, no look-ahead beyond the frame), so
it adds no delay. The gain control follows the level of speech only: frames below the gate (a
pause, room noise) freeze the gain, so pauses are not pumped up into hiss. The limiter then
lowers the gain of any frame whose peak would pass the ceiling, at once (the whole frame is known
before it is scaled), so nothing clips; the gain comes back slowly. Each frame is also labelled
quiet or not: the live source adjusts its delay only in quiet frames (between words).
"""

from __future__ import annotations

import audioop
import math
from dataclasses import dataclass

FULL_SCALE = 32768.0


def dbfs(rms: float) -> float:
    """An RMS (or peak) value of s16 samples in dB relative to full scale."""
    return 20 * math.log10(max(rms, 1.0) / FULL_SCALE)


@dataclass
class LevellerSettings:
    """The levelling targets; the defaults suit a talker on a desk or phone microphone."""

    target_dbfs: float = -20.0  # the speech RMS the horns get (pages are then ~ the clips' level)
    max_gain_db: float = 24.0  # a whisper-quiet microphone is raised at most this much
    min_gain_db: float = -18.0  # a shouting talker is lowered at most this much
    gate_dbfs: float = -50.0  # below this a frame is a pause whatever the talker's level
    gate_below_speech_db: float = 24.0  # ... and so is a frame this far below the speech level
    ceiling_dbfs: float = -1.0  # the limiter's ceiling for sample peaks
    attack: float = 0.3  # per frame, how fast the level estimate follows a louder voice
    release: float = 0.03  # per frame, how fast it follows a softer one (~0.7 s)
    rise_db_per_frame: float = 0.5  # the gain rises at most this fast (25 dB/s): no pumping


class Leveller:
    """Levels 20 ms frames as they come; `process(frame)` → (levelled frame, quiet)."""

    def __init__(self, settings: LevellerSettings | None = None) -> None:
        self.s = settings or LevellerSettings()
        self.level_db: float | None = None  # the running estimate of the speech level
        self.gain_db = 0.0
        self.limited = 0  # frames the limiter had to turn down
        self.quiet_frames = 0
        self._ceiling = FULL_SCALE * 10 ** (self.s.ceiling_dbfs / 20)

    def is_quiet(self, level_db: float) -> bool:
        """True if a frame at this RMS level is a pause (below the gate)."""
        if level_db < self.s.gate_dbfs:
            return True
        return self.level_db is not None and level_db < self.level_db - self.s.gate_below_speech_db

    def process(self, pcm: bytes) -> tuple[bytes, bool]:
        """One frame levelled, and whether it is quiet (a pause between words)."""
        if not pcm:
            return pcm, True
        s = self.s
        level = dbfs(audioop.rms(pcm, 2))
        quiet = self.is_quiet(level)
        before = self.gain_db
        if quiet:
            self.quiet_frames += 1
            want = self.gain_db  # hold the gain through pauses
        else:
            if self.level_db is None:
                self.level_db = level
            else:
                k = s.attack if level > self.level_db else s.release
                self.level_db += k * (level - self.level_db)
            goal = min(s.max_gain_db, max(s.min_gain_db, s.target_dbfs - self.level_db))
            want = min(goal, self.gain_db + s.rise_db_per_frame) if goal > self.gain_db else goal
        peak = audioop.max(pcm, 2)
        if peak > 0:
            room_db = 20 * math.log10(self._ceiling / peak)
            if want > room_db:
                want = room_db
                self.limited += 1
        self.gain_db = want
        return _ramp(pcm, before, want), quiet


def _ramp(pcm: bytes, before_db: float, after_db: float, parts: int = 4) -> bytes:
    """Scale a frame; a rising gain is spread over the frame (no step), a falling one is applied
    at once so that no sample passes the limiter's ceiling."""
    after = 10 ** (after_db / 20)
    if after_db <= before_db or abs(after_db - before_db) < 0.05:
        return audioop.mul(pcm, 2, after)
    before = 10 ** (before_db / 20)
    n = len(pcm) // 2
    out = []
    for i in range(parts):
        a, b = n * i // parts * 2, n * (i + 1) // parts * 2
        g = before + (after - before) * (i + 1) / parts  # never above `after`
        out.append(audioop.mul(pcm[a:b], 2, g))
    return b"".join(out)
