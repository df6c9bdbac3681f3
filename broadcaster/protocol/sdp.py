"""SDP (RFC 4566) of one broadcast's stream, so standard receivers (ffmpeg, VLC) can play it."""

from __future__ import annotations

from broadcaster.protocol.codecs import Codec
from broadcaster.protocol.srtp import sdp_crypto


def stream_sdp(
    codec: Codec, host: str, port: int, key: bytes | None = None, name: str = "broadcaster"
) -> str:
    """An SDP for an RTP (or, with a key, SRTP with a=crypto) stream arriving at host:port."""
    proto = "RTP/SAVP" if key else "RTP/AVP"
    lines = [
        "v=0",
        f"o=- 0 0 IN IP4 {host}",
        f"s={name}",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} {proto} {codec.payload_type}",
        f"a=rtpmap:{codec.sdp_rtpmap()}",
        "a=ptime:20",
        "a=recvonly",
    ]
    if key:
        lines.append(f"a=crypto:{sdp_crypto(key)}")
    return "\r\n".join(lines) + "\r\n"
