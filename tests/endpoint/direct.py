"""Driving real endpoints by hand, as a controller (or a buggy one) would: signed /play, /stop and
/status over HTTP, and an SRTP stream paced in real time over real UDP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from broadcaster.drivers.bcspeaker.link import SpeakerLink
from broadcaster.endpoint.speaker import Speaker, SpeakerSpec, Ticker
from broadcaster.protocol.auth import wrap_key
from broadcaster.protocol.codecs import PCMU
from broadcaster.protocol.srtp import new_key
from broadcaster.protocol.stream import Destination, RtpSender

LEAD = 0.1


@asynccontextmanager
async def endpoints(n: int, record: Path | None = None, **spec):
    """n real endpoints in this process (their own sockets and control APIs), and a link to them."""
    keys = {f"s{i}": secrets.token_bytes(32) for i in range(n)}
    speakers = [
        Speaker(SpeakerSpec(sid, "horn", key, "t", record_dir=record, **spec))
        for sid, key in keys.items()
    ]
    for sp in speakers:
        await sp.start()
    ticker = asyncio.ensure_future(Ticker(speakers).run())
    link = SpeakerLink(keys)
    try:
        yield speakers, link
    finally:
        ticker.cancel()
        await link.close()
        for sp in speakers:
            await sp.close()


async def call(link: SpeakerLink, sp: Speaker, method: str, path: str, body: dict | None = None):
    """One signed request to an in-process endpoint."""
    return await link.call(sp.spec.speaker_id, sp.spec.host, sp.control_port, method, path, body)


@dataclass
class Stream:
    """One broadcast sent by hand to some endpoints (unicast to each)."""

    bid: str
    priority: int
    speakers: list[Speaker]
    sender: RtpSender = field(init=False)
    sock: socket.socket = field(init=False)
    base_time: float = 0.0
    sent: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sender = RtpSender(PCMU, self.sock.sendto, key=new_key())
        for sp in self.speakers:
            h, p = sp.spec.host, sp.rtp_port
            self.sender.destinations.append(Destination((h, p), (h, p + 1)))

    def body(self, sp: Speaker) -> dict:
        """The /play request for one endpoint."""
        s = self.sender
        return {
            "broadcast": self.bid,
            "codec": "PCMU",
            "ssrc": s.ssrc,
            "base_ts": s.base_ts,
            "base_time": None,
            "priority": self.priority,
            "volume": 100,
            "key": wrap_key(sp.spec.key, s.key, f"{sp.spec.speaker_id}/{self.bid}"),
            "multicast": None,
        }

    def start(self) -> None:
        """Fix frame 0 a lead ahead and send the first sender reports."""
        self.base_time = time.time() + LEAD
        self.sender.start(self.base_time, time.time())

    async def send(self, pcm: bytes, frames: int | None = None) -> int:
        """Send `pcm` frame by frame, each a lead before its instant; returns frames sent."""
        step = PCMU.frame_samples * 2
        total = len(pcm) // step if frames is None else frames
        for n in range(self.sent, self.sent + total):
            wait = self.base_time + n * 0.02 - LEAD - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            chunk = pcm[(n * step) % len(pcm) : (n * step) % len(pcm) + step]
            self.sender.frame(n, chunk, time.time())
        self.sent += total
        return total

    def end(self) -> None:
        """The final report and BYE."""
        self.sender.end(self.sent, time.time())

    def close(self) -> None:
        """Close the sending socket."""
        self.sock.close()


def udp_sockets(pid: int | str = "self") -> int:
    """How many UDP sockets a process holds (its fds that /proc/net/udp lists)."""
    with open("/proc/net/udp") as fh:
        udp = {line.split()[9] for line in fh.readlines()[1:]}
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in udp:
            n += 1
    return n
