"""Live audio fed in real time (a microphone through a socket, stdin, a WebSocket).

The feeder pushes PCM as it arrives; the core takes one 20 ms frame per 20 ms. When the feeder
stalls the core gets gaps (silence at the speakers) and moves on; when it catches up with a
burst, or its clock runs fast, frames beyond a small backlog are dropped — so the delay from the
microphone to the horns never grows. The source is stoppable at any moment, whatever the feeder
does, because the core never waits on it.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

from broadcaster.errors import AudioInputError
from broadcaster.sources.base import END, AudioSource, Frame, frame_bytes
from broadcaster.sources.resample import Resampler

MAX_BACKLOG_FRAMES = 4  # 80 ms: more than this queued means we are behind; drop the oldest


class LiveSource(AudioSource):
    """A real-time PCM feed; `push` from the feeder, `take` from the core."""

    kind = "live"
    live = True

    def __init__(self, in_rate: int = 16000, label: str = "live",
                 max_backlog: int = MAX_BACKLOG_FRAMES) -> None:
        self.in_rate = in_rate
        self.label = label
        self.max_backlog = max_backlog
        self._frames: deque[bytes] = deque()
        self._pending = bytearray()
        self._resampler: Resampler | None = None
        self.ended = False
        self.received = 0  # frames pushed
        self.dropped = 0  # frames dropped because the feed ran ahead
        self.gaps = 0  # frames taken while nothing had arrived
        self._early = bytearray()  # what arrived before the output rate was fixed
        self._prepared = False

    async def prepare(self, rate: int) -> None:
        """Fix the output rate; a feed at another rate is resampled."""
        self.rate = rate
        if self.in_rate != rate:
            self._resampler = Resampler(self.in_rate, rate)
        self._prepared = True
        early, self._early = bytes(self._early), bytearray()
        self.push(early)

    def push(self, pcm: bytes) -> None:
        """Add PCM (mono s16le at in_rate) as it arrives."""
        if self.ended or not pcm:
            return
        if not self._prepared:
            self._early.extend(pcm[:self.in_rate * 2 * 10])  # at most 10 s before the start
            return
        if self._resampler is not None:
            self._resampler.feed(pcm)
            step = frame_bytes(self.rate)
            while (chunk := self._resampler.read(step)) is not None:
                self._append(chunk)
            return
        self._pending.extend(pcm)
        step = frame_bytes(self.rate)
        while len(self._pending) >= step:
            self._append(bytes(self._pending[:step]))
            del self._pending[:step]

    def _append(self, frame: bytes) -> None:
        self._frames.append(frame)
        self.received += 1
        while len(self._frames) > self.max_backlog:
            self._frames.popleft()
            self.dropped += 1

    def end(self) -> None:
        """The feed is over: what is queued still plays, then END."""
        self.ended = True

    def take(self) -> Frame:
        """The oldest queued frame, a gap (None) if nothing is queued, or END once ended."""
        if self._frames:
            return self._frames.popleft()
        if self.ended:
            return END
        self.gaps += 1
        return None

    def describe(self) -> dict[str, Any]:
        """Live, with what was received, dropped and missing."""
        return {"kind": "live", "label": self.label, "frames_received": self.received,
                "frames_dropped": self.dropped, "gaps": self.gaps}


class WavStreamParser:
    """Reads a WAV stream header first (as `sox … -t wav -` writes it), then passes PCM through.

    Streaming writers put 0 or 0xFFFFFFFF in the size fields; they are ignored.
    """

    def __init__(self) -> None:
        self._head = bytearray()
        self.rate: int | None = None
        self.started = False  # the header is complete; PCM follows
        self._odd = b""

    def feed(self, data: bytes) -> bytes:
        """Bytes in; PCM out (empty until the header is complete)."""
        if self.started:
            return self._even(data)
        self._head.extend(data)
        buf = bytes(self._head)
        if len(buf) < 12:
            return b""
        if buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            raise AudioInputError("the live stream is not WAV (no RIFF/WAVE header)",
                                  code="bad_live_stream")
        pos = 12
        while pos + 8 <= len(buf):
            cid, size = buf[pos:pos + 4], struct.unpack("<I", buf[pos + 4:pos + 8])[0]
            if cid == b"fmt ":
                if pos + 8 + 16 > len(buf):
                    return b""
                fmt, ch, rate, _, _, bits = struct.unpack("<HHIIHH", buf[pos + 8:pos + 24])
                if fmt not in (1, 0xFFFE) or ch != 1 or bits != 16 or not 8000 <= rate <= 48000:
                    raise AudioInputError(
                        f"the live stream must be 16-bit mono PCM at 8-48 kHz (got format {fmt}, "
                        f"{ch} channel(s), {bits} bits, {rate} Hz)", code="bad_live_stream")
                self.rate = rate
                pos += 8 + size
            elif cid == b"data":
                if self.rate is None:
                    raise AudioInputError("the live stream's data comes before its format",
                                          code="bad_live_stream")
                rest = buf[pos + 8:]
                self._head.clear()
                self.started = True
                return self._even(rest)
            else:
                if size > 1 << 16:
                    raise AudioInputError("the live stream's header is too large",
                                          code="bad_live_stream")
                pos += 8 + size + (size & 1)
        if len(buf) > 1 << 17:
            raise AudioInputError("no audio data in the first 128 KiB of the live stream",
                                  code="bad_live_stream")
        return b""

    def _even(self, data: bytes) -> bytes:
        data = self._odd + data
        cut = len(data) & ~1
        self._odd = data[cut:]
        return data[:cut]
