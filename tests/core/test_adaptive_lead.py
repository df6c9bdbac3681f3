"""A broadcast's lead follows its own speakers' measured paths (issue 12.4), end to end: a
simulated village behind 300 ms / 50 ms jitter / 5 % loss on its downlink, LAN columns beside."""

from __future__ import annotations

import broadcaster.site as zones
from tests.support.audio import sweep
from tests.support.harness import (
    SimProcess,
    controller,
    playout_records,
    wait_done,
    wait_for,
    wait_online,
    wait_paths,
)
from tests.support.sites import small_site

VILLAGE = ["h1-1", "h1-2"]
IMPAIR = "h1-1+h1-2=delay=300ms,jitter=50ms,loss=5%,dir=in"


async def test_lead_follows_the_paths_and_nothing_is_lost_late(tmp_path, data, record, tag):
    path = small_site(tmp_path / "z.yaml", villages=2, horns=2, columns=2)
    site = zones.load(path)
    sim = SimProcess(path, data, record, tag, impair=IMPAIR).start()
    try:
        async with controller(site, data, tag) as (ctl, _):
            await wait_online(ctl, len(site.speakers), timeout=60)
            # the village's figures come with its heartbeats, once its window has filled
            await wait_paths(ctl, VILLAGE, delay=0.14, timeout=30)
            await wait_paths(ctl, VILLAGE, jitter=0.01, timeout=30)

            # the first exchanges on a busy machine carry long round trips: the LAN's figures
            # settle under the floor once the window holds only later ones
            await wait_for(
                lambda: ctl.choose_lead(["col-1", "col-2"]).need < ctl.config.playout_delay, 40
            )
            lan = await wait_done(ctl, (await ctl.play(sweep(8000, 1.0), ["seat"])).id)
            assert lan["lead"] == ctl.config.playout_delay  # the floor: LAN paths need less
            assert lan["summary"]["played"] == 2

            b = await ctl.play(sweep(8000, 4.0), ["seat", "v1"])
            chosen = b.lead
            # 150 ms + 2 × ~45 ms + 50 ms (more when the machine's load adds to the round trips)
            assert chosen is not None and 0.25 < chosen <= ctl.config.max_lead, chosen
            starting = [
                e
                for e in ctl.events
                if e["kind"] == "broadcast" and e.get("broadcast") == b.id and "lead_choice" in e
            ]
            assert starting and starting[0]["lead"] == chosen
            assert starting[0]["lead_choice"]["worst"] in VILLAGE
            res = await wait_done(ctl, b.id)
            assert res["lead"] == chosen
            recs = playout_records(record, b.id)
            assert set(recs) == {"col-1", "col-2", *VILLAGE}
            for sid, r in recs.items():
                # every frame accounted for, and none lost because it came after its instant:
                # what the impaired speakers lost is what the shim dropped
                assert r["late"] == 0, (sid, r, chosen)
                assert r["packets"] + r["lost"] == res["frames"], (sid, r)
            for sid in VILLAGE:
                assert recs[sid]["lost"] < 0.15 * res["frames"], recs[sid]
            print("lead", chosen, {s: (r["packets"], r["lost"]) for s, r in recs.items()})
    finally:
        sim.stop()
