"""A real (non-simulated) speaker: paired with a key file, found by its static address, playing
through an output process at its volume."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import broadcaster.site as zones
from tests.support.audio import sweep
from tests.support.harness import (
    ROOT,
    controller,
    speaker_command,
    wait_done,
    wait_for,
    wait_online,
)
from tests.support.net import free_even_port, free_port
from tests.support.sites import small_site

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


async def test_paired_speaker_plays_through_its_output_at_its_volume(tmp_path, data, tag):
    port = free_port()
    path = small_site(
        tmp_path / "z.yaml", villages=1, horns=1, columns=1, static={"h1-1": f"127.0.0.1:{port}"}
    )
    site = zones.load(path)
    env = {**os.environ, "BROADCASTER_ZONES": str(path)}
    keyfile = tmp_path / "h1-1.key"
    paired = subprocess.run(
        [
            sys.executable,
            "-m",
            "broadcaster.cli.main",
            "--data",
            str(data),
            "speaker",
            "pair",
            "h1-1",
            "--out",
            str(keyfile),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert oct(keyfile.stat().st_mode & 0o777) == "0o600"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        speaker_command(
            keyfile,
            str(port),
            str(free_even_port()),
            "--no-mdns",
            "--output",
            f"pipe:cat > {out_dir}/{{broadcast}}-{{rate}}.raw",
        ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with controller(site, data, tag, mdns=False) as (ctl, _):
            await wait_online(ctl, 1, timeout=30)
            src = sweep(8000, 1.0)
            b = await wait_done(ctl, (await ctl.play(src, ["h1-1"])).id)
            assert b["summary"]["played"] == 1
            raw = out_dir / f"{b['id']}-8000.raw"
            await wait_for(lambda: raw.exists() and raw.stat().st_size == len(src), 5)
            expect = audioop.mul(audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2), 2, 0.8)
            assert raw.read_bytes() == expect  # at the zone's default volume of 80
    finally:
        proc.terminate()
        proc.wait(10)
    import json

    assert json.loads(keyfile.read_text())["key"] not in paired.stdout + paired.stderr


async def test_a_real_speaker_is_found_over_mdns(tmp_path, data, tag):
    path = small_site(tmp_path / "z.yaml", villages=1, horns=1, columns=1)
    site = zones.load(path)
    keyfile = tmp_path / "col-1.key"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "broadcaster.cli.main",
            "--data",
            str(data),
            "speaker",
            "pair",
            "col-1",
            "--out",
            str(keyfile),
        ],
        cwd=ROOT,
        check=True,
        env={**os.environ, "BROADCASTER_ZONES": str(path)},
        capture_output=True,
    )
    proc = subprocess.Popen(
        speaker_command(keyfile, "0", "0", "--site-tag", tag),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with controller(site, data, tag) as (ctl, _):
            await wait_online(ctl, 1, timeout=30)
            st = ctl.registry.get("col-1")
            assert st.source == "mdns" and st.kind == "column" and st.host == "127.0.0.1"
    finally:
        proc.terminate()
        proc.wait(10)
