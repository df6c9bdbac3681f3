"""Speakers on a bad, asymmetric path still play the audio, and in step with each other (issue
12.3, 12.6): two horns of one village behind the same impaired downlink (300 ms one way, jitter,
loss: the userspace shim on `dir=in` only), a column on the clean LAN beside them.

A two-way clock exchange cannot see how a round trip splits between the directions: the horns'
clocks are biased by half the asymmetry (~150 ms late here, docs/links.md), the same for both.
What the test asserts is what a listener under the two horns would check: each plays the audio
(bit for bit, but for the frames it reports lost), and the two are heard together. The bound on
that is generous (below the ~30 ms at which an echo is heard) because timing on a busy 2-core
machine varies; the figures themselves are scripts/bench's (`--scenarios village`).
"""

from __future__ import annotations

import warnings

import broadcaster.site as zones
from tests.support.audio import assert_recording_matches, sweep
from tests.support.harness import (
    SimProcess,
    controller,
    playout_records,
    recorded_pcm,
    wait_done,
    wait_online,
    wait_paths,
)
from tests.support.sites import small_site

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

VILLAGE = ["h1-1", "h1-2"]
# one village router's downlink: slow and jittery, with loss; its uplink clean
IMPAIR = "h1-1+h1-2=delay=300ms,jitter=20ms,loss=3%,dir=in"
HEARD_TOGETHER = 0.02  # s: well under the ~30 ms at which two horns are heard as an echo


async def test_horns_behind_one_asymmetric_path_play_and_stay_in_step(tmp_path, data, record, tag):
    path = small_site(tmp_path / "z.yaml", villages=1, horns=2, columns=1)
    site = zones.load(path)
    sim = SimProcess(path, data, record, tag, impair=IMPAIR).start()
    try:
        async with controller(site, data, tag) as (ctl, _):
            await wait_online(ctl, len(site.speakers), timeout=60)
            # the horns' figures arrive once their exchanges have seen the slow downlink
            await wait_paths(ctl, VILLAGE, delay=0.14, timeout=30)
            src = sweep(8000, 3.0)
            expect = audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2)
            b = await ctl.play(src, [site.id])
            res = await wait_done(ctl, b.id)
            recs = playout_records(record, b.id)
            assert set(recs) == {"col-1", *VILLAGE}
            for sid, r in recs.items():
                pcm, rate = recorded_pcm(record, sid, b.id)
                assert_recording_matches(pcm, expect, rate, r["lost"])
                assert r["packets"] + r["lost"] == res["frames"], (sid, r)

            start = {sid: r["first_sample_true"] for sid, r in recs.items()}
            between = abs(start["h1-1"] - start["h1-2"])
            bias = (start["h1-1"] + start["h1-2"]) / 2 - start["col-1"]
            print(
                f"lead {res['lead'] * 1000:.0f} ms; horn to horn {between * 1000:.2f} ms; "
                f"village behind the column by {bias * 1000:.1f} ms (half the asymmetry: 150); "
                f"lost {[recs[s]['lost'] for s in VILLAGE]} of {res['frames']}"
            )
            assert between < HEARD_TOGETHER, start
    finally:
        sim.stop()
