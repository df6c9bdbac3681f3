"""Runs every speaker of a zones file as virtual speakers in one process, each on its own address.

Speaker i listens on 127.0.<1 + i // 250>.<1 + i % 250> (all of 127.0.0.0/8 is loopback), with its
own control port, RTP/RTCP port pair and mDNS record, exactly as a real endpoint would.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
import wave
from pathlib import Path

from broadcaster.endpoint.clocks import WallStep, parse_clock_steps
from broadcaster.endpoint.lifecycle import stop_event, write_ready
from broadcaster.endpoint.speaker import LIGHT_TICK, Speaker, SpeakerSpec, Ticker
from broadcaster.net.mdns import Advert, open_zeroconf, register, unregister
from broadcaster.net.udp import Impairment
from broadcaster.protocol.auth import KeyStore
from broadcaster.site import Site

log = logging.getLogger(__name__)


def sim_host(index: int) -> str:
    """The loopback address of the index-th simulated speaker."""
    return f"127.0.{1 + index // 250}.{1 + index % 250}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a hostname: the simulator binds only to loopback addresses it knows
        return False


def parse_impairments(spec: str | None, ids: list[str], seed: int) -> dict[str, Impairment]:
    """'ID=delay=50ms,jitter=5ms,loss=1%;*=delay=10ms' -> impairment per speaker id."""
    out: dict[str, Impairment] = {}
    if not spec:
        return out
    for n, part in enumerate(filter(None, (p.strip() for p in spec.split(";")))):
        who, _, what = part.partition("=")
        targets = ids if who == "*" else [i for i in who.split("+") if i]
        for i, sid in enumerate(targets):
            out[sid] = Impairment.parse(what, seed=seed * 7919 + n * 1000 + i)
    return out


def build_specs(
    site: Site,
    keys: dict[str, bytes],
    *,
    only: list[str] | None,
    tag: str,
    record_dir: Path | None,
    impair: str | None = None,
    clock_skew: float = 0.0,
    seed: int = 1,
    clock_ppm: float = 0.0,
    clock_steps: str | None = None,
    light: bool = False,
) -> list[SpeakerSpec]:
    """One spec per simulated speaker: address, keys, faults, clock offsets, clock rates (each
    drawn within ±`clock_ppm`) and clock steps.

    `clock_steps` ('ID=AT:STEP;…', seconds) steps a speaker's wall-clock source by STEP, AT
    seconds after start: a test of the speaker's indifference to its wall clock.
    """
    ids = sorted(site.speakers)
    if only:
        unknown = [i for i in only if i not in site.speakers]
        if unknown:
            raise SystemExit(f"--only names unknown speaker(s): {', '.join(unknown)}")
        ids = [i for i in ids if i in set(only)]
    faults = parse_impairments(impair, ids, seed)
    try:
        steps = parse_clock_steps(clock_steps)
    except ValueError as exc:
        raise SystemExit(f"--clock-step: {exc}") from None
    unknown = sorted(set(steps) - set(ids))
    if unknown:
        raise SystemExit(f"--clock-step names unknown speaker(s): {', '.join(unknown)}")
    rng = random.Random(seed)
    rates = random.Random(seed + 1)  # apart, so a seed's offsets stay what they were
    specs = []
    for index, sid in enumerate(sorted(site.speakers)):
        if sid not in ids:
            continue
        sp = site.speakers[sid]
        host, port = sim_host(index), 0
        if sp.address and _is_loopback(sp.address[0]):
            host, port = sp.address
        specs.append(
            SpeakerSpec(
                speaker_id=sid,
                kind=sp.kind,
                key=keys[sid],
                site=tag,
                host=host,
                control_port=port,
                volume=sp.volume,
                record_dir=record_dir,
                clock_offset=rng.uniform(-clock_skew, clock_skew) if clock_skew else 0.0,
                clock_ppm=rates.uniform(-clock_ppm, clock_ppm) if clock_ppm else 0.0,
                impair=faults.get(sid),
                simulated=True,
                light=light,
            )
        )
        if sid in steps:
            specs[-1].wall = WallStep(*steps[sid])
    return specs


async def run_simulation(
    specs: list[SpeakerSpec],
    *,
    mdns: bool = True,
    mdns_interfaces: list[str] | None = None,
    ready_file: Path | None = None,
) -> None:
    """Start every speaker, advertise them, and run until cancelled or signalled."""
    speakers = [Speaker(s) for s in specs]
    await asyncio.gather(*(sp.start() for sp in speakers))
    adverts = [
        Advert(
            sp.spec.speaker_id,
            sp.spec.kind,
            sp.spec.host,
            sp.control_port,
            sp.rtp_port,
            sp.spec.site,
        )
        for sp in speakers
    ]
    azc = open_zeroconf(mdns_interfaces or ["127.0.0.1"]) if mdns else None
    if azc is not None:
        await register(azc, adverts)
    # light speakers (scale runs) read and play in batches (a fine tick per speaker costs too
    # much; a packet still counts by when it reached the socket)
    light = bool(specs) and all(s.light for s in specs)
    ticker = asyncio.ensure_future(Ticker(speakers, LIGHT_TICK if light else 0.005).run())
    info = {
        "speakers": [
            {"id": a.speaker_id, "host": a.host, "port": a.port, "rtp": a.rtp_port} for a in adverts
        ]
    }
    if ready_file:
        write_ready(ready_file, info)
    print(f"READY {len(speakers)} speakers", flush=True)
    stop = stop_event()
    try:
        await stop.wait()
    finally:
        ticker.cancel()
        await asyncio.gather(*(sp.close() for sp in speakers), return_exceptions=True)
        if azc is not None:
            await unregister(azc, adverts)
            await azc.async_close()


def load_keys(data_dir: Path, site: Site) -> dict[str, bytes]:
    """The pairing keys the simulated speakers hold (the controller's key store, minted if new)."""
    return KeyStore(data_dir / "speaker-keys.json").ensure(list(site.speakers))


def playout_records(record: Path, broadcast: str) -> dict[str, dict]:
    """Each speaker's playout.jsonl line for one broadcast, by speaker id."""
    out = {}
    for f in record.glob("*/playout.jsonl"):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            if rec["broadcast"] == broadcast:
                out[rec["speaker"]] = rec
    return out


def recorded_pcm(record: Path, speaker: str, broadcast: str) -> tuple[bytes, int]:
    """The PCM a speaker's sound card played for a broadcast, and its rate."""
    with wave.open(str(record / speaker / f"{broadcast}.wav"), "rb") as w:
        return w.readframes(w.getnframes()), w.getframerate()
