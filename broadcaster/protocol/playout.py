"""The playout of one broadcast on one speaker: jitter buffer and play schedule; pure, no I/O.

Frame n (RTP timestamp base_ts + n * ts_step) plays at controller time base_time + n * 20 ms,
which the speaker converts to its own clock with its offset estimate. A frame plays only if its
packet arrived before that instant; otherwise the frame is lost, and the sound card plays
silence — or, with Opus, a concealed frame: rebuilt from the next packet's in-band FEC when that
packet is already buffered, else by the decoder's packet-loss concealment. Payloads are decoded
at play time, in frame order, because a stateful decoder must see the stream in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broadcaster.errors import InvalidInput
from broadcaster.protocol.codecs import FRAME_MS, Codec, FrameDecoder
from broadcaster.protocol.rtp import RtpPacket, SenderReport

MAX_AHEAD_FRAMES = 3000  # a packet more than 60 s ahead of the play head is not ours
IDLE_END = 2.0  # seconds without any packet after the last one before the playout gives up
# seconds an armed playout waits for its first sender report: a controller that died, or whose
# stop was lost, during set-up must not leave the speaker "playing" for ever (set-up of a whole
# site takes ~0.2 s; a speaker that does not answer /play holds it at most the 2 s link timeout)
ARM_TIMEOUT = 5.0
UNDERRUN = 0.06  # a frame consumed this long after its instant was never heard: the card moved on


@dataclass
class Frame:
    """One 20 ms frame handed to the sound card at its play instant (local clock)."""

    index: int
    instant: float
    pcm: bytes | None  # None: the packet was lost or late, the card plays silence


@dataclass
class PlayoutStats:
    """What a speaker reports about one broadcast."""

    packets: int = 0  # frames played from a received packet
    lost: int = 0  # frames whose packet never arrived, or arrived late
    concealed: int = 0  # of the lost frames, those the decoder filled in (Opus FEC or PLC)
    fec: int = 0  # of the concealed frames, those rebuilt from the next packet's FEC
    late: int = 0  # packets that arrived after their play instant
    duplicates: int = 0
    foreign: int = 0  # packets of another stream (SSRC or payload type)
    first_local: float | None = None  # local instant of the first sample played
    first_offset: float = 0.0  # the offset (controller - local) it was scheduled with


@dataclass
class Playout:
    """Schedules one broadcast's frames; fed packets and reports, asked for due frames."""

    broadcast: str
    codec: Codec
    ssrc: int
    base_ts: int
    base_time: float | None  # controller clock instant of frame 0; None until a sender report
    stats: PlayoutStats = field(default_factory=PlayoutStats)
    end_index: int | None = None  # frames in the stream, once the sender says
    stopped: bool = False
    next_index: int = 0
    # local clock instants. The speaker's local clock is anchored (wall at start-up + monotonic
    # time), so ARM_TIMEOUT and IDLE_END measured on it are monotonic intervals: a step of the
    # wall clock neither ends a broadcast early nor keeps one alive
    last_arrival: float | None = None
    armed_at: float | None = None  # local time of the play request (for ARM_TIMEOUT)
    # a stream taken up mid-way (its play request carried base_time): frames whose instant had
    # passed before the first tick are skipped, not played as silence nor counted lost
    join_late: bool = False
    # a scale-test speaker (`--light`) does not decode: each frame received plays as silence
    light: bool = False
    idle_end: float = IDLE_END  # a dial-in speaker waits longer: its media may change ways
    first_index: int = 0  # the first frame this speaker played
    _buffer: dict[int, tuple[bytes, float]] = field(default_factory=dict)
    _decoder: FrameDecoder = field(init=False)

    def __post_init__(self) -> None:
        # one per stream, fed in frame order
        self._decoder = _Silence(self.codec.rate) if self.light else self.codec.decoder()

    @property
    def frame_seconds(self) -> float:
        """Duration of one frame."""
        return FRAME_MS / 1000

    def _index(self, ts: int) -> int | None:
        delta = (ts - self.base_ts) & 0xFFFFFFFF
        n, rem = divmod(delta, self.codec.ts_step)
        if rem or n > MAX_AHEAD_FRAMES + self.next_index:
            return None
        return n

    def on_packet(self, pkt: RtpPacket, arrival: float) -> str:
        """Buffer an RTP packet that arrived at local time `arrival`; returns what became of it."""
        return self.take(pkt.ssrc, pkt.payload_type, pkt.timestamp, pkt.payload, arrival)

    def take(
        self, ssrc: int, payload_type: int, timestamp: int, payload: bytes, arrival: float
    ) -> str:
        """`on_packet` by the header's fields (a light speaker reads no more of most packets)."""
        if ssrc != self.ssrc or payload_type != self.codec.payload_type:
            self.stats.foreign += 1
            return "foreign"
        n = self._index(timestamp)
        if n is None:
            self.stats.foreign += 1
            return "foreign"
        self.last_arrival = arrival
        if n < self.next_index:
            self.stats.late += 1
            return "late"
        if n in self._buffer:
            self.stats.duplicates += 1
            return "duplicate"
        self._buffer[n] = (payload, arrival)
        return "buffered"

    def on_sender_report(self, sr: SenderReport, final: bool = False) -> None:
        """Take the sender's clock mapping and, on its last report, the stream's length."""
        if sr.ssrc != self.ssrc:
            return
        delta = (sr.rtp_timestamp - self.base_ts) & 0xFFFFFFFF
        if delta < 1 << 31:
            self.base_time = sr.unix_time - delta / self.codec.rtp_clock
        if final and delta < 1 << 31:
            # the final report's RTP timestamp marks the stream's end (frames a live source never
            # produced are not sent, so the packet count may be smaller)
            self.end_index = delta // self.codec.ts_step

    def instant(self, n: int, offset: float) -> float:
        """Local-clock instant at which frame n plays, given offset = controller - local."""
        assert self.base_time is not None
        return self.base_time + n * self.frame_seconds - offset

    def due(self, local_now: float, offset: float) -> list[Frame]:
        """Frames whose play instant has come, in order; lost ones carry no PCM."""
        out: list[Frame] = []
        if self.base_time is None:
            return out
        if self.join_late and self.stats.first_local is None:
            at = self.instant(self.next_index, offset)
            behind = (local_now - UNDERRUN - at) / self.frame_seconds
            if behind > 0:
                self.next_index += int(behind) + 1  # the first frame still ahead of us
            self.first_index = self.next_index
        while not self.finished(local_now):
            at = self.instant(self.next_index, offset)
            if at > local_now:
                break
            got = self._buffer.pop(self.next_index, None)
            pcm = None
            # the instant passed before we could write the frame (no start time yet, or the
            # process stalled): a real card played silence then, so the frame is lost. A light
            # speaker has no card to fall behind: its frame counts by whether the packet reached
            # the socket before the instant (the rig's own slowness is not the controller's loss)
            underrun = not self.light and local_now - at > UNDERRUN
            if underrun:
                got = None
            if got is not None and got[1] <= at:
                pcm = self._decode(got[0])
            if pcm is not None:
                self.stats.packets += 1
            else:
                if got is not None and got[1] > at:
                    self.stats.late += 1
                self.stats.lost += 1
                if not underrun:
                    pcm = self._conceal()
            if self.stats.first_local is None:
                self.stats.first_local, self.stats.first_offset = at, offset
            out.append(Frame(self.next_index, at, pcm))
            self.next_index += 1
        return out

    def _decode(self, payload: bytes) -> bytes | None:
        try:
            return self._decoder.decode(payload)
        except InvalidInput:  # authentic but undecodable: played as a lost frame
            return None

    def _conceal(self) -> bytes | None:
        """A stand-in for the lost frame next_index, counted; None when the codec has none."""
        nxt = self._buffer.get(self.next_index + 1)
        try:
            pcm = self._decoder.conceal(nxt[0] if nxt else None)
        except InvalidInput:  # the next packet's FEC is undecodable: plain concealment
            nxt, pcm = None, self._decoder.conceal(None)
        if pcm is not None:
            self.stats.concealed += 1
            if nxt is not None and self._decoder.fec:
                self.stats.fec += 1
        return pcm

    def finished(self, local_now: float) -> bool:
        """True when the stream has ended, been stopped, never started, or gone silent too long."""
        if self.stopped:
            return True
        if self.base_time is None:
            return self.armed_at is not None and local_now - self.armed_at > ARM_TIMEOUT
        if self.end_index is not None and self.next_index >= self.end_index:
            return True
        if self.end_index is None and not self._buffer and self.stats.first_local is not None:
            idle_since = max(self.last_arrival or 0.0, self.stats.first_local)
            return local_now - idle_since > self.idle_end
        return False


class _Silence:
    """The decoder of a light speaker: 20 ms of silence for any payload, nothing concealed."""

    fec = False

    def __init__(self, rate: int) -> None:
        self._frame = bytes(2 * rate * FRAME_MS // 1000)

    def decode(self, payload: bytes) -> bytes:
        """Silence of one frame's length."""
        return self._frame

    def conceal(self, next_payload: bytes | None = None) -> bytes | None:
        """Nothing: a lost frame stays lost."""
        return None
