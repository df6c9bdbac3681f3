"""RTP and RTCP packets (RFC 3550): parse from bytes, serialize with bytes(); no I/O."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

RTP_VERSION = 2
RTCP_SR = 200
RTCP_BYE = 203
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


class PacketError(ValueError):
    """Bytes that are not a well-formed RTP or RTCP packet."""


def unix_to_ntp(t: float) -> int:
    """64-bit NTP timestamp for a Unix time in seconds."""
    secs = int(t) + NTP_EPOCH_OFFSET
    frac = int((t - int(t)) * (1 << 32)) & 0xFFFFFFFF
    return (secs << 32) | frac


def ntp_to_unix(ntp: int) -> float:
    """Unix time in seconds for a 64-bit NTP timestamp."""
    return (ntp >> 32) - NTP_EPOCH_OFFSET + (ntp & 0xFFFFFFFF) / (1 << 32)


@dataclass(slots=True)
class RtpPacket:
    """One RTP data packet; header extensions and CSRCs are kept as parsed."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one RTP packet; raises PacketError on anything malformed."""
        if len(data) < 12:
            raise PacketError(f"RTP packet too short ({len(data)} bytes)")
        b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
        if b0 >> 6 != RTP_VERSION:
            raise PacketError(f"RTP version {b0 >> 6}, expected 2")
        if b0 & 0x10:
            raise PacketError("RTP header extensions are not used by this protocol")
        cc = b0 & 0x0F
        pos = 12 + 4 * cc
        if len(data) < pos:
            raise PacketError("RTP packet truncated in CSRC list")
        # (no CSRCs, as from every sender of ours: a simulator parses 50,000 packets a second)
        csrc = list(struct.unpack_from(f"!{cc}I", data, 12)) if cc else []
        end = len(data)
        if b0 & 0x20:
            pad = data[-1]
            if pad == 0 or pad > end - pos:
                raise PacketError("RTP padding length is invalid")
            end -= pad
        pt = b1 & 0x7F
        if 72 <= pt <= 76:
            raise PacketError("payload type in RTCP range")
        return cls(pt, seq, ts, ssrc, bytes(data[pos:end]), bool(b1 & 0x80), csrc)

    def __bytes__(self) -> bytes:
        b0 = (RTP_VERSION << 6) | len(self.csrc)
        b1 = (0x80 if self.marker else 0) | self.payload_type
        head = struct.pack(
            "!BBHII", b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
        )
        return head + struct.pack(f"!{len(self.csrc)}I", *self.csrc) + self.payload


@dataclass
class SenderReport:
    """RTCP SR: maps an RTP timestamp to a wall-clock (NTP) instant; carries the sender's counts."""

    ssrc: int
    ntp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int

    @property
    def unix_time(self) -> float:
        """The SR's wall-clock instant as Unix seconds."""
        return ntp_to_unix(self.ntp)

    def __bytes__(self) -> bytes:
        return struct.pack(
            "!BBHIQIII",
            0x80,
            RTCP_SR,
            6,
            self.ssrc,
            self.ntp,
            self.rtp_timestamp & 0xFFFFFFFF,
            self.packet_count,
            self.octet_count,
        )


@dataclass
class Bye:
    """RTCP BYE: the source has ended its stream."""

    ssrc: int

    def __bytes__(self) -> bytes:
        return struct.pack("!BBHI", 0x81, RTCP_BYE, 1, self.ssrc)


def parse_rtcp(data: bytes) -> list[SenderReport | Bye]:
    """Parse a compound RTCP packet into the SR and BYE parts this protocol uses; skips others."""
    out: list[SenderReport | Bye] = []
    pos = 0
    if len(data) < 4:
        raise PacketError("RTCP packet too short")
    while pos + 4 <= len(data):
        b0, pt, length = struct.unpack_from("!BBH", data, pos)
        if b0 >> 6 != RTP_VERSION:
            raise PacketError(f"RTCP version {b0 >> 6}, expected 2")
        size = 4 * (length + 1)
        if pos + size > len(data):
            raise PacketError("RTCP packet truncated")
        if pt == RTCP_SR:
            if size < 28:
                raise PacketError("RTCP SR too short")
            ssrc, ntp, rts, pc, oc = struct.unpack_from("!IQIII", data, pos + 4)
            out.append(SenderReport(ssrc, ntp, rts, pc, oc))
        elif pt == RTCP_BYE and (b0 & 0x1F) >= 1:
            out.append(Bye(struct.unpack_from("!I", data, pos + 4)[0]))
        pos += size
    if pos != len(data):
        raise PacketError("RTCP compound packet has trailing bytes")
    return out


def is_rtcp(data: bytes) -> bool:
    """True when the bytes look like RTCP (RFC 5761 payload-type test)."""
    return len(data) >= 2 and 192 <= data[1] <= 223
