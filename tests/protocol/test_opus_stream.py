"""Opus through the sender and the playout: timestamps on the 48 kHz RTP clock, one stateful
encoder and decoder per stream, and a lost frame concealed (FEC when the next packet is in)."""

from __future__ import annotations

import random

import pytest

from broadcaster.protocol import opus
from broadcaster.protocol.codecs import L16_16K, OPUS, PCMU, codec_by_name
from broadcaster.protocol.playout import Playout
from broadcaster.protocol.rtp import RtpPacket, SenderReport, parse_rtcp
from broadcaster.protocol.stream import Destination, RtpSender
from tests.protocol.test_opus import FRAME, RATE, best_alignment, speech  # noqa: F401

DEST = Destination(("127.0.0.1", 5004), ("127.0.0.1", 5005))


def test_opus_codec_and_unchanged_pcmu_l16():
    assert codec_by_name("opus") is OPUS and codec_by_name("OPUS") is OPUS
    assert (OPUS.payload_type, OPUS.rate, OPUS.rtp_clock, OPUS.ts_step) == (111, 16000, 48000, 960)
    assert OPUS.frame_samples == 320 and OPUS.pcm_frame_bytes == 640 and OPUS.stateful
    assert (PCMU.rtp_clock, PCMU.ts_step, PCMU.frame_samples) == (8000, 160, 160)
    assert (L16_16K.rtp_clock, L16_16K.ts_step) == (16000, 320)
    assert not PCMU.stateful and not L16_16K.stateful
    assert OPUS.sdp_rtpmap() == "111 opus/48000/2" and PCMU.sdp_rtpmap() == "0 PCMU/8000"
    assert PCMU.decoder().conceal(b"x") is None  # PCMU: a lost frame stays silence


def stream(pcm: bytes, codec=OPUS) -> tuple[RtpSender, list[RtpPacket], list[SenderReport]]:
    """Send `pcm` through a plain-RTP sender; the packets and reports it put on the wire."""
    wire: list[tuple[bytes, tuple]] = []
    s = RtpSender(codec, lambda d, a: wire.append((d, a)), destinations=[DEST])
    s.start(1000.0, 999.0)
    step = codec.pcm_frame_bytes
    for n in range(len(pcm) // step):
        s.frame(n, pcm[n * step : (n + 1) * step], 999.0 + n * 0.02)
    s.end(len(pcm) // step, 1010.0)
    pkts = [RtpPacket.parse(d) for d, a in wire if a == DEST.rtp]
    srs = [
        p for d, a in wire if a == DEST.rtcp for p in parse_rtcp(d) if isinstance(p, SenderReport)
    ]
    return s, pkts, srs


def test_sender_steps_timestamps_by_960_and_counts_octets(speech):  # noqa: F811
    pcm = speech[: 50 * FRAME]
    s, pkts, srs = stream(pcm)
    assert len(pkts) == 50 and all(p.payload_type == 111 for p in pkts)
    assert [(p.timestamp - s.base_ts) & 0xFFFFFFFF for p in pkts] == [960 * n for n in range(50)]
    assert s.octets == sum(len(p.payload) for p in pkts)
    assert 30 <= s.octets / 50 <= 75  # 24 kbit/s is 60 bytes per 20 ms
    assert (srs[-1].rtp_timestamp - s.base_ts) & 0xFFFFFFFF == 960 * 50  # the end, in 48 kHz
    _, pcmu, _ = stream(pcm[: 10 * 320], PCMU)  # PCMU: still 160 per frame
    assert [(p.timestamp - pcmu[0].timestamp) & 0xFFFFFFFF for p in pcmu] == [
        160 * n for n in range(10)
    ]


def play(codec, pkts, srs, base_ts, ssrc, lost: set[int]) -> tuple[Playout, bytes]:
    """Feed a playout everything but `lost`, all on time; play it out; the PCM it played."""
    po = Playout("b", codec, ssrc, base_ts, None)
    for sr in srs[:1]:
        po.on_sender_report(sr)
    assert po.base_time == pytest.approx(1000.0)
    for sr in srs[-1:]:
        po.on_sender_report(sr, final=True)
    assert po.end_index == len(pkts)
    for n, p in enumerate(pkts):
        if n not in lost:
            assert po.on_packet(p, 990.0) == "buffered"
    out = []
    for n in range(len(pkts)):
        out += po.due(1000.0 + n * 0.02, 0.0)
    assert [f.index for f in out] == list(range(len(pkts)))
    return po, b"".join(f.pcm or bytes(codec.pcm_frame_bytes) for f in out)


@pytest.mark.skipif(not opus.libopus(), reason="FEC needs libopus")
def test_playout_decodes_in_order_and_conceals_losses(speech):  # noqa: F811
    s, pkts, srs = stream(speech)
    clean_po, clean = play(OPUS, pkts, srs, s.base_ts, s.ssrc, set())
    assert clean_po.stats.packets == len(pkts) and clean_po.stats.concealed == 0
    delay = opus.OpusEncoder(RATE).delay
    score, _ = best_alignment(speech, clean, delay)
    assert score >= 0.9, score

    rng = random.Random(5)
    lost = {n for n in range(len(pkts)) if rng.random() < 0.05}
    po, heard = play(OPUS, pkts, srs, s.base_ts, s.ssrc, lost)
    st = po.stats
    assert st.lost == st.concealed == len(lost) and st.packets == len(pkts) - len(lost)
    # FEC whenever the next packet was in the buffer, PLC otherwise
    assert st.fec == sum(1 for n in lost if n + 1 < len(pkts) and n + 1 not in lost)
    score_lossy, _ = best_alignment(speech, heard, delay)
    assert score_lossy >= 0.9, score_lossy


def test_pcmu_loss_is_still_silence_not_concealed():
    pcm = bytes(range(256)) * 25  # 6400 bytes = 20 frames at 8 kHz
    s, pkts, srs = stream(pcm[: 20 * 320], PCMU)
    po, _ = play(PCMU, pkts, srs, s.base_ts, s.ssrc, {3, 7})
    assert (po.stats.lost, po.stats.concealed, po.stats.fec) == (2, 0, 0)
