"""Live audio fed in real time (a microphone through a WebSocket, stdin, a streamed WAV body).

The feeder pushes PCM as it arrives; the core takes one 20 ms frame per 20 ms and never waits.
Between the two sits a small jitter buffer whose depth this module keeps steady, so that the
delay from the microphone to the horns neither grows nor shrinks over a long page:

- Each take notes how many frames were queued. Over a window (1 s) the smallest such depth,
  less the frame being taken, is the *slack*: how early the feed has been at worst. The target
  is a slack of one frame (20 ms against network and scheduling jitter).
- Slack above the target (a client clock running fast, or a burst after a stall) is removed by
  dropping quiet frames; slack below it (a slow client clock) is restored by inserting 20 ms of
  silence. Both happen only between two quiet frames — inside a pause, never mid-word — so the
  audible cost is a pause 20 ms shorter or longer, about once every 20 s at 0.1 % of drift.
- A frame that has not come by its turn is a gap (the speakers play silence and count it
  lost); the late frame then plays one frame later, and the extra slack goes at the next pause.
- A hard cap on the queue drops the oldest frames at once (after a long stall's burst).

A page also levels the voice (`Leveller`), plays an optional prefix (the chime) first, discards
what the client sends before the voice channel opens (it is told when: `on_open`), records
every frame it hands out, and ends itself when the client has gone quiet — no audio for
`idle_frames` (the network was cut) or none at all within `start_frames` of opening.
"""

from __future__ import annotations

import audioop
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

from broadcaster.errors import AudioInputError
from broadcaster.sources.base import END, AudioSource, Frame, frame_bytes
from broadcaster.sources.leveller import Leveller, dbfs
from broadcaster.sources.resample import Resampler

MAX_BACKLOG_FRAMES = 4  # 80 ms: more than this queued means we are behind; drop the oldest
TARGET_SLACK = 1  # frames of margin the depth control keeps (20 ms)
WINDOW = 50  # takes over which the slack is judged (1 s)
QUIET_DBFS = -50.0  # without a leveller, a frame below this is a pause


