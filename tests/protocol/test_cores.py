"""Dense tests of the pure cores: RTP/RTCP packets, codecs, playout, clock estimate, auth."""

from __future__ import annotations

import base64
import math
import os
import struct
import warnings

import pytest

import broadcaster.protocol.clock as clk
from broadcaster.errors import AuthError
from broadcaster.protocol.auth import WRAP_NONCE, ReplayGuard, sign_request, unwrap_key, wrap_key
from broadcaster.protocol.codecs import L16_16K, PCMU, frames
from broadcaster.protocol.playout import Playout
from broadcaster.protocol.rtp import (
    Bye,
    PacketError,
    RtpPacket,
    SenderReport,
    ntp_to_unix,
    parse_rtcp,
    unix_to_ntp,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def tone(rate: int, seconds: float, freq: float = 440.0, amp: int = 12000) -> bytes:
    n = int(rate * seconds)
    return struct.pack(
        f"<{n}h", *(int(amp * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    )


# --- RTP / RTCP ---------------------------------------------------------------------------------


def test_rtp_round_trip_of_captured_bytes():
    # a PCMU packet as a SIP phone sends it: V=2, M=1, PT=0, seq 0x1234, ts 0x0a0b0c0d
    data = bytes.fromhex("808012340a0b0c0ddeadbeef") + bytes(range(160))
    pkt = RtpPacket.parse(data)
    assert (pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc, pkt.marker) == (
        0,
        0x1234,
        0x0A0B0C0D,
        0xDEADBEEF,
        True,
    )
    assert bytes(pkt) == data


def test_rtp_with_csrc_and_padding():
    data = bytes.fromhex("a1000001000000020000000300000004") + b"abc" + bytes([0, 0, 3])
    pkt = RtpPacket.parse(data)
    assert pkt.csrc == [4] and pkt.payload == b"abc"


@pytest.mark.parametrize(
    "data,why",
    [
        (b"\x80\x00", "too short"),
        (bytes.fromhex("40000001000000020000000300"), "version"),
        (bytes.fromhex("90000001000000020000000300"), "extension"),
        (bytes.fromhex("82000001000000020000000300"), "CSRC"),
        (bytes.fromhex("a00000010000000200000003ff"), "padding"),
    ],
)
def test_rtp_malformed(data, why):
    with pytest.raises(PacketError, match=why):
        RtpPacket.parse(data)


def test_rtcp_sr_and_bye_round_trip():
    sr = SenderReport(7, unix_to_ntp(1_700_000_000.25), 12345, 10, 1600)
    raw = bytes(sr) + bytes(Bye(7))
    parts = parse_rtcp(raw)
    assert parts[0] == sr and parts[1] == Bye(7)
    assert abs(parts[0].unix_time - 1_700_000_000.25) < 1e-6
    assert abs(ntp_to_unix(unix_to_ntp(1.5)) - 1.5) < 1e-9
    with pytest.raises(PacketError):
        parse_rtcp(raw[:-2])


# --- codecs -------------------------------------------------------------------------------------


def test_pcmu_matches_reference_and_l16_is_big_endian():
    pcm = tone(8000, 0.02)
    assert PCMU.encode(pcm) == audioop.lin2ulaw(pcm, 2)
    assert len(PCMU.encode(pcm)) == 160
    assert L16_16K.encode(struct.pack("<h", 0x0102)) == b"\x01\x02"
    assert L16_16K.decode(L16_16K.encode(pcm)) == pcm


def test_frames_pad_last():
    out = frames(bytes(330), PCMU)
    assert [len(f) for f in out] == [320, 320]


# --- playout ------------------------------------------------------------------------------------


def _playout(base_time=100.0):
    return Playout("b1", PCMU, ssrc=9, base_ts=1000, base_time=base_time)


def _pkt(n, ssrc=9, pt=0):
    return RtpPacket(pt, n, 1000 + n * 160, ssrc, PCMU.encode(tone(8000, 0.02)))


def test_playout_plays_frames_at_their_instants_in_order_despite_reordering():
    p = _playout()
    for n in (2, 0, 1):
        assert p.on_packet(_pkt(n), arrival=99.9) == "buffered"
    assert p.due(99.99, offset=0.0) == []
    got = p.due(100.045, offset=0.0)
    assert [f.index for f in got] == [0, 1, 2]
    assert [round(f.instant, 3) for f in got] == [100.0, 100.02, 100.04]
    assert all(f.pcm is not None for f in got) and p.stats.packets == 3


def test_playout_offset_shifts_local_instants():
    p = _playout()
    p.on_packet(_pkt(0), arrival=0.0)
    # controller is 5 s ahead of this speaker: frame 0 plays at local 95.0
    [f] = p.due(95.001, offset=5.0)
    assert f.instant == pytest.approx(95.0)


def test_playout_counts_lost_and_late():
    p = _playout()
    p.on_packet(_pkt(0), 99.0)
    p.on_packet(_pkt(2), 100.05)  # arrives after its instant 100.04
    frames_ = p.due(100.05, 0.0)
    # frame 0 on time, 1 never sent, 2 arrived 10 ms after its instant
    assert [f.pcm is None for f in frames_] == [False, True, True]
    assert p.stats.lost == 2 and p.stats.late == 1
    assert p.on_packet(_pkt(1), 100.07) == "late"


def test_playout_rejects_foreign_and_duplicates():
    p = _playout()
    assert p.on_packet(_pkt(0, ssrc=8), 0) == "foreign"
    assert p.on_packet(_pkt(0, pt=8), 0) == "foreign"
    assert p.on_packet(_pkt(0), 0) == "buffered"
    assert p.on_packet(_pkt(0), 0) == "duplicate"
    assert p.stats.foreign == 2 and p.stats.duplicates == 1


def test_playout_waits_for_sender_report_and_ends_on_final_count():
    p = _playout(base_time=None)
    p.on_packet(_pkt(0), 0.0)
    p.on_packet(_pkt(1), 0.0)
    assert p.due(1e12, 0.0) == []  # no mapping yet: nothing can play
    p.on_sender_report(SenderReport(9, unix_to_ntp(50.0), 1000, 0, 0))
    p.on_sender_report(SenderReport(9, unix_to_ntp(50.04), 1000 + 320, 2, 320), final=True)
    assert p.end_index == 2
    got = p.due(60.0, 0.0)
    assert [f.index for f in got] == [0, 1] and p.finished(60.0)


def test_playout_gives_up_when_the_stream_goes_silent():
    p = _playout()
    p.on_packet(_pkt(0), 99.0)
    p.due(100.0, 0.0)
    assert not p.finished(101.5)  # idle is counted from the later of last packet and first play
    p.due(102.5, 0.0)
    assert p.finished(102.5)


# --- clock --------------------------------------------------------------------------------------


def test_offset_estimator_filters_each_direction():
    est = clk.OffsetEstimator()
    true_offset = 0.75  # controller ahead of the speaker
    # (t1, one-way there, one-way back): queueing inflates some samples asymmetrically
    for t1, there, back in [(10.0, 0.030, 0.001), (11.0, 0.001, 0.001), (12.0, 0.002, 0.020)]:
        t2 = t1 + there + true_offset
        t3 = t2 + 0.0001
        t4 = t3 - true_offset + back
        est.add(t1, t2, t3, t4)
    assert est.synced
    assert est.offset == pytest.approx(true_offset, abs=1e-9)
    assert est.rtt == pytest.approx(0.002, abs=1e-9)


def test_offset_estimator_needs_no_single_quiet_exchange():
    est = clk.OffsetEstimator()
    # every exchange is jittered in one direction or the other, never quiet in both
    for i, (there, back) in enumerate([(0.004, 0.0), (0.0, 0.004), (0.003, 0.0), (0.0, 0.005)]):
        t1 = 10.0 + i
        t2 = t1 + 0.010 + there - 2.0
        t3 = t2
        est.add(t1, t2, t3, t3 + 2.0 + 0.010 + back)
    assert est.offset == pytest.approx(-2.0, abs=1e-9)  # min-RTT alone would be off by 2 ms


def test_clock_messages_are_authenticated():
    key = b"k" * 32
    beat = clk.Heartbeat(7, 42, True, 1.7e9 + 0.25, 0.5, 0.75, 40000, 0xDEADBEEF, 12345)
    req = clk.encode_request("horn-1", key, 123.5, beat)
    assert clk.request_speaker(req) == "horn-1"
    assert clk.decode_request(req, key) == (123.5, beat)  # (rtt figures exact in float32)
    with pytest.raises(clk.ClockMessageError):
        clk.decode_request(req, b"x" * 32)
    resp = clk.encode_response(key, 1.0, 2.0, 3.0)
    assert clk.decode_response(resp, key) == (1.0, 2.0, 3.0)
    bad = bytearray(resp)
    bad[6] ^= 1
    with pytest.raises(clk.ClockMessageError):
        clk.decode_response(bytes(bad), key)


# --- control authentication ---------------------------------------------------------------------

KEY = bytes(range(32))


def test_signed_request_verifies_once():
    g = ReplayGuard()
    h = sign_request("horn-1", KEY, "POST", "/play", b"{}", now=1000.0)
    g.check(KEY, "POST", "/play", b"{}", h, now=1001.0, speaker_id="horn-1")
    with pytest.raises(AuthError) as e:
        g.check(KEY, "POST", "/play", b"{}", h, now=1001.0, speaker_id="horn-1")
    assert e.value.code == "auth_replay"


@pytest.mark.parametrize(
    "change,code",
    [
        (dict(body=b'{"volume": 100}'), "auth_bad_mac"),
        (dict(path="/stop"), "auth_bad_mac"),
        (dict(key=b"z" * 32), "auth_bad_mac"),
        (dict(now=1100.0), "auth_stale"),
        (dict(speaker_id="horn-2"), "auth_wrong_speaker"),
        (dict(header="Bearer x"), "auth_missing"),
    ],
)
def test_forged_or_stale_requests_are_refused(change, code):
    h = sign_request("horn-1", KEY, "POST", "/play", b"{}", now=1000.0)
    args = dict(
        key=KEY, method="POST", path="/play", body=b"{}", header=h, now=1000.0, speaker_id="horn-1"
    )
    args.update(change)
    with pytest.raises(AuthError) as e:
        ReplayGuard().check(**args)
    assert e.value.code == code


def test_wrapped_key_opens_only_for_its_speaker_and_broadcast():
    w = wrap_key(KEY, b"s" * 30, "horn-1/b1")
    assert unwrap_key(KEY, w, "horn-1/b1") == b"s" * 30
    for key, ctx in [(b"o" * 32, "horn-1/b1"), (KEY, "horn-2/b1"), (KEY, "horn-1/b2")]:
        with pytest.raises(AuthError):
            unwrap_key(key, w, ctx)


def test_a_key_wrapped_with_a_nonce_cut_from_one_draw_opens_and_carries_that_nonce():
    draw = os.urandom(WRAP_NONCE * 3)
    sealed = [
        wrap_key(KEY, b"s" * 30, f"horn-{i}/b1", draw[i * WRAP_NONCE : (i + 1) * WRAP_NONCE])
        for i in range(3)
    ]
    for i, w in enumerate(sealed):
        assert unwrap_key(KEY, w, f"horn-{i}/b1") == b"s" * 30
        assert base64.b64decode(w)[:WRAP_NONCE] == draw[i * WRAP_NONCE : (i + 1) * WRAP_NONCE]
    with pytest.raises(ValueError, match="12 bytes"):
        wrap_key(KEY, b"s" * 30, "horn-1/b1", b"short")


def test_frames_whose_instant_passed_before_the_start_was_known_are_lost_not_played_late():
    p = _playout(base_time=None)
    for n in range(60):
        p.on_packet(_pkt(n), 0.0)
    # both opening sender reports were lost; the next one arrives a second into the stream
    p.on_sender_report(SenderReport(9, unix_to_ntp(100.0), 1000, 0, 0))
    got = p.due(101.0, 0.0)
    played = [f.index for f in got if f.pcm is not None]
    assert played == [48, 49, 50]  # only frames within the card's slack of "now" still play
    assert p.stats.lost == 48
