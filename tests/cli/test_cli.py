"""The command line as an operator uses it: zones check/show, speakers, play --wait, errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from broadcaster.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_zones_check_passes_the_site_and_fails_a_broken_file_with_lines():
    ok = run("zones", "check", "zones.yaml")
    assert ok.returncode == 0 and '"horn": 98' in ok.stdout
    bad = run("zones", "check", "tests/site/zones_fixtures/broken.yaml")
    assert bad.returncode != 0
    assert "broken.yaml:10: site.seat.speakers[0].kind" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_zones_show_json_is_the_nested_tree():
    out = run("zones", "show", "zones.yaml", "--json")
    tree = json.loads(out.stdout)
    assert {"id", "name", "kind", "children", "speakers"} <= set(tree)
    areas = [c for c in tree["children"] if c["kind"] == "area"]
    assert len(areas) == 9 and sum(len(a["children"]) for a in areas) == 38


def test_unreachable_controller_is_a_plain_message(capsys):
    with pytest.raises(SystemExit):
        main(["--controller", "http://127.0.0.1:9", "speakers"])
    err = capsys.readouterr().err
    assert "cannot reach the controller" in err and "broadcaster serve" in err


async def test_speakers_and_play_wait_against_a_running_controller(tmp_path, data, record, tag):
    import asyncio

    import broadcaster.site as zones
    from tests.support.audio import sweep, wav_file
    from tests.support.harness import (
        SimProcess,
        controller,
        playout_records,
        records_follow_reports,
        wait_online,
    )
    from tests.support.sites import small_site

    path = small_site(tmp_path / "z.yaml", villages=1, horns=2, columns=1)
    site = zones.load(path)
    sim = SimProcess(path, data, record, tag).start()
    try:
        async with controller(site, data, tag) as (ctl, client):
            await wait_online(ctl, 3)
            url = str(client.make_url("")).rstrip("/")
            out = await asyncio.to_thread(run, "--controller", url, "speakers")
            assert out.returncode == 0, out.stderr
            assert "3/3 online, 0 unassigned" in out.stdout
            assert "测试街道/一管区/村1" in out.stdout
            wav = wav_file(tmp_path / "n.wav", 8000, sweep(8000, 0.4))
            out = await asyncio.to_thread(
                run, "--controller", url, "play", str(wav), "--to", "v1", "--wait"
            )
            assert out.returncode == 0, out.stderr
            # what the command line says is the controller's record, which follows what each
            # speaker reported (on a loaded machine one may miss a frame: "partial", said so)
            said = re.search(
                r"broadcast (\S+): done — (\d)/2 speakers played it in full", out.stdout
            )
            assert said, out.stdout
            b = ctl.broadcast(said.group(1)).to_dict()
            records_follow_reports(b, playout_records(record, b["id"]))
            assert int(said.group(2)) == sum(r["state"] == "played" for r in b["speakers"])
            for r in b["speakers"]:
                assert r["packets"] > 0
                if r["state"] != "played":
                    line = f"{r['speaker']}: {r['state']} packets={r['packets']} lost={r['lost']}"
                    assert line in out.stdout
            out = await asyncio.to_thread(
                run, "--controller", url, "play", str(wav), "--to", "nowhere"
            )
            assert out.returncode == 1 and "unknown target 'nowhere'" in out.stderr
    finally:
        sim.stop()
