"""The "village links" scenario of scripts/bench (issue 12.3, 12.7): the real site's 113 speakers,
a third of them (the horns of every third village) on 4G-like paths, some of those dialing in.

Each 4G village is one router: all its horns get the same path (the userspace shim on their
sockets, independent draws per horn):
  4g        delay=40ms,jitter=50ms,loss=5%        both directions (round trip 80-180 ms)
  4g-far    delay=300ms,jitter=50ms,loss=5%       both directions (300 ms one way, each way)
  4g-asym   delay=300ms,jitter=50ms,loss=5%,dir=in  the downlink only: an asymmetric path
The horns of a few 4G villages (of each class) run as dial-in speakers in their own process
(`speaker --simulate … --controller`). So do the horns of two LAN villages whose UDP is blocked
(the shim drops every datagram of their sockets; their channel, TCP, is not touched):
  udp-blocked     loss=100%         both directions: no punch gets out, no clock answer in
  udp-in-blocked  loss=100%,dir=in  inbound only: punches get out, nothing comes back
so their media and their clock exchange go over the dial-in channel. Every speaker's clock is off
by up to ±0.5 s. After all are
clock-synced the scenario waits --sync-wait s (10) and plays RUNS broadcasts of SECONDS of
Mandarin speech (espeak-ng; a tone without it) to the subdistrict in each codec, PCMU and Opus.

Figures (first_sample_true, the simulated speakers' true first-sound instants):
  - skew: |speaker - median| per broadcast over the speakers whose paths are symmetric (LAN, 4g,
    4g-far): the issue's "p99 <= 1 ms, none worse than 2 ms"; also per class; the UDP-blocked
    horns against the same median, in rows of their own (not in the symmetric figure);
  - the asymmetric villages: their bias against that median (physics: half the asymmetry,
    150 ms here, docs/links.md) and, per village and broadcast, the spread between its own horns
    (what its listeners hear); the same spread for every 4G village;
  - the lead the controller chose; loss heard per class (frames lost, and for Opus how many the
    decoder concealed, FEC or PLC); late frames;
  - bytes per speaker-hour per codec: the real sender (RtpSender with SRTP, the controller's
    code) run in-process over the same audio repeated for 5 minutes, counting every datagram it
    would put on the wire for one speaker (RTP and RTCP) plus 28 bytes of UDP/IPv4 each; media
    only (the idle control traffic of docs/scale.md comes on top).
No assertions: figures are reported, never judged.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
import wave
from pathlib import Path
from types import ModuleType

import benchlib

PATHS = {
    "4g": "delay=40ms,jitter=50ms,loss=5%",
    "4g-far": "delay=300ms,jitter=50ms,loss=5%",
    "4g-asym": "delay=300ms,jitter=50ms,loss=5%,dir=in",
}
# LAN villages whose horns dial in with UDP blocked: media and clock over the channel
BLOCKED = {"udp-blocked": "loss=100%", "udp-in-blocked": "loss=100%,dir=in"}
SYMMETRIC = ("lan", "4g", "4g-far")
CODECS = ("pcmu", "opus")
UDP_IP = 28  # bytes of IPv4 + UDP headers per datagram
STEADY = 300.0  # s of audio the byte count runs over
TEXT = (
    "各位村民请注意，现在是防火禁烧宣传时间。秋收季节，严禁在田间地头焚烧秸秆，"
    "严禁野外用火。发现火情请立即拨打火警电话一一九。"
)


def plan(site) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(class per speaker, village per 4G or UDP-blocked horn, dial-in speakers): every third
    village is 4G; of those every fourth is 4g-far and every fifth (from the second) 4g-asym; the
    horns of every third 4G village dial in; so do the horns of the first two LAN villages, one
    with UDP blocked both ways, one inbound only."""
    villages = sorted(z for z, zone in site.zones.items() if zone.kind == "village")
    cls = {sid: "lan" for sid in site.speakers}
    village_of: dict[str, str] = {}
    dial: list[str] = []
    for n, vid in enumerate(villages[::3]):
        kind = "4g-asym" if n % 5 == 1 else "4g-far" if n % 4 == 3 else "4g"
        for sid in site.speakers_under(vid):
            cls[sid], village_of[sid] = kind, vid
            if n % 3 == 0:
                dial.append(sid)
    lan = [v for i, v in enumerate(villages) if i % 3]
    for kind, vid in zip(BLOCKED, lan):
        for sid in site.speakers_under(vid):
            cls[sid], village_of[sid] = kind, vid
            dial.append(sid)
    return cls, village_of, sorted(dial)


