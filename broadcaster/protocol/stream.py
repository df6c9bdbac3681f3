"""Sends one broadcast as SRTP: paced 20 ms packets, protected once, fanned out to every destination.

Frame n carries RTP timestamp base_ts + n * frame_samples and must play at controller time
base_time + n * 20 ms on every speaker; it is sent `lead` seconds before that. Sender reports
every second repeat the mapping; the last report, bundled with a BYE, gives the packet count.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from broadcaster.protocol.codecs import FRAME_MS, Codec
from broadcaster.protocol.rtp import Bye, RtpPacket, SenderReport, unix_to_ntp
from broadcaster.protocol.srtp import Sender

log = logging.getLogger(__name__)
SR_INTERVAL = 1.0
SR_EARLY = 0.1  # a report every 100 ms in the first second: a speaker cannot start without one


@dataclass
class Destination:
    """Where the stream goes: RTP address, and RTCP address (the next port, or the same when muxed)."""

    rtp: tuple[str, int]
    rtcp: tuple[str, int]


@dataclass
class Stream:
    """The sending side of one broadcast."""

    codec: Codec
    key: bytes
    base_time: float
    send: Callable[[bytes, tuple[str, int]], None]
    destinations: list[Destination] = field(default_factory=list)
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    base_ts: int = field(default_factory=lambda: random.getrandbits(32))
    seq0: int = field(default_factory=lambda: random.getrandbits(16))
    lead: float = 0.1
    sent: int = 0
    octets: int = 0
    stopped: bool = False

    def __post_init__(self) -> None:
        self._srtp = Sender(self.key)

    def _send_all(self, data: bytes, rtcp: bool) -> None:
        for d in self.destinations:
            try:
                self.send(data, d.rtcp if rtcp else d.rtp)
            except OSError as exc:  # one unreachable destination must not stop the others
                log.debug("send to %s failed: %s", d, exc)

    def _report(self, final: bool = False) -> None:
        n = self.sent
        ts = self.base_ts + n * self.codec.frame_samples
        sr = SenderReport(self.ssrc, unix_to_ntp(self.base_time + n * FRAME_MS / 1000),
                          ts & 0xFFFFFFFF, n, self.octets)
        raw = bytes(sr) + (bytes(Bye(self.ssrc)) if final else b"")
        self._send_all(self._srtp.rtcp(raw), rtcp=True)

    async def run(self, frames: AsyncIterator[bytes]) -> None:
        """Send every PCM frame from the iterator at its time, then the final report and BYE."""
        step = FRAME_MS / 1000
        for _ in range(2):  # the mapping goes out before the first packet, twice against loss
            self._report()
        next_sr = time.time() + SR_EARLY
        early_until = self.base_time + SR_INTERVAL
        async for pcm in frames:
            if self.stopped:
                break
            due = self.base_time - self.lead + self.sent * step
            wait = due - time.time()
            if wait > 0.0005:
                await asyncio.sleep(wait)
            if self.stopped:
                break
            pkt = RtpPacket(self.codec.payload_type, (self.seq0 + self.sent) & 0xFFFF,
                            (self.base_ts + self.sent * self.codec.frame_samples) & 0xFFFFFFFF,
                            self.ssrc, self.codec.encode(pcm), marker=self.sent == 0)
            self._send_all(self._srtp.rtp(bytes(pkt)), rtcp=False)
            self.sent += 1
            self.octets += len(pkt.payload)
            now = time.time()
            if now >= next_sr:
                self._report()
                next_sr = now + (SR_EARLY if now < early_until else SR_INTERVAL)
        for _ in range(3):  # the end report is repeated: RTCP has no retransmission
            self._report(final=True)
            await asyncio.sleep(0.02)