class LiveSource(AudioSource):
    """A real-time PCM feed; `push` from the feeder, `take` from the core."""

    kind = "live"
    live = True

    def __init__(
        self,
        in_rate: int = 16000,
        label: str = "live",
        max_backlog: int = MAX_BACKLOG_FRAMES,
        *,
        target: int = TARGET_SLACK,
        window: int = WINDOW,
        leveller: Leveller | None = None,
        prefix: AudioSource | None = None,
        gate: bool = False,
        on_open: Callable[[], None] | None = None,
        recorder: Callable[[bytes], None] | None = None,
        idle_frames: int | None = None,
        start_frames: int | None = None,
    ) -> None:
        self.in_rate = in_rate
        self.label = label
        self.max_backlog = max_backlog
        self.target = target
        self.window = window
        self.leveller = leveller
        self.prefix = prefix
        self.gate = gate  # discard what comes before the voice channel opens
        self.on_open = on_open
        self.recorder = recorder
        self.idle_frames = idle_frames
        self.start_frames = start_frames
        self._frames: deque[tuple[bytes, bool]] = deque()  # (pcm, quiet)
        self._pending = bytearray()
        self._resampler: Resampler | None = None
        self.ended = False
        self.open = False  # the voice channel is open: the prefix is done, takes are running
        self.started = False  # the first voice frame has arrived
        self.end_reason = ""  # "", "end" (the feeder said so), "idle", "no_audio"
        self.received = 0  # frames pushed
        self.dropped = 0  # frames dropped because the queue passed its cap
        self.dropped_quiet = 0  # quiet frames dropped to take slack away (clock fast)
        self.inserted = 0  # silent frames inserted to add slack (clock slow)
        self.gaps = 0  # frames taken while nothing had arrived (after the voice started)
        self.discarded = 0  # bytes pushed before the voice channel opened (gate)
        self._early = bytearray()  # what arrived before the output rate was fixed
        self._prepared = False
        self._last_quiet = True
        self._primed = False  # the first voice frames wait until the margin is there
        self._idle = 0
        self._waited = 0
        self._win_min: int | None = None
        self._win_n = 0
        self._drop_due = 0
        self._insert_due = 0

    async def prepare(self, rate: int) -> None:
        """Fix the output rate; a feed at another rate is resampled; the prefix is rendered."""
        self.rate = rate
        if self.prefix is not None:
            await self.prefix.prepare(rate)
        if self.in_rate != rate:
            self._resampler = Resampler(self.in_rate, rate)
        self._prepared = True
        early, self._early = bytes(self._early), bytearray()
        self.push(early)

    def push(self, pcm: bytes) -> None:
        """Add PCM (mono s16le at in_rate) as it arrives."""
        if self.ended or not pcm:
            return
        if self.gate and not self.open:
            self.discarded += len(pcm)  # the client was told to wait for the channel to open
            return
        if not self._prepared:
            self._early.extend(pcm[: self.in_rate * 2 * 10])  # at most 10 s before the start
            return
        step = frame_bytes(self.rate)
        if self._resampler is not None:
            self._resampler.feed(pcm)
            while (chunk := self._resampler.read(step)) is not None:
                self._append(chunk)
            return
        self._pending.extend(pcm)
        while len(self._pending) >= step:
            self._append(bytes(self._pending[:step]))
            del self._pending[:step]

    def _append(self, frame: bytes) -> None:
        if self.leveller is not None:
            frame, quiet = self.leveller.process(frame)
        else:
            quiet = dbfs(audioop.rms(frame, 2)) < QUIET_DBFS
        self._frames.append((frame, quiet))
        self.received += 1
        self.started = True
        while len(self._frames) > self.max_backlog:
            self._frames.popleft()
            self.dropped += 1

    def end(self, reason: str = "end") -> None:
        """The feed is over: what is queued still plays, then END."""
        if not self.ended:
            self.ended, self.end_reason = True, self.end_reason or reason

    def take(self) -> Frame:
        """The next frame, silence (inserted, or before the voice), a gap (None), or END."""
        if self.prefix is not None:
            got = self.prefix.take()
            if isinstance(got, bytes):
                return self._out(got)
            self.prefix = None
        if not self.open:
            self.open = True
            if self.on_open is not None:
                self.on_open()
        if not self._primed:
            if len(self._frames) <= self.target and not self.ended:
                return self._empty()  # the voice has begun: fill the margin before it plays
            self._primed = True
        if not self._frames:
            return self._empty()
        self._idle = 0
        self._observe(len(self._frames))
        if self._last_quiet and self._frames[0][1]:  # inside a pause: the depth may change here
            if self._insert_due > 0:
                self._insert_due -= 1
                self.inserted += 1
                self._restart_window()
                return self._out(bytes(frame_bytes(self.rate)))
            if self._drop_due > 0 and len(self._frames) > 1:
                self._frames.popleft()
                self._drop_due -= 1
                self.dropped_quiet += 1
                self._restart_window()
        pcm, self._last_quiet = self._frames.popleft()
        return self._out(pcm)

    def _empty(self) -> Frame:
        if self.ended:
            return END
        if not self._primed:  # the channel is open and the voice has not begun: silence
            self._waited += 1
            if self.start_frames is not None and self._waited >= self.start_frames:
                self.end("no_audio")
                return END
            return self._out(bytes(frame_bytes(self.rate)))
        self.gaps += 1
        self._idle += 1
        self._last_quiet = True
        if self.idle_frames is not None and self._idle >= self.idle_frames:
            self.end("idle")  # the client vanished without a word (network cut, killed)
            return END
        if self.recorder is not None:
            self.recorder(bytes(frame_bytes(self.rate)))
        return None

    def _observe(self, depth: int) -> None:
        """Judge the slack over a window; schedule drops or insertions for the next pauses."""
        self._win_min = depth if self._win_min is None else min(self._win_min, depth)
        self._win_n += 1
        if self._win_n < self.window:
            return
        slack = self._win_min - 1
        self._drop_due = max(0, slack - self.target)
        self._insert_due = max(0, self.target - slack)
        self._restart_window()

    def _restart_window(self) -> None:
        self._win_min, self._win_n = None, 0

    def _out(self, pcm: bytes) -> bytes:
        if self.recorder is not None:
            self.recorder(pcm)
        return pcm

    @property
    def depth(self) -> int:
        """Frames queued now."""
        return len(self._frames)

    def describe(self) -> dict[str, Any]:
        """Live, with what was received, dropped, inserted and missing."""
        out: dict[str, Any] = {
            "kind": "live",
            "label": self.label,
            "frames_received": self.received,
            "frames_dropped": self.dropped,
            "gaps": self.gaps,
            "quiet_dropped": self.dropped_quiet,
            "silence_inserted": self.inserted,
        }
        if self.end_reason:
            out["ended_by"] = self.end_reason
        if self.leveller is not None:
            out["gain_db"] = round(self.leveller.gain_db, 1)
            out["limited_frames"] = self.leveller.limited
        return out


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
            raise AudioInputError(
                "the live stream is not WAV (no RIFF/WAVE header)", code="bad_live_stream"
            )
        pos = 12
        while pos + 8 <= len(buf):
            cid, size = buf[pos : pos + 4], struct.unpack("<I", buf[pos + 4 : pos + 8])[0]
            if cid == b"fmt ":
                if pos + 8 + 16 > len(buf):
                    return b""
                fmt, ch, rate, _, _, bits = struct.unpack("<HHIIHH", buf[pos + 8 : pos + 24])
                if fmt not in (1, 0xFFFE) or ch != 1 or bits != 16 or not 8000 <= rate <= 48000:
                    raise AudioInputError(
                        f"the live stream must be 16-bit mono PCM at 8-48 kHz (got format {fmt}, "
                        f"{ch} channel(s), {bits} bits, {rate} Hz)",
                        code="bad_live_stream",
                    )
                self.rate = rate
                pos += 8 + size
            elif cid == b"data":
                if self.rate is None:
                    raise AudioInputError(
                        "the live stream's data comes before its format", code="bad_live_stream"
                    )
                rest = buf[pos + 8 :]
                self._head.clear()
                self.started = True
                return self._even(rest)
            else:
                if size > 1 << 16:
                    raise AudioInputError(
                        "the live stream's header is too large", code="bad_live_stream"
                    )
                pos += 8 + size + (size & 1)
        if len(buf) > 1 << 17:
            raise AudioInputError(
                "no audio data in the first 128 KiB of the live stream", code="bad_live_stream"
            )
        return b""

    def _even(self, data: bytes) -> bytes:
        data = self._odd + data
        cut = len(data) & ~1
        self._odd = data[cut:]
        return data[:cut]
