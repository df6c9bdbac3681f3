"""The sending side of one RTP stream: packets and sender reports for frames the core hands it.

Frame n carries RTP timestamp base_ts + n * ts_step (frame_samples; 960 for Opus, whose RTP clock
is 48 kHz) and plays at controller time base_time + n * 20 ms on every in-step speaker. The
sender does no pacing and no I/O of its own: the core calls `frame()` at the right moment and
`send` puts the bytes on the wire. With an SRTP key every packet is protected (our endpoint);
without one it is plain RTP (paging speakers). Each sender has its own encoder (Opus is
stateful), so one broadcast stream is encoded once however many speakers it fans out to.
Sender reports repeat the RTP-time-to-controller-time mapping: every 100 ms in the first second
(a speaker cannot start without one), then every second. The final report, bundled with a BYE,
carries the stream's end as its RTP timestamp and the packets actually sent as its count.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from broadcaster.protocol.codecs import FRAME_MS, Codec
from broadcaster.protocol.rtp import Bye, RtpPacket, SenderReport, unix_to_ntp
from broadcaster.protocol.srtp import Sender as SrtpSender

log = logging.getLogger(__name__)
SR_INTERVAL = 1.0
SR_EARLY = 0.1


@dataclass
class Destination:
    """Where the stream goes: RTP address, and RTCP address (next port, or the same when muxed)."""

    rtp: tuple[str, int]
    rtcp: tuple[str, int]


@dataclass
class RtpSender:
    """Packetizes, protects (optionally) and fans out one stream; implements drivers.FrameSender."""

    codec: Codec
    send: Callable[[bytes, tuple[str, int]], None]
    key: bytes | None = None  # SRTP master key and salt; None sends plain RTP
    destinations: list[Destination] = field(default_factory=list)
    # one packet to every address at once (one system call for a thousand speakers), if the
    # driver has it; else `send` for each
    send_many: Callable[[bytes, list[tuple[str, int]]], None] | None = None
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    base_ts: int = field(default_factory=lambda: random.getrandbits(32))
    seq0: int = field(default_factory=lambda: random.getrandbits(16))
    base_time: float = 0.0
    sent: int = 0  # packets sent
    octets: int = 0
    next_index: int = 0  # one past the last frame index handed over
    _next_sr: float = 0.0

    def __post_init__(self) -> None:
        self._srtp = SrtpSender(self.key) if self.key else None
        self._encoder = self.codec.encoder()  # one per stream: Opus carries state across frames

    @property
    def rate(self) -> int:
        """The PCM rate this sender encodes from."""
        return self.codec.rate

    def _send_all(self, data: bytes, rtcp: bool) -> None:
        if self.send_many is not None:
            self.send_many(data, [d.rtcp if rtcp else d.rtp for d in self.destinations])
            return
        for d in self.destinations:
            try:
                self.send(data, d.rtcp if rtcp else d.rtp)
            except OSError as exc:  # one unreachable destination must not stop the others
                log.debug("send to %s failed: %s", d, exc)

    def _report(self, index: int, final: bool = False) -> None:
        ts = self.base_ts + index * self.codec.ts_step
        sr = SenderReport(
            self.ssrc,
            unix_to_ntp(self.base_time + index * FRAME_MS / 1000),
            ts & 0xFFFFFFFF,
            self.sent,
            self.octets,
        )
        raw = bytes(sr) + (bytes(Bye(self.ssrc)) if final else b"")
        self._send_all(self._srtp.rtcp(raw) if self._srtp else raw, rtcp=True)

    def start(self, base_time: float, now: float) -> None:
        """Fix frame 0's instant and send the mapping twice (against loss) before any audio."""
        self.base_time = base_time
        self._report(0)
        self._report(0)
        self._next_sr = now + SR_EARLY

    def frame(self, index: int, pcm: bytes, now: float) -> None:
        """Send frame `index`; a sender report follows when one is due."""
        pkt = RtpPacket(
            self.codec.payload_type,
            (self.seq0 + self.sent) & 0xFFFF,
            (self.base_ts + index * self.codec.ts_step) & 0xFFFFFFFF,
            self.ssrc,
            self._encoder.encode(pcm),
            marker=self.sent == 0,
        )
        raw = bytes(pkt)
        self._send_all(self._srtp.rtp(raw) if self._srtp else raw, rtcp=False)
        self.sent += 1
        self.octets += len(pkt.payload)
        self.next_index = index + 1
        if now >= self._next_sr:
            self._report(self.next_index)
            early = now < self.base_time + SR_INTERVAL
            self._next_sr = now + (SR_EARLY if early else SR_INTERVAL)

    def end(self, frames: int, now: float) -> None:
        """The final report and BYE: the stream ends after `frames` frames."""
        self._report(frames, final=True)
