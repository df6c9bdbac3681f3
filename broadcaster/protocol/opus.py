"""Opus for our own endpoint: 20 ms wideband speech frames with in-band FEC; pure, no I/O.

Encoding goes through PyAV (FFmpeg's libopus encoder). Decoding cannot: FFmpeg's libopus
decoder always calls `opus_decode(..., decode_fec=0)`, always outputs 48 kHz, and treats an
empty packet as end of stream, so the in-band FEC of the next packet is out of reach through
PyAV. The decoder therefore calls libopus itself (ctypes), preferring the very library PyAV's
wheel bundles (`av.libs/libopus-*.so*`) and else the system's `libopus.so.0`: that gives FEC
recovery, native packet-loss concealment and native 16 kHz output. If no libopus can be loaded
it falls back to PyAV's decoder, which conceals a loss (PLC) when fed a TOC-only packet (a
zero-length frame, RFC 6716 §3.2.1) but cannot use FEC; `OpusDecoder.fec` says which it is.

On the wire (RFC 7587): dynamic payload type (111 here), RTP clock **48000 even for 16 kHz
audio**, so the RTP timestamp advances by `TIMESTAMP_STEP` = 960 per 20 ms frame (not 320), and
the SDP says `opus/48000/2` whatever the channel count. Decoded audio lags the input by
`OpusEncoder.delay` samples (the encoder's look-ahead, 104 at 16 kHz = 6.5 ms): a playout that
mixes Opus and PCMU speakers in one broadcast should start the Opus stream that much earlier.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import glob
import os
from fractions import Fraction
from typing import Any

import av

from broadcaster.errors import InvalidInput

PAYLOAD_TYPE = 111  # dynamic; what WebRTC stacks customarily use for Opus
RTP_CLOCK = 48000  # RFC 7587 §4.1: always 48 kHz, whatever the audio's sample rate
FRAME_MS = 20
TIMESTAMP_STEP = RTP_CLOCK * FRAME_MS // 1000  # 960
SDP_RTPMAP = f"{PAYLOAD_TYPE} opus/48000/2"  # RFC 7587 §7: always "/2", even for mono
RATES = (8000, 12000, 16000, 24000, 48000)


def sdp_fmtp(rate: int = 16000, fec: bool = True) -> str:
    """The SDP a=fmtp value announcing mono speech at `rate` with or without in-band FEC."""
    return (
        f"{PAYLOAD_TYPE} minptime=20;ptime=20;stereo=0;useinbandfec={int(fec)};"
        f"maxplaybackrate={rate};sprop-maxcapturerate={rate}"
    )


def _check_rate(rate: int) -> None:
    if rate not in RATES:
        raise InvalidInput(
            f"opus rate {rate}: use one of {', '.join(map(str, RATES))}", code="opus_rate"
        )


class OpusEncoder:
    """One stream's encoder: 20 ms of mono s16le PCM in, one Opus packet out."""

    def __init__(
        self,
        rate: int = 16000,
        bitrate: int = 24000,
        fec: bool = True,
        expected_loss: int = 5,
        vbr: str = "on",
    ) -> None:
        _check_rate(rate)
        self.rate = rate
        self.frame_samples = rate * FRAME_MS // 1000
        ctx: Any = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = rate
        ctx.format = "s16"
        ctx.layout = "mono"
        ctx.bit_rate = bitrate
        ctx.time_base = Fraction(1, rate)
        # voip = SILK for wideband speech: the only mode that carries in-band FEC (LBRR)
        ctx.options = {
            "application": "voip",
            "frame_duration": str(FRAME_MS),
            "fec": "1" if fec else "0",
            "packet_loss": str(int(expected_loss)),
            "vbr": vbr,
        }
        ctx.open()
        self._ctx = ctx
        self._pts = 0
        extra = bytes(ctx.extradata or b"")
        pre_skip = int.from_bytes(extra[10:12], "little") if len(extra) >= 12 else 312
        self.delay = pre_skip * rate // 48000  # OpusHead pre-skip is counted at 48 kHz

    def encode(self, pcm: bytes) -> bytes:
        """Encode exactly one 20 ms frame of mono s16le PCM into one Opus packet."""
        if len(pcm) != self.frame_samples * 2:
            raise InvalidInput(
                f"opus frame of {len(pcm)} bytes: expected "
                f"{self.frame_samples * 2} (20 ms at {self.rate} Hz)",
                code="opus_frame",
            )
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.frame_samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += self.frame_samples
        packets = self._ctx.encode(frame)
        if len(packets) != 1:  # libopus has no frame reordering: one in, one out
            raise RuntimeError(f"libopus returned {len(packets)} packets for one frame")
        return bytes(packets[0])