def impair_spec(cls: dict[str, str]) -> str:
    """The simulator's --impair for these classes."""
    parts = []
    for kind, text in (PATHS | BLOCKED).items():
        ids = sorted(s for s, c in cls.items() if c == kind)
        if ids:
            parts.append(f"{'+'.join(ids)}={text}")
    return ";".join(parts)


def speech_wav(path: Path, seconds: float, bench: ModuleType) -> tuple[Path, str]:
    """Mandarin speech of exactly `seconds` (repeated or cut), or the bench tone without TTS."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return bench.write_tone(path, seconds), "tone"
    raw = path.with_suffix(".tts.wav")
    subprocess.run(
        [espeak, "-v", "cmn-latn-pinyin", "-w", str(raw), TEXT], check=True, capture_output=True
    )
    with wave.open(str(raw), "rb") as w:
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
    need = int(seconds * rate) * 2
    pcm = (frames * (need // max(1, len(frames)) + 1))[:need]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path, "speech"


def bytes_per_hour(wav: Path, codec_name: str) -> dict:
    """What the controller's sender puts on the wire for one speaker, per hour of this audio."""
    from audio_library import decode_file
    from broadcaster.protocol.codecs import FRAME_MS, codec_by_name
    from broadcaster.protocol.srtp import new_key
    from broadcaster.protocol.stream import Destination, RtpSender

    codec = codec_by_name(codec_name)
    step = codec.rate * FRAME_MS // 1000 * 2
    clip = decode_file(wav, codec.rate)
    # the audio repeated for STEADY s: the sender reports fast in its first second (ten sender
    # reports), which a short clip would spread over the whole hour
    pcm = (clip * (int(STEADY * codec.rate * 2) // max(1, len(clip)) + 1))[
        : int(STEADY * codec.rate) * 2
    ]
    sent = {"datagrams": 0, "bytes": 0, "rtcp": 0}

    def count(data: bytes, addr: tuple[str, int]) -> None:
        sent["datagrams"] += 1
        sent["bytes"] += len(data) + UDP_IP

    sender = RtpSender(codec, count, key=new_key())
    sender.destinations.append(Destination(("speaker", 1), ("speaker", 1)))
    frames = len(pcm) // step
    now = 1000.0
    sender.start(now + 0.1, now)
    for i in range(frames):
        now += FRAME_MS / 1000
        sender.frame(i, pcm[i * step : (i + 1) * step], now)
    sender.end(frames, now)
    seconds = frames * FRAME_MS / 1000
    return {
        "codec": codec_name,
        "payload_bytes_per_frame": sender.octets / frames,
        "wire_kbit_s": sent["bytes"] * 8 / seconds / 1000,
        "mb_per_speaker_hour": sent["bytes"] / seconds * 3600 / 1e6,
        "datagrams_per_s": sent["datagrams"] / seconds,
    }


def _records(bench: ModuleType, record: Path, bid: str) -> dict[str, dict]:
    return bench.playout_records(record, bid)


def analyse(
    recs: dict[str, dict], cls: dict[str, str], village_of: dict[str, str], dial: set[str]
) -> dict:
    """One broadcast's skew, bias, village spreads and loss from the speakers' records."""
    true = {s: r["first_sample_true"] for s, r in recs.items() if r.get("first_sample_true")}
    sym = [true[s] for s in true if cls.get(s) in SYMMETRIC]
    med = statistics.median(sym) if sym else None
    out: dict = {"deviation_ms": {}, "asym_bias_ms": [], "village_spread_ms": {}, "loss": {}}
    out["dial_in_deviation_ms"] = []  # the dial-in horns on symmetric paths (a subset of the above)
    out["blocked_deviation_ms"] = {}  # the UDP-blocked horns, against the same median
    if med is not None:
        for s, t in true.items():
            if cls.get(s) in SYMMETRIC:
                out["deviation_ms"].setdefault(cls[s], []).append(abs(t - med) * 1000)
                if s in dial:
                    out["dial_in_deviation_ms"].append(abs(t - med) * 1000)
            elif cls.get(s) == "4g-asym":
                out["asym_bias_ms"].append((t - med) * 1000)
            elif cls.get(s) in BLOCKED:
                out["blocked_deviation_ms"].setdefault(cls[s], []).append(abs(t - med) * 1000)
    by_village: dict[str, list[float]] = {}
    for s, t in true.items():
        if s in village_of:
            by_village.setdefault(village_of[s], []).append(t)
    for vid, ts in by_village.items():
        if len(ts) > 1:
            kind = cls[next(s for s in village_of if village_of[s] == vid)]
            out["village_spread_ms"].setdefault(kind, []).append((max(ts) - min(ts)) * 1000)
    for s, r in recs.items():
        c = out["loss"].setdefault(
            cls.get(s, "lan"), {"frames": 0, "lost": 0, "late": 0, "concealed": 0, "fec": 0}
        )
        c["frames"] += r.get("packets", 0) + r.get("lost", 0)
        for k in ("lost", "late", "concealed", "fec"):
            c[k] += r.get(k, 0) or 0
    return out


def run(args: argparse.Namespace, work: Path, bench: ModuleType) -> dict:
    """Start speakers (found and dialing in) and a controller, play, return the figures."""
    import broadcaster.site as zones_mod

    wdir = work / "village"
    data, record = wdir / "data", wdir / "record"
    data.mkdir(parents=True)
    zones = bench.site_file(wdir / "zones.yaml", False, args.speakers)
    site = zones_mod.load(str(zones))
    cls, village_of, dial = plan(site)
    bench.load_keys(data, site)
    tag = bench.site_tag()
    impair = impair_spec(cls)
    found = [s for s in sorted(site.speakers) if s not in set(dial)]
    sim = bench.SimProcess(
        zones, data, record, tag, only=found, impair=impair, clock_skew=bench.CLOCK_SKEW
    )
    port = benchlib.free_port()
    ctl = bench.ControllerProcess(zones, data, tag, port, wdir / "controller.log")
    village = bench.SimProcess(
        zones,
        data,
        record,
        tag,
        only=dial,
        impair=impair,
        clock_skew=bench.CLOCK_SKEW,
        mdns=False,
        seed=2,
    )
    village.cmd += ["--controller", f"127.0.0.1:{port}"]
    clock_ppm = getattr(args, "clock_ppm", 0.0)
    if clock_ppm:  # each speaker's quartz off by up to this, as real horns' are
        for proc in (sim, village):
            proc.cmd += ["--clock-ppm", str(clock_ppm)]
    wav, content = speech_wav(wdir / "speech.wav", args.seconds, bench)
    counts = {k: sum(1 for c in cls.values() if c == k) for k in ("lan", *PATHS, *BLOCKED)}
    res: dict = {
        "scenario": "village",
        "speakers": len(site.speakers),
        "classes": counts,
        "dial_in": len(dial),
        "seconds": args.seconds,
        "audio": content,
        "runs": [],
        "sync_wait_s": args.sync_wait,
        "clock_ppm": clock_ppm,
    }
    print(f"  village: {counts}, {len(dial)} dial in; {content} audio", flush=True)
    try:
        sim.start(timeout=max(120.0, 0.3 * len(site.speakers)))
        ctl.start()
        village.start(timeout=60)
        res["discovery"] = bench.wait_discovery(
            ctl, len(site.speakers), timeout=max(90.0, 0.3 * len(site.speakers))
        )
        time.sleep(args.sync_wait)  # the figure is "after 10 s of clock sync"
        rows = ctl.api.call("GET", "/api/speakers")["speakers"]
        res["sources"] = {
            src: sum(1 for r in rows if r["source"] == src)
            for src in sorted({r["source"] for r in rows})
        }
        # the ways the controller lists for the dial-in horns, per class (media/clock)
        ways: dict[str, dict[str, int]] = {}
        for r in rows:
            if r["source"] == "dial-in":
                w = ways.setdefault(cls.get(r["id"], "lan"), {})
                key = f"media {r.get('media')}, clock {r.get('clock')}"
                w[key] = w.get(key, 0) + 1
        res["dial_in_ways"] = ways
        print(f"  village: dial-in ways listed {ways}", flush=True)
        body = wav.read_bytes()
        for codec in CODECS:
            for i in range(args.runs):
                run_ = bench.one_run(
                    ctl, sim, body, site.root.id, record, 0.0, {}, codec=codec, lead=None
                )
                b = ctl.api.call("GET", f"/api/broadcasts/{run_['broadcast']}")
                recs = _records(bench, record, run_["broadcast"])
                a = analyse(recs, cls, village_of, set(dial))
                dev = [d for v in a["deviation_ms"].values() for d in v]
                res["runs"].append(
                    {
                        "codec": codec,
                        "lead": b["lead"],
                        "played": run_["played"],
                        "speakers": run_["speakers"],
                        # a busy machine shows here first: frames late everywhere at once
                        "controller_cpu_pct": 100 * run_["controller_cpu_s"] / run_["wall_s"],
                        "simulator_cpu_pct": 100 * run_["simulator_cpu_s"] / run_["wall_s"],
                        "loadavg_1m": os.getloadavg()[0],
                        **a,
                    }
                )
                print(
                    f"  village {codec} run {i + 1}/{args.runs}: lead "
                    f"{b['lead'] * 1000:.0f} ms, played {run_['played']}/{run_['speakers']}, "
                    f"skew p99 {benchlib.fmt(benchlib.percentile(dev, 99), 3)} ms, max "
                    f"{benchlib.fmt(max(dev) if dev else None, 3)} ms; late "
                    f"{sum(c['late'] for c in a['loss'].values())} frames; CPU controller "
                    f"{res['runs'][-1]['controller_cpu_pct']:.0f} %, simulator "
                    f"{res['runs'][-1]['simulator_cpu_pct']:.0f} %; load "
                    f"{res['runs'][-1]['loadavg_1m']:.2f}",
                    flush=True,
                )
                time.sleep(0.5)
    finally:
        ctl.stop()
        village.stop()
        sim.stop()
    res["bytes"] = {c: bytes_per_hour(wav, c) for c in CODECS}
    res["summary"] = summarize(res)
    return res


def summarize(res: dict) -> dict:
    """Across runs, per codec."""
    out: dict = {}
    for codec in CODECS:
        runs = [r for r in res["runs"] if r["codec"] == codec]
        dev_by: dict[str, list[float]] = {}
        blocked_by: dict[str, list[float]] = {}
        spread_by: dict[str, list[float]] = {}
        loss: dict[str, dict] = {}
        for r in runs:
            for k, v in r["deviation_ms"].items():
                dev_by.setdefault(k, []).extend(v)
            for k, v in r["village_spread_ms"].items():
                spread_by.setdefault(k, []).extend(v)
            for k, v in r["blocked_deviation_ms"].items():
                blocked_by.setdefault(k, []).extend(v)
            for k, v in r["loss"].items():
                acc = loss.setdefault(k, dict.fromkeys(v, 0))
                for f, n in v.items():
                    acc[f] += n
        out[codec] = {
            "skew_ms": benchlib.summary([d for v in dev_by.values() for d in v]),
            "skew_by_class_ms": {k: benchlib.summary(v) for k, v in sorted(dev_by.items())},
            "skew_dial_in_ms": benchlib.summary(
                [d for r in runs for d in r["dial_in_deviation_ms"]]
            ),
            "skew_blocked_ms": {k: benchlib.summary(v) for k, v in sorted(blocked_by.items())},
            "asym_bias_ms": benchlib.summary([b for r in runs for b in r["asym_bias_ms"]]),
            "village_spread_ms": {k: benchlib.summary(v) for k, v in sorted(spread_by.items())},
            "lead_ms": benchlib.summary([r["lead"] for r in runs], 1000),
            "controller_cpu_pct": benchlib.summary([r["controller_cpu_pct"] for r in runs]),
            "simulator_cpu_pct": benchlib.summary([r["simulator_cpu_pct"] for r in runs]),
            "loadavg_1m": benchlib.summary([r["loadavg_1m"] for r in runs]),
            "played": f"{sum(r['played'] for r in runs)}/{sum(r['speakers'] for r in runs)}",
            "loss": {
                k: {
                    **v,
                    "lost_pct": 100 * v["lost"] / v["frames"] if v["frames"] else None,
                    "concealed_pct": 100 * v["concealed"] / v["frames"] if v["frames"] else None,
                }
                for k, v in sorted(loss.items())
            },
        }
    return out


def print_report(res: dict) -> None:
    """The scenario's tables."""
    s = res["summary"]
    d = res["discovery"]
    print(
        f"\n=== broadcaster: village links — {res['speakers']} speakers {res['classes']}, "
        f"{res['dial_in']} dial in ({res.get('sources')}), {len(res['runs'])} broadcasts x "
        f"{res['seconds']} s of {res['audio']}, after {res['sync_wait_s']:.0f} s of sync, "
        f"clocks up to ±{res.get('clock_ppm', 0):g} ppm ==="
    )
    print(f"dial-in ways listed by the controller: {res.get('dial_in_ways')}")
    for codec in CODECS:
        c = s[codec]
        rows = [
            benchlib.stat_row("skew |spk - median| (symmetric)", c["skew_ms"]),
            *(benchlib.stat_row(f"  {k}", v) for k, v in c["skew_by_class_ms"].items()),
            benchlib.stat_row("  of which dial-in (4g, 4g-far)", c["skew_dial_in_ms"]),
            *(
                benchlib.stat_row(f"dial-in, {k} (vs that median)", v)
                for k, v in c["skew_blocked_ms"].items()
            ),
            benchlib.stat_row("4g-asym bias vs median (signed)", c["asym_bias_ms"]),
            *(
                benchlib.stat_row(f"spread within a {k} village", v)
                for k, v in c["village_spread_ms"].items()
            ),
            benchlib.stat_row("lead chosen", c["lead_ms"]),
            benchlib.stat_row("controller CPU while playing", c["controller_cpu_pct"], "% core"),
            benchlib.stat_row("simulator CPU (found speakers)", c["simulator_cpu_pct"], "% core"),
            benchlib.stat_row("load average (1 min)", c["loadavg_1m"], ""),
        ]
        print(f"\n{codec}: played {c['played']}")
        print(benchlib.table(benchlib.STAT_HEADERS, rows, digits=3))
        loss_rows = [
            [
                k,
                v["frames"],
                v["lost"],
                benchlib.fmt(v["lost_pct"], 2),
                v["late"],
                v["concealed"],
                v["fec"],
            ]
            for k, v in c["loss"].items()
        ]
        print(
            benchlib.table(
                ["class", "frames", "lost", "lost %", "late", "concealed", "fec"], loss_rows
            )
        )
    print("\nbytes per speaker-hour (the sender's SRTP datagrams + UDP/IPv4, this audio):")
    print(
        benchlib.table(
            ["codec", "payload B/frame", "wire kbit/s", "MB/speaker-hour", "datagrams/s"],
            [
                [
                    b["codec"],
                    b["payload_bytes_per_frame"],
                    b["wire_kbit_s"],
                    b["mb_per_speaker_hour"],
                    b["datagrams_per_s"],
                ]
                for b in res["bytes"].values()
            ],
            digits=1,
        )
    )
    print(
        f"discovery from controller spawn: all online {d['all_online_s']:.1f} s, all synced "
        f"{d['all_synced_s']:.1f} s; load average {os.getloadavg()}"
    )
