"""The controller to dial comes from the key file (issue 12.1): `broadcaster speaker pair ID
--controller HOST:PORT` writes it there, and `broadcaster speaker --key-file F` (a real process,
no --controller) dials it. On loopback: the protocol is the same behind NAT (test_dialin.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import broadcaster.site as zones_mod
from tests.support.audio import assert_recording_matches, sweep
from tests.support.harness import (
    ROOT,
    SimProcess,
    playout_records,
    recorded_pcm,
    serve,
    speaker_command,
    wait_done,
    wait_online,
)
from tests.support.sites import small_site

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def _cli(data: Path, zones: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "broadcaster.cli.main", "--data", str(data), *args],
        cwd=ROOT,
        env={**os.environ, "BROADCASTER_ZONES": str(zones)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _speaker(keyfile: Path, record: Path, *extra: str) -> list[str]:
    return speaker_command(keyfile, 0, 0, "--no-mdns", "--record", str(record), *extra)


def test_pair_writes_the_controller_and_refuses_a_bad_one(tmp_path):
    zones = small_site(tmp_path / "zones.yaml", villages=1, horns=1, columns=0)
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "h1-1.key"
    res = _cli(
        data, zones, "speaker", "pair", "h1-1", "--out", str(out), "--controller", "ctl:8600"
    )
    assert res.returncode == 0, res.stderr
    assert "dials in to ctl:8600" in res.stdout
    info = json.loads(out.read_text())
    assert info["controller"] == "ctl:8600" and len(info["key"]) == 64
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    # without --controller the file is as before (a LAN speaker waits to be reached)
    res = _cli(data, zones, "speaker", "pair", "h1-1", "--out", str(out))
    assert res.returncode == 0 and "controller" not in json.loads(out.read_text())
    bad = _cli(data, zones, "speaker", "pair", "h1-1", "--out", str(out), "--controller", "ctl")
    assert bad.returncode != 0
    assert "--controller" in bad.stderr and "'ctl' is not HOST:PORT" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_bad_controller_in_the_key_file_is_named(tmp_path):
    zones = small_site(tmp_path / "zones.yaml", villages=1, horns=1, columns=0)
    data = tmp_path / "data"
    data.mkdir()
    out = tmp_path / "h1-1.key"
    assert _cli(data, zones, "speaker", "pair", "h1-1", "--out", str(out)).returncode == 0
    info = json.loads(out.read_text())
    out.write_text(json.dumps({**info, "controller": "10.0.0.1:http"}))
    res = subprocess.run(
        _speaker(out, tmp_path / "rec"), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert res.returncode != 0
    assert f"{out}: controller: '10.0.0.1:http' is not HOST:PORT" in res.stderr
    assert "Traceback" not in res.stderr
    # --controller none: the file's address is ignored, the speaker waits to be reached
    proc = subprocess.Popen(
        _speaker(out, tmp_path / "rec", "--controller", "none"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("READY 1 speakers")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


async def test_a_speaker_dials_the_controller_its_key_file_names(tmp_path):
    zones = small_site(tmp_path / "zones.yaml", villages=1, horns=1, columns=0)
    data, record = tmp_path / "data", tmp_path / "rec"
    data.mkdir()
    record.mkdir()
    site = zones_mod.load(zones)
    served = await serve(site, data)
    ctl, server = served.ctl, served.server
    port = server.port
    keyfile = tmp_path / "h1-1.key"
    res = _cli(
        data,
        zones,
        "speaker",
        "pair",
        "h1-1",
        "--out",
        str(keyfile),
        "--controller",
        f"127.0.0.1:{server.port}",
    )
    assert res.returncode == 0, res.stderr
    log = open(tmp_path / "speaker.log", "w")
    proc = subprocess.Popen(  # no --controller: the key file's address is dialed
        _speaker(keyfile, record),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        await wait_online(ctl, 1, timeout=45)
        assert ctl.registry.get("h1-1").source == "dial-in"
        assert ctl.bc.dialin.sessions["h1-1"] == 1
        src = sweep(8000, 0.6)
        b = await ctl.play(src, ["h1-1"])
        done = await wait_done(ctl, b.id)
        assert done["speakers"][0]["state"] == "played", done["speakers"]
        lost = playout_records(record, b.id)["h1-1"]["lost"]
        pcm, _ = recorded_pcm(record, "h1-1", b.id)
        assert_recording_matches(pcm, audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2), 8000, lost)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
        await served.close()
    assert f"dialing 127.0.0.1:{port}" in (tmp_path / "speaker.log").read_text()


async def test_a_simulated_village_dials_in(tmp_path, data, record, tag):
    """`speaker --simulate ZONES --only … --controller HOST:PORT`: every simulated speaker dials
    (the benchmark's dial-in horns); the rest of the site is found as usual."""
    zones = small_site(tmp_path / "zones.yaml", villages=1, horns=2, columns=1)
    site = zones_mod.load(zones)
    served = await serve(site, data, site_tag=tag)
    ctl, server = served.ctl, served.server
    village = SimProcess(zones, data, record, tag, only=["h1-1", "h1-2"], mdns=False)
    village.cmd += ["--controller", f"127.0.0.1:{server.port}"]
    try:
        village.start()
        assert {s["dial_in"] for s in village.info["speakers"]} == {f"127.0.0.1:{server.port}"}
        await wait_online(ctl, 2, timeout=45)
        assert {ctl.registry.get(s).source for s in ("h1-1", "h1-2")} == {"dial-in"}
        src = sweep(8000, 0.6)
        b = await ctl.play(src, ["v1"])
        done = await wait_done(ctl, b.id)
        assert done["summary"]["played"] == 2, done["speakers"]
        recs = playout_records(record, b.id)
        for sid in ("h1-1", "h1-2"):
            pcm, _ = recorded_pcm(record, sid, b.id)
            expect = audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2)
            assert_recording_matches(pcm, expect, 8000, recs[sid]["lost"])
            assert recs[sid].get("first_sample_true")  # simulated: the benchmark's skew figure
    finally:
        village.stop()
        await served.close()
