"""A standard tool receives our stream: ffmpeg plays the SRTP described by an SDP with a=crypto."""

from __future__ import annotations

import asyncio
import math
import socket
import struct
import subprocess
import time
import warnings

from broadcaster.core.player import pace
from broadcaster.protocol.codecs import L16_16K, PCMU
from broadcaster.protocol.sdp import stream_sdp
from broadcaster.protocol.srtp import new_key
from broadcaster.protocol.stream import Destination, RtpSender
from broadcaster.sources.base import PcmSource
from tests.support.net import free_even_port
from tests.support.tools import need

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


async def receive_with_ffmpeg(tmp_path, codec, pcm, key):
    need("ffmpeg")
    port = free_even_port()
    sdp = tmp_path / "stream.sdp"
    sdp.write_text(stream_sdp(codec, "127.0.0.1", port, key))
    out = tmp_path / "got.raw"
    proc = subprocess.Popen(
        [
            "ffmpeg",
            "-v",
            "error",
            "-nostdin",
            "-protocol_whitelist",
            "file,udp,rtp,srtp",
            "-i",
            str(sdp),
            "-f",
            "s16le",
            "-acodec",
            "pcm_s16le",
            "-ar",
            str(codec.rate),
            "-ac",
            "1",
            "-y",
            str(out),
        ],
        stderr=subprocess.PIPE,
    )
    await asyncio.sleep(1.5)  # let ffmpeg open its sockets
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sender = RtpSender(
        codec,
        lambda d, a: sock.sendto(d, a),
        key,
        [Destination(("127.0.0.1", port), ("127.0.0.1", port + 1))],
    )
    source = PcmSource(pcm, codec.rate)
    await source.prepare(codec.rate)
    base = time.time() + 0.1
    sender.start(base, time.time())
    frames, _ = await pace([(sender, None)], source, base, 0.1, time.time)
    sender.end(frames, time.time())
    await asyncio.sleep(1.0)
    proc.terminate()  # ffmpeg finishes the file on SIGTERM
    _, err = proc.communicate(timeout=20)
    sock.close()
    return out.read_bytes(), err.decode()


def tone(rate, seconds):
    n = int(rate * seconds)
    return struct.pack(
        f"<{n}h", *(int(8000 * math.sin(2 * math.pi * 523 * i / rate)) for i in range(n))
    )


async def test_ffmpeg_decodes_our_srtp_pcmu_stream(tmp_path):
    src = tone(8000, 2.0)
    got, err = await receive_with_ffmpeg(tmp_path, PCMU, src, new_key())
    expect = audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2)
    assert len(got) > 0, err
    # ffmpeg may drop the first packets while it starts; what it did decode is our audio exactly
    assert got in expect or expect.find(got[:3200]) >= 0, err
    assert len(got) >= len(expect) // 2


async def test_ffmpeg_decodes_our_srtp_l16_stream(tmp_path):
    src = tone(16000, 2.0)
    got, err = await receive_with_ffmpeg(tmp_path, L16_16K, src, new_key())
    assert len(got) >= len(src) // 2, err
    assert src.find(got[:6400]) >= 0


def test_sdp_names_codec_and_crypto():
    key = bytes(30)
    text = stream_sdp(PCMU, "127.0.0.1", 5004, key)
    assert "m=audio 5004 RTP/SAVP 0" in text
    assert "a=rtpmap:0 PCMU/8000" in text
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in text
    assert "RTP/AVP 96" in stream_sdp(L16_16K, "127.0.0.1", 5004)