class _LibOpus:
    """libopus's own decoder through ctypes: FEC, PLC and native output rate."""

    def __init__(self, lib: ctypes.CDLL, rate: int) -> None:
        err = ctypes.c_int()
        self._lib = lib
        self._dec = lib.opus_decoder_create(rate, 1, ctypes.byref(err))
        if not self._dec or err.value:
            raise RuntimeError(f"opus_decoder_create failed ({err.value})")
        self._n = rate * FRAME_MS // 1000
        self._buf = (ctypes.c_int16 * self._n)()

    def decode(self, data: bytes | None, fec: bool) -> bytes:
        n = self._lib.opus_decode(
            self._dec, data, len(data) if data else 0, self._buf, self._n, int(fec)
        )
        if n < 0:
            raise InvalidInput(f"opus packet undecodable (libopus error {n})", code="opus_packet")
        return bytes(self._buf)[: n * 2]

    def close(self) -> None:
        if self._dec:
            self._lib.opus_decoder_destroy(self._dec)
            self._dec = None

    __del__ = close


class _PyAvOpus:
    """FFmpeg's libopus decoder through PyAV: PLC only, 48 kHz decimated to the stream's rate."""

    def __init__(self, rate: int) -> None:
        ctx: Any = av.CodecContext.create("libopus", "r")
        ctx.sample_rate = 48000
        ctx.layout = "mono"
        ctx.format = "s16"
        self._ctx = ctx
        self._step = 48000 // rate
        self._toc = 0x48  # SILK wideband 20 ms, replaced by each packet's own TOC

    def decode(self, data: bytes | None, fec: bool) -> bytes:
        if data:
            self._toc = data[0] & 0xFC  # code 0: one frame
        else:  # a TOC-only packet is a zero-length frame: libopus conceals it
            data = bytes([self._toc])
        try:
            frames = self._ctx.decode(av.Packet(data))
        except av.FFmpegError as exc:
            raise InvalidInput(f"opus packet undecodable ({exc})", code="opus_packet") from exc
        out = b"".join(bytes(f.planes[0])[: f.samples * 2] for f in frames)
        # The stream was encoded from `rate` Hz, so it holds nothing above rate/2: keeping
        # every 48000/rate-th sample aliases nothing and keeps frames exactly 20 ms long.
        return array.array("h", out)[:: self._step].tobytes()

    def close(self) -> None:
        pass


def _load_libopus() -> ctypes.CDLL | None:
    """The libopus PyAV bundles, else the system's; None when neither loads."""
    bundled = sorted(glob.glob(os.path.dirname(av.__file__) + ".libs/libopus-*.so*"))
    for path in bundled + [ctypes.util.find_library("opus") or ""]:
        if not path:
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [
            ctypes.c_int32,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int32,
            ctypes.POINTER(ctypes.c_int16),
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        return lib
    return None


_LIB: list[ctypes.CDLL | None] = []  # loaded once per process


def libopus() -> ctypes.CDLL | None:
    """The libopus used for decoding (cached), or None if only PyAV's decoder is available."""
    if not _LIB:
        _LIB.append(_load_libopus())
    return _LIB[0]


class OpusDecoder:
    """One stream's decoder: a packet, or a lost frame concealed, to 20 ms of mono s16le PCM."""

    def __init__(self, rate: int = 16000, backend: str = "auto") -> None:
        _check_rate(rate)
        if backend not in ("auto", "libopus", "pyav"):
            raise InvalidInput(
                f"opus backend {backend!r}: use auto, libopus or pyav", code="opus_backend"
            )
        self.rate = rate
        self.frame_bytes = rate * FRAME_MS // 1000 * 2
        lib = libopus() if backend != "pyav" else None
        if backend == "libopus" and lib is None:
            raise RuntimeError("libopus cannot be loaded (neither PyAV's copy nor the system's)")
        self._impl: _LibOpus | _PyAvOpus = _LibOpus(lib, rate) if lib else _PyAvOpus(rate)
        self.fec = lib is not None  # whether conceal() can use the next packet's FEC

    def decode(self, payload: bytes) -> bytes:
        """Decode one received packet into 20 ms of PCM."""
        if not payload:
            raise InvalidInput("empty opus payload", code="opus_packet")
        return self._fit(self._impl.decode(payload, False))

    def conceal(self, next_payload: bytes | None = None) -> bytes:
        """20 ms for a lost frame: rebuilt from the next packet's FEC if given, else concealed."""
        if next_payload and self.fec:
            return self._fit(self._impl.decode(next_payload, True))
        return self._fit(self._impl.decode(None, False))

    def close(self) -> None:
        """Free the native decoder state."""
        self._impl.close()

    def _fit(self, pcm: bytes) -> bytes:
        # a 20 ms stream decodes to 20 ms; pad or trim so a stray packet never shifts playout
        n = self.frame_bytes
        return pcm[:n] if len(pcm) >= n else pcm + bytes(n - len(pcm))
