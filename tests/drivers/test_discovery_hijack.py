"""Discovery cannot be hijacked: an mDNS advert is a hint the controller checks.

Real zeroconf on 127.0.0.1 with a fresh site tag; simulated speakers in a child process; a forger
in another process that advertises the speakers' ids under the same site tag, pointing at its
own HTTP server (it answers unsigned or with a made-up MAC: it holds no key).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import broadcaster.drivers.bcspeaker.driver as bcdriver
import broadcaster.site as zones_mod
from tests.support.audio import assert_recording_matches, sweep
from tests.support.harness import (
    SimProcess,
    controller,
    playout_records,
    recorded_pcm,
    site_tag,
    wait_done,
    wait_online,
)
from tests.support.net import free_port
from tests.support.sites import small_site

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FORGER_HOST = "127.0.66.6"

# The forger imports nothing from broadcaster: it knows the public advert format, no key.
FORGER = r"""
import asyncio, json, secrets, socket, sys
from aiohttp import web
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

TYPE = "_bcspeaker._tcp.local."

async def main():
    plan = json.loads(sys.argv[1])
    log = open(plan["log"], "a")
    runners, infos, ports = [], [], {}
    for n, f in enumerate(plan["forge"]):
        host, port = plan["host"], f.get("port")
        if port is None:  # its own server, answering like a speaker but without the key
            async def handler(request, f=f):
                await request.read()
                log.write(json.dumps({"speaker": f["id"], "method": request.method,
                                      "path": request.path_qs}) + "\n")
                log.flush()
                headers = {} if f["mode"] == "unsigned" else {"X-BC-MAC": secrets.token_hex(32)}
                return web.json_response({"id": f["id"], "state": "idle", "rtp_port": 40000,
                                          "synced": True, "counters": {}}, headers=headers)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handler)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, host, 0).start()
            runners.append(runner)
            port = runner.addresses[0][1]
        else:
            host = f["host"]
        ports[f["id"]] = [host, port]
        name = f"forged{n}-{plan['tag']}-{f['id']}"
        infos.append(AsyncServiceInfo(
            TYPE, f"{name}.{TYPE}", addresses=[socket.inet_aton(host)], port=port,
            properties={"id": f["id"], "kind": "horn", "pv": "1", "rtp": "40000",
                        "site": plan["tag"]}, server=f"{name}.local."))
    azc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    for info in infos:
        await (await azc.async_register_service(info))
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for info in infos:  # goodbye packets: the adverts are withdrawn
        await (await azc.async_unregister_service(info))
    await azc.async_close()
    for r in runners:
        await r.cleanup()

