"""Audio codecs for the speaker link: G.711 µ-law (PCMU), linear 16-bit (L16), Opus; no I/O.

PCMU and L16 are stateless: `Codec.encode`/`decode` map one frame alone. Opus is not (its
encoder and decoder carry state from frame to frame, and a lost frame is rebuilt from what came
before or after), so every stream takes its own `encoder()` and `decoder()`; PCMU and L16 hand
out thin stateless ones, so the sender and the playout treat all codecs alike. The RTP clock
is the sample rate, except for Opus (RFC 7587: 48 kHz whatever the audio's rate), so RTP
timestamps advance by `ts_step` per 20 ms frame, not by `frame_samples`.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Protocol

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # Python 3.13+: provided by the audioop-lts package

from broadcaster.errors import InvalidInput

FRAME_MS = 20


@dataclass(frozen=True)
class Codec:
    """A payload format: RTP payload type, clock rate and how 20 ms of PCM maps to bytes."""

    name: str
    payload_type: int
    rate: int
    sample_bytes: int  # encoded bytes per sample (0: variable, Opus)
    clock: int = 0  # the RTP clock when it is not the sample rate (Opus: 48000)

    @property
    def rtp_clock(self) -> int:
        """RTP timestamp units per second."""
        return self.clock or self.rate

    @property
    def ts_step(self) -> int:
        """RTP timestamp units per 20 ms frame (= frame_samples unless the clock differs)."""
        return self.rtp_clock * FRAME_MS // 1000

    @property
    def stateful(self) -> bool:
        """True when frames must go through one encoder/decoder per stream, in order."""
        return self.name == "opus"

    def encoder(self) -> FrameEncoder:
        """A fresh encoder for one stream."""
        if self.name == "opus":
            from broadcaster.protocol.opus import OpusEncoder  # PyAV loads only when used

            return OpusEncoder(self.rate, bitrate=OPUS_BITRATE, fec=True)
        return _Stateless(self)

    def decoder(self) -> FrameDecoder:
        """A fresh decoder for one stream."""
        if self.name == "opus":
            from broadcaster.protocol.opus import OpusDecoder

            return OpusDecoder(self.rate)
        return _Stateless(self)

    @property
    def frame_samples(self) -> int:
        """Samples in one 20 ms frame."""
        return self.rate * FRAME_MS // 1000

    @property
    def pcm_frame_bytes(self) -> int:
        """Bytes of s16le PCM in one 20 ms frame."""
        return self.frame_samples * 2

    def encode(self, pcm: bytes) -> bytes:
        """Encode mono s16le PCM (host order little-endian) into the payload (stateless codecs)."""
        if self.name == "PCMU":
            return audioop.lin2ulaw(pcm, 2)
        if self.name == "L16":
            return audioop.byteswap(pcm, 2) if sys.byteorder == "little" else pcm
        raise ValueError(self.name)

    def decode(self, payload: bytes) -> bytes:
        """Decode a payload back to mono s16le PCM."""
        if self.name == "PCMU":
            return audioop.ulaw2lin(payload, 2)
        if self.name == "L16":
            return audioop.byteswap(payload, 2) if sys.byteorder == "little" else payload
        raise ValueError(self.name)

    def sdp_rtpmap(self) -> str:
        """The SDP a=rtpmap value for this codec."""
        if self.name == "opus":
            return f"{self.payload_type} opus/48000/2"  # RFC 7587 §7: always 48000/2
        return f"{self.payload_type} {self.name}/{self.rate}" + ("/1" if self.name == "L16" else "")


PCMU = Codec("PCMU", 0, 8000, 1)
# RFC 3551 fixes L16 payload types 10/11 at 44.1 kHz; 16 kHz mono takes a dynamic type.
L16_16K = Codec("L16", 96, 16000, 2)
# Opus (protocol/opus.py): 16 kHz mono speech, 24 kbit/s, in-band FEC; dynamic payload type 111,
# RTP clock 48 kHz (960 per frame). Our endpoint only: plain RTP speakers get PCMU.
OPUS_BITRATE = 24000
OPUS = Codec("opus", 111, 16000, 0, clock=48000)

CODECS = {"pcmu": PCMU, "l16": L16_16K, "opus": OPUS}


class FrameEncoder(Protocol):
    """One stream's encoder: 20 ms of PCM in, one payload out, frames in order."""

    def encode(self, pcm: bytes) -> bytes:
        """One payload for one 20 ms frame."""
        ...


class FrameDecoder(Protocol):
    """One stream's decoder: payloads in play order; a lost frame may be concealed."""

    fec: bool  # conceal(next) rebuilds a lost frame from the next packet's redundancy

    def decode(self, payload: bytes) -> bytes:
        """20 ms of PCM from one payload."""
        ...

    def conceal(self, next_payload: bytes | None = None) -> bytes | None:
        """20 ms standing in for a lost frame, or None when the codec cannot (silence)."""
        ...


class _Stateless:
    """Encoder and decoder of a stateless codec: each frame alone, a lost frame is silence."""

    fec = False

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def encode(self, pcm: bytes) -> bytes:
        return self.codec.encode(pcm)

    def decode(self, payload: bytes) -> bytes:
        return self.codec.decode(payload)

    def conceal(self, next_payload: bytes | None = None) -> bytes | None:
        return None


def codec_by_name(name: str) -> Codec:
    """Look up a codec by its wire name (pcmu, l16, opus)."""
    try:
        return CODECS[name.lower()]
    except KeyError:
        raise InvalidInput(
            f"unknown codec {name!r}; choose one of {', '.join(CODECS)}", code="unknown_codec"
        ) from None


def frames(pcm: bytes, codec: Codec) -> list[bytes]:
    """Split PCM into 20 ms frames, padding the last with silence."""
    step = codec.pcm_frame_bytes
    out = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    if out and len(out[-1]) < step:
        out[-1] = out[-1] + bytes(step - len(out[-1]))
    return out
