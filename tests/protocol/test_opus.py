"""Opus for our endpoint: Mandarin speech survives the codec, and a 5 % loss is concealed.

The signal is espeak-ng reading a village notice (the voice DOMAIN.md names). Quality is judged
by normalized cross-correlation with the source after aligning for the codec's look-ahead.
"""

from __future__ import annotations

import math
import random
import subprocess
import warnings
import wave
from pathlib import Path

import pytest

from broadcaster.errors import InvalidInput
from broadcaster.protocol import opus
from broadcaster.protocol.opus import OpusDecoder, OpusEncoder
from tests.support.tools import need

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 16000
FRAME = RATE // 50 * 2  # bytes of PCM in 20 ms
NOTICE = "各位村民请注意，防火禁烧，人人有责。今天下午三点在村委会开会，请准时参加。"
BACKENDS = ["libopus", "pyav"] if opus.libopus() else ["pyav"]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> bytes:
    """About 9 s of Mandarin speech at 16 kHz, a whole number of 20 ms frames."""
    need("espeak-ng")
    path: Path = tmp_path_factory.mktemp("opus") / "notice.wav"
    subprocess.run(["espeak-ng", "-v", "cmn-latn-pinyin", "-w", str(path), NOTICE], check=True)
    with wave.open(str(path)) as w:
        pcm, rate = w.readframes(w.getnframes()), w.getframerate()
    pcm, _ = audioop.ratecv(pcm, 2, 1, rate, RATE, None)
    return pcm[: len(pcm) // FRAME * FRAME]


def frames(pcm: bytes) -> list[bytes]:
    """Split PCM into 20 ms frames."""
    return [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]


def dot(a: bytes, b: bytes) -> float:
    """Sum of sample products, in C: (|a+b|² - |a-b|²) / 4 on halved signals (no clipping)."""
    a, b = audioop.mul(a, 2, 0.5), audioop.mul(b, 2, 0.5)
    n = len(a) // 2
    plus = audioop.rms(audioop.add(a, b, 2), 2) ** 2
    minus = audioop.rms(audioop.add(a, audioop.mul(b, 2, -1), 2), 2) ** 2
    return n * (plus - minus)  # = 4 × the dot product of the halves = the dot product


def ncc(source: bytes, decoded: bytes, lag: int) -> float:
    """Normalized cross-correlation of the source with the output `lag` samples later."""
    n = len(source) // 2 - 2 * RATE  # leave room for any lag we try
    x = source[RATE : RATE + n]  # skip the first half second: the codec's start-up
    y = decoded[RATE + 2 * lag : RATE + 2 * lag + n]
    return dot(x, y) / math.sqrt(dot(x, x) * dot(y, y) or 1)


def best_alignment(source: bytes, decoded: bytes, delay: int) -> tuple[float, int]:
    """The best correlation within a few samples of the codec's stated delay, and that lag."""
    return max((ncc(source, decoded, lag), lag) for lag in range(delay - 12, delay + 13))


def encode_all(pcm: bytes, **kw) -> tuple[list[bytes], int]:
    """Encode every frame; also return the encoder's delay in samples."""
    enc = OpusEncoder(RATE, **kw)
    return [enc.encode(f) for f in frames(pcm)], enc.delay


def decode_all(
    packets: list[bytes], backend: str, lost: set[int] = frozenset(), repair: str = "conceal"
) -> bytes:
    """Decode a stream in which `lost` frames never arrived: concealed, FEC'd or silent."""
    dec = OpusDecoder(RATE, backend=backend)
    out = []
    for k, pkt in enumerate(packets):
        if k not in lost:
            out.append(dec.decode(pkt))
        elif repair == "silence":
            out.append(bytes(FRAME))
        else:
            nxt = packets[k + 1] if k + 1 < len(packets) and k + 1 not in lost else None
            out.append(dec.conceal(nxt if repair == "fec" else None))
    dec.close()
    assert all(len(f) == FRAME for f in out), "every frame decodes to exactly 20 ms"
    return b"".join(out)


def losses(n: int, seed: int = 1, rate: float = 0.05) -> set[int]:
    """A fixed random 5 % of frame numbers (never the first few)."""
    rng = random.Random(seed)
    return {k for k in range(3, n) if rng.random() < rate}


@pytest.mark.parametrize("backend", BACKENDS)
def test_speech_survives_the_codec(speech, backend):
    """Wideband speech at 24 kbit/s decodes to something that correlates with the source."""
    packets, delay = encode_all(speech)
    assert delay == 104, "libopus looks 6.5 ms ahead at 16 kHz"
    score, lag = best_alignment(speech, decode_all(packets, backend), delay)
    assert score >= 0.9, f"correlation {score:.3f} at lag {lag}"
    assert abs(lag - delay) <= 2, f"output lags by {lag} samples, the encoder says {delay}"


def test_bytes_per_frame_at_24_kbit():
    """At 24 kbit/s a 20 ms frame is ~60 bytes: exactly with CBR, on average with VBR."""
    tone = b"".join(
        int(8000 * math.sin(2 * math.pi * 300 * i / RATE)).to_bytes(2, "little", signed=True)
        for i in range(RATE * 2)
    )
    cbr, _ = encode_all(tone, vbr="off")
    assert {len(p) for p in cbr[5:]} == {60}


def test_bytes_per_frame_on_speech(speech):
    """VBR on speech averages near the target (pauses cost less, onsets more)."""
    packets, _ = encode_all(speech)
    mean = sum(map(len, packets)) / len(packets)
    assert 40 <= mean <= 75, f"{mean:.1f} bytes per frame"


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_is_concealed_better_than_silence(speech, backend):
    """With 5 % of frames lost, concealment correlates better than gaps of silence."""
    packets, delay = encode_all(speech)
    lost = losses(len(packets))
    assert 15 <= len(lost) <= 45
    silent, _ = best_alignment(speech, decode_all(packets, backend, lost, "silence"), delay)
    hidden, _ = best_alignment(speech, decode_all(packets, backend, lost, "fec"), delay)
    assert hidden > silent, f"concealed {hidden:.3f} vs silence {silent:.3f}"


@pytest.mark.skipif("libopus" not in BACKENDS, reason="no libopus to decode FEC with")
def test_fec_recovers_more_than_concealment(speech):
    """The next packet's in-band FEC rebuilds a lost frame better than guessing it."""
    packets, delay = encode_all(speech)
    lost = losses(len(packets))
    guessed, _ = best_alignment(speech, decode_all(packets, "libopus", lost, "conceal"), delay)
    rebuilt, _ = best_alignment(speech, decode_all(packets, "libopus", lost, "fec"), delay)
    assert rebuilt > guessed, f"FEC {rebuilt:.3f} vs PLC {guessed:.3f}"
    assert rebuilt >= 0.85
    assert OpusDecoder(RATE, backend="libopus").fec
    assert not OpusDecoder(RATE, backend="pyav").fec


def test_rtp_clock_is_48k_even_for_16k_audio():
    """RFC 7587: the RTP timestamp advances 960 per 20 ms frame; SDP says opus/48000/2."""
    assert opus.TIMESTAMP_STEP == 960
    assert opus.SDP_RTPMAP == "111 opus/48000/2"
    assert "useinbandfec=1" in opus.sdp_fmtp(16000)
    assert "maxplaybackrate=16000" in opus.sdp_fmtp(16000)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_names_the_fault(backend):
    """Wrong frame sizes, rates and malformed packets raise InvalidInput with a code."""
    with pytest.raises(InvalidInput) as err:
        OpusEncoder(RATE).encode(bytes(100))
    assert err.value.code == "opus_frame" and "640" in err.value.message
    with pytest.raises(InvalidInput) as err:
        OpusEncoder(44100)
    assert err.value.code == "opus_rate"
    dec = OpusDecoder(RATE, backend=backend)
    for bad in (b"", bytes([0x4B, 0x00])):  # empty; code-3 packet that declares 0 frames
        with pytest.raises(InvalidInput) as err:
            dec.decode(bad)
        assert err.value.code == "opus_packet"
    assert len(dec.decode(OpusEncoder(RATE).encode(bytes(FRAME)))) == FRAME, "still usable"


def test_streams_are_independent(speech):
    """Each stream keeps its own state: interleaving two encoders changes neither's output."""
    a, _ = encode_all(speech[: FRAME * 50])
    enc1, enc2 = OpusEncoder(RATE), OpusEncoder(RATE)
    mixed = []
    for f in frames(speech[: FRAME * 50]):
        mixed.append(enc1.encode(f))
        enc2.encode(bytes(FRAME))
    assert mixed == a
