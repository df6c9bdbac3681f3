"""Streaming, anti-aliased resampling of mono s16le PCM (FFmpeg's swresample through PyAV).

Used where one broadcast feeds speakers at different rates (16 kHz L16 columns beside 8 kHz plain
RTP horns) and where a live client captures at its own rate. The only broadcaster module that
imports PyAV for audio processing; the library's decoding stays in audio_library.
"""

from __future__ import annotations

import av


class Resampler:
    """Feeds PCM at one rate, yields it at another; output is delayed by the filter (~1 ms)."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._r = av.AudioResampler(format="s16", layout="mono", rate=dst_rate)
        self._buf = bytearray()

    def feed(self, pcm: bytes) -> None:
        """Push PCM at the source rate."""
        if not pcm:
            return
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.sample_rate = self.src_rate
        frame.planes[0].update(pcm)
        frame.pts = None
        for out in self._r.resample(frame):
            self._buf.extend(bytes(out.planes[0])[: out.samples * 2])

    def flush(self) -> None:
        """Push out what the filter still holds (at the end of the stream)."""
        for out in self._r.resample(None):
            self._buf.extend(bytes(out.planes[0])[: out.samples * 2])

    def read(self, nbytes: int) -> bytes | None:
        """Exactly nbytes of output PCM, or None if not yet available."""
        if len(self._buf) < nbytes:
            return None
        out = bytes(self._buf[:nbytes])
        del self._buf[:nbytes]
        return out

    def convert(self, pcm: bytes) -> bytes:
        """One frame in, the same duration out (padded with silence while the filter fills)."""
        self.feed(pcm)
        want = len(pcm) // 2 * self.dst_rate // self.src_rate * 2
        got = self.read(want)
        return got if got is not None else bytes(want)
