"""The one shape every broadcast plays from: a source of 20 ms mono s16le PCM frames.

The core asks a source to `prepare` (decode, render, look up) before the start instant is fixed,
then `take`s one frame per 20 ms at its own pace. `take` never blocks: a recorded source always
has its next frame; a live source may have none yet (a gap: the speakers play silence and the
index moves on, so delay never builds up) or may have ended.
"""

from __future__ import annotations

from typing import Any

FRAME_MS = 20


class EndOfAudio:
    """Returned by `take` once the source has nothing more to give."""

    def __repr__(self) -> str:
        return "END"


END = EndOfAudio()
Frame = bytes | None | EndOfAudio  # PCM, a gap (nothing now), or the end


def frame_bytes(rate: int) -> int:
    """Bytes of s16le mono PCM in one 20 ms frame."""
    return rate * FRAME_MS // 1000 * 2


class AudioSource:
    """Base of every source. Subclasses set `kind` and implement `prepare` and `take`."""

    kind = "audio"
    live = False
    rate = 8000

    async def prepare(self, rate: int) -> None:
        """Make the audio ready at `rate` Hz; may take time (decoding), raises BroadcasterError."""
        self.rate = rate

    def take(self) -> Frame:
        """The next 20 ms frame, a gap (None), or END. Never blocks."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What is played, for the record and the audit log (clip id, file hash, TTS text, live)."""
        return {"kind": self.kind}

    @property
    def duration(self) -> float | None:
        """Seconds of audio once prepared; None for live sources."""
        return None

    def close(self) -> None:
        """Release whatever the source holds."""


class PcmSource(AudioSource):
    """A recorded source: all of its PCM is known once prepared."""

    kind = "pcm"

    def __init__(self, pcm: bytes | None = None, rate: int = 8000, label: str = "") -> None:
        self._pcm = pcm
        self._given_rate = rate
        self.label = label
        self._pos = 0

    async def render(self, rate: int) -> bytes:
        """The whole audio at `rate` (subclasses decode or look it up here)."""
        if self._pcm is None or rate != self._given_rate:
            from broadcaster.errors import InvalidInput

            raise InvalidInput(
                f"PCM for {self.label or 'this source'} exists only at "
                f"{self._given_rate} Hz, not {rate} Hz",
                code="bad_rate",
            )
        return self._pcm

    async def prepare(self, rate: int) -> None:
        """Render the audio and pad it to whole frames."""
        self.rate = rate
        pcm = await self.render(rate)
        step = frame_bytes(rate)
        if len(pcm) % step:
            pcm += bytes(step - len(pcm) % step)
        self._pcm, self._given_rate, self._pos = pcm, rate, 0

    def take(self) -> Frame:
        """The next frame, or END."""
        assert self._pcm is not None, "prepare() first"
        step = frame_bytes(self.rate)
        if self._pos >= len(self._pcm):
            return END
        out = self._pcm[self._pos : self._pos + step]
        self._pos += step
        return out

    @property
    def duration(self) -> float | None:
        """Seconds of audio."""
        return None if self._pcm is None else len(self._pcm) / 2 / self._given_rate

    def describe(self) -> dict[str, Any]:
        """Kind and label."""
        return {"kind": self.kind, "label": self.label}

    def close(self) -> None:
        """Drop the PCM."""
        self._pcm = b""
