"""Audio codecs for the speaker link: G.711 µ-law (PCMU) and linear 16-bit (L16); no I/O."""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

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
    sample_bytes: int  # encoded bytes per sample

    @property
    def frame_samples(self) -> int:
        """Samples in one 20 ms frame."""
        return self.rate * FRAME_MS // 1000

    @property
    def pcm_frame_bytes(self) -> int:
        """Bytes of s16le PCM in one 20 ms frame."""
        return self.frame_samples * 2

    def encode(self, pcm: bytes) -> bytes:
        """Encode mono s16le PCM (host order little-endian) into the payload."""
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
        return f"{self.payload_type} {self.name}/{self.rate}" + ("/1" if self.name == "L16" else "")


PCMU = Codec("PCMU", 0, 8000, 1)
# RFC 3551 fixes L16 payload types 10/11 at 44.1 kHz; 16 kHz mono takes a dynamic type.
L16_16K = Codec("L16", 96, 16000, 2)

CODECS = {"pcmu": PCMU, "l16": L16_16K}


def codec_by_name(name: str) -> Codec:
    """Look up a codec by its wire name (pcmu, l16)."""
    try:
        return CODECS[name.lower()]
    except KeyError:
        raise InvalidInput(f"unknown codec {name!r}; choose one of {', '.join(CODECS)}",
                           code="unknown_codec") from None


def frames(pcm: bytes, codec: Codec) -> list[bytes]:
    """Split PCM into 20 ms frames, padding the last with silence."""
    step = codec.pcm_frame_bytes
    out = [pcm[i:i + step] for i in range(0, len(pcm), step)]
    if out and len(out[-1]) < step:
        out[-1] = out[-1] + bytes(step - len(out[-1]))
    return out