asyncio.run(main())
"""


class Forger:
    """The forging process: adverts with chosen speaker ids; stop() withdraws them."""

    def __init__(self, tmp: Path, tag: str, forge: list[dict]) -> None:
        self.log = tmp / f"forger-{time.monotonic_ns()}.jsonl"
        script = tmp / "forger.py"
        script.write_text(FORGER)
        plan = {"tag": tag, "host": FORGER_HOST, "log": str(self.log), "forge": forge}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), json.dumps(plan)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "forger did not start"
        self.addresses = {sid: f"{h}:{p}" for sid, (h, p) in json.loads(line).items()}

    def requests(self) -> list[dict]:
        """What the controller sent the forger's servers."""
        if not self.log.exists():
            return []
        return [json.loads(x) for x in self.log.read_text().splitlines()]

    def stop(self) -> None:
        """Withdraw the adverts and exit."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def wait_events(ctl, kind: str, count: int, timeout: float = 30.0, **match) -> list[dict]:
    """Wait until `count` events of `kind` (with these details) are on the bus."""
    end = time.monotonic() + timeout
    while True:
        found = [
            e
            for e in ctl.events
            if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())
        ]
        if len(found) >= count:
            return found
        if time.monotonic() > end:
            raise TimeoutError(
                f"{len(found)}/{count} {kind} events {match}; recent: "
                f"{[e['kind'] for e in ctl.events][-20:]}"
            )
        await asyncio.sleep(0.05)


def address_of(ctl, sid: str) -> str:
    a = ctl.bc.addresses[sid]
    return f"{a.host}:{a.port}"


async def play_and_check(ctl, record: Path, targets: list[str], speakers: list[str]) -> None:
    """A broadcast plays on these speakers: their recordings equal the source (frames the
    speaker itself reports lost, as a loaded machine may make it, are silence)."""
    end = time.monotonic() + 20
    while not all(ctl.registry.get(sid).clock_synced for sid in speakers):
        assert time.monotonic() < end, "speakers never reported clock sync"
        await asyncio.sleep(0.1)
    src = sweep(8000, 1.0)
    b = await ctl.play(src, targets)
    done = await wait_done(ctl, b.id)
    results = {r["speaker"]: r for r in done["speakers"]}
    recs = playout_records(record, b.id)
    expect = audioop.ulaw2lin(audioop.lin2ulaw(src, 2), 2)
    for sid in speakers:
        assert results[sid]["state"] in ("played", "partial"), results[sid]
        pcm, _ = recorded_pcm(record, sid, b.id)
        assert_recording_matches(pcm, expect, 8000, recs[sid]["lost"])


@pytest.fixture
def site_files(tmp_path):
    zones = small_site(tmp_path / "zones.yaml", villages=1, horns=2, columns=1)
    data, record = tmp_path / "data", tmp_path / "rec"
    data.mkdir()
    record.mkdir()
    return zones, data, record


async def test_forged_adverts_raise_an_alarm_and_move_nothing(tmp_path, site_files):
    zones, data, record = site_files
    tag = site_tag()
    site = zones_mod.load(zones)
    sim = SimProcess(zones, data, record, tag).start()
    forger = None
    try:
        async with controller(site, data, tag, playout_delay=0.3) as (ctl, _):
            await wait_online(ctl, 3)
            real = {sid: address_of(ctl, sid) for sid in ("h1-1", "h1-2")}
            forger = Forger(
                tmp_path,
                tag,
                [{"id": "h1-1", "mode": "unsigned"}, {"id": "h1-2", "mode": "badmac"}],
            )
            for sid in ("h1-1", "h1-2"):
                [ev] = await wait_events(ctl, "advert_conflict", 1, speaker=sid)
                assert ev["address"] == forger.addresses[sid] and ev["current"] == real[sid]
            # nothing moved, nobody went offline, and the real speakers still play
            await asyncio.sleep(2 * ctl.config.poll_interval)
            assert {sid: address_of(ctl, sid) for sid in real} == real
            assert all(ctl.is_online(sid) for sid in site.speakers)
            assert not [e for e in ctl.events if e["kind"] in ("offline", "speaker_moved")]
            await play_and_check(ctl, record, ["v1"], ["h1-1", "h1-2"])
            # the forger was only asked to prove the key: never sent a /play or a stop
            asked = forger.requests()
            assert asked and all(
                r["method"] == "GET" and r["path"].startswith("/status") for r in asked
            )
            # withdrawing the forged adverts is noted; it takes nothing offline
            forger.stop()
            for sid in ("h1-1", "h1-2"):
                await wait_events(ctl, "advert_withdrawn", 1, speaker=sid, current=False)
            assert all(ctl.is_online(sid) for sid in site.speakers)
            assert len([e for e in ctl.events if e["kind"] == "advert_conflict"]) == 2
    finally:
        if forger:
            forger.stop()
        sim.stop()


async def test_withdrawn_advert_of_the_current_address_takes_nothing_offline(tmp_path, site_files):
    zones, data, record = site_files
    tag = site_tag()
    site = zones_mod.load(zones)
    sim = SimProcess(zones, data, record, tag, only=["h1-1"]).start()
    forger = None
    try:
        async with controller(site, data, tag, playout_delay=0.3) as (ctl, _):
            await wait_online(ctl, 1)
            host, port = ctl.bc.addresses["h1-1"].host, ctl.bc.addresses["h1-1"].port
            # a second advert naming the speaker's real address, then withdrawn (a goodbye)
            forger = Forger(tmp_path, tag, [{"id": "h1-1", "host": host, "port": port}])
            await asyncio.sleep(1.0)
            forger.stop()
            await wait_events(ctl, "advert_withdrawn", 1, speaker="h1-1", current=True)
            await asyncio.sleep(2 * ctl.config.poll_interval)
            assert ctl.is_online("h1-1") and address_of(ctl, "h1-1") == f"{host}:{port}"
            assert not [e for e in ctl.events if e["kind"] in ("offline", "advert_conflict")]
    finally:
        if forger:
            forger.stop()
        sim.stop()


async def test_a_speaker_that_really_moved_is_followed_once_it_proves_its_key(tmp_path, site_files):
    zones, data, record = site_files
    tag = site_tag()
    site = zones_mod.load(zones)
    old = SimProcess(zones, data, record, tag, only=["h1-1"]).start()
    new = None
    try:
        async with controller(site, data, tag, playout_delay=0.3) as (ctl, _):
            await wait_online(ctl, 1)
            before = address_of(ctl, "h1-1")
            old.stop()  # the horn is re-cabled: it comes back on another address and ports
            moved = small_site(
                tmp_path / "moved.yaml",
                villages=1,
                horns=2,
                columns=1,
                static={"h1-1": f"127.0.44.4:{free_port()}"},
            )
            new = SimProcess(moved, data, record, tag, only=["h1-1"]).start()
            after = f"{new.info['speakers'][0]['host']}:{new.info['speakers'][0]['port']}"
            assert after != before and after.startswith("127.0.44.4:")
            [ev] = await wait_events(ctl, "speaker_moved", 1, speaker="h1-1")
            assert ev["address"] == after and ev["previous"] == before
            assert address_of(ctl, "h1-1") == after
            await wait_online(ctl, 1)
            assert not [e for e in ctl.events if e["kind"] == "advert_conflict"]
            await play_and_check(ctl, record, ["h1-1"], ["h1-1"])
    finally:
        old.stop()
        if new:
            new.stop()


async def test_a_dead_speakers_stale_advert_holds_back_no_other(tmp_path, site_files, monkeypatch):
    # one verification at a time, and an advert of h1-2 at an address where nothing speaks the
    # protocol (a dead speaker's advert, still cached on the network): it is tried again after
    # 1, 2, 4 and 8 s; h1-1, found meanwhile, must not wait for those tries to run out
    monkeypatch.setattr(bcdriver, "VERIFY_LIMIT", 1)
    zones, data, record = site_files
    tag = site_tag()
    site = zones_mod.load(zones)
    tries = 0

    async def hang_up(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal tries
        tries += 1
        w.close()

    dead = await asyncio.start_server(hang_up, FORGER_HOST, 0)
    forger = sim = None
    try:
        async with controller(site, data, tag, playout_delay=0.3) as (ctl, _):
            port = dead.sockets[0].getsockname()[1]
            forger = Forger(tmp_path, tag, [{"id": "h1-2", "host": FORGER_HOST, "port": port}])
            end = time.monotonic() + 30
            while tries == 0:  # the controller is in the stale advert's tries
                assert time.monotonic() < end, "the stale advert was never tried"
                await asyncio.sleep(0.05)
            sim = await asyncio.to_thread(SimProcess(zones, data, record, tag, only=["h1-1"]).start)
            t0 = time.monotonic()
            await wait_online(ctl, 1, timeout=60, synced=False)
            found = time.monotonic() - t0
            # found as soon as it is verified; before, it waited the stale advert's 15 s of tries
            assert found < 8, f"h1-1 found {found:.1f} s after its advert; {tries} stale tries"
            assert not ctl.is_online("h1-2") and "h1-2" not in ctl.bc.addresses
    finally:
        if forger:
            forger.stop()
        if sim:
            sim.stop()
        dead.close()
