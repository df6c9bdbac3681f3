"""A broadcast in Opus to our own (simulated) speakers: what they played is the source, on a
clean path and behind 5 % loss (every lost frame concealed), at Opus's data rate."""

from __future__ import annotations

import broadcaster.site as zones
from broadcaster.protocol import opus
from tests.protocol.test_opus import RATE, best_alignment, speech  # noqa: F401
from tests.support.harness import (
    SimProcess,
    controller,
    playout_records,
    recorded_pcm,
    wait_done,
    wait_for,
    wait_online,
)
from tests.support.sites import small_site

HEADERS = 12 + 10 + 8 + 20  # RTP + SRTP tag + UDP + IPv4, per packet


async def test_opus_broadcast_correlates_with_and_without_loss(tmp_path, data, record, tag, speech):  # noqa: F811
    path = small_site(tmp_path / "z.yaml", villages=1, horns=2, columns=0)
    site = zones.load(path)
    sim = SimProcess(path, data, record, tag, impair="h1-2=loss=5%,dir=in").start()
    try:
        async with controller(site, data, tag) as (ctl, _):
            await wait_online(ctl, 2)
            b = await ctl.play(speech, ["v1"], codec="opus")
            await wait_for(lambda: ctl.broadcast(b.id).state == "playing", 20)
            sender = ctl.players[b.id].parts[0].delivered().sender
            res = await wait_done(ctl, b.id)
            assert res["codec"] == "opus"
            recs = playout_records(record, b.id)
            delay = opus.OpusEncoder(RATE).delay
            for sid in ("h1-1", "h1-2"):
                r = recs[sid]
                assert r["codec"] == "opus" and r["sample_rate"] == 16000
                assert r["packets"] + r["lost"] == res["frames"]
                # each lost frame was filled in by the decoder (FEC or PLC), none left silent
                assert r["concealed"] == r["lost"], r
                pcm, rate = recorded_pcm(record, sid, b.id)
                assert rate == 16000
                score, lag = best_alignment(speech, pcm, delay)
                print(
                    sid,
                    f"ncc {score:.3f} lag {lag}",
                    {k: r[k] for k in ("packets", "lost", "concealed", "fec")},
                )
                assert score >= 0.9, (sid, score)
            assert recs["h1-2"]["lost"] > 0  # the shim did drop some
            seconds = sender.sent * 0.02
            payload = sender.octets / seconds
            wire = (sender.octets + sender.sent * HEADERS) / seconds
            print(
                f"per speaker: payload {payload * 8 / 1000:.1f} kbit/s, "
                f"wire {wire * 8 / 1000:.1f} kbit/s, {wire * 3600 / 1e6:.1f} MB/hour"
            )
            assert 2000 <= payload <= 3300  # 24 kbit/s = 3000 B/s; speech VBR a little less
            assert wire * 3600 / 1e6 < 0.6 * 37.8  # under 60 % of PCMU+SRTP's 37.8 MB/hour
    finally:
        sim.stop()
