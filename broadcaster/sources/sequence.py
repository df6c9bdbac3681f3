"""A sequence: parts played one after another with pauses, repeated (chime, message, repeat).

Assembled with pydub (the only module that imports it), from parts already rendered at the
broadcast's rate by the audio library — pydub's own resampler has no anti-alias filter and is
never used here.
"""

from __future__ import annotations

import warnings
from typing import Any

from broadcaster.errors import InvalidInput
from broadcaster.sources.base import PcmSource

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pydub warns that audioop is deprecated
    from pydub import AudioSegment

MAX_REPEAT = 10


class SequenceSource(PcmSource):
    """Parts in order, `pause` seconds between them, the whole played `repeat` times."""

    kind = "sequence"

    def __init__(self, parts: list[PcmSource], pause: float = 0.5, repeat: int = 1) -> None:
        super().__init__(label=" + ".join(p.label for p in parts))
        if not parts:
            raise InvalidInput("a sequence needs at least one part", code="empty_sequence")
        if not 1 <= repeat <= MAX_REPEAT:
            raise InvalidInput(f"repeat {repeat} is outside 1..{MAX_REPEAT}", code="bad_repeat")
        if not 0 <= pause <= 10:
            raise InvalidInput(f"pause {pause} s is outside 0..10 s", code="bad_pause")
        self.parts = parts
        self.pause = pause
        self.repeat = repeat

    async def render(self, rate: int) -> bytes:
        """Render each part at `rate` and join them."""
        segs = []
        for part in self.parts:
            await part.prepare(rate)
            pcm = part._pcm or b""  # noqa: SLF001 - a sibling PcmSource's rendered audio
            segs.append(AudioSegment(data=pcm, sample_width=2, frame_rate=rate, channels=1))
        gap = AudioSegment.silent(duration=int(self.pause * 1000), frame_rate=rate)
        once = segs[0]
        for seg in segs[1:]:
            once = once + gap + seg
        whole = once
        for _ in range(self.repeat - 1):
            whole = whole + gap + once
        return bytes(whole.raw_data)

    def describe(self) -> dict[str, Any]:
        """Every part's description, the pause and the repeat count."""
        return {
            "kind": "sequence",
            "parts": [p.describe() for p in self.parts],
            "pause": self.pause,
            "repeat": self.repeat,
        }
