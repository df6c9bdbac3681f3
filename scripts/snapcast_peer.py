"""The Snapcast peer benchmark: snapserver with a pipe source and N snapclients on loopback.

A writer feeds the fifo in real time (20 ms writes of 48 kHz/16-bit/stereo silence) with a click
every SPACING seconds and notes when each click's bytes were handed to the pipe (the "command").
Each snapclient runs the file player writing to stdout (`--player file:filename=stdout`). In
Snapcast 0.26 that player asks the stream every 50 ms for the 2400 frames that must reach the DAC 10
ms later (getPlayerChunkOrSilence(buf, 10ms, frames)), writes and flushes them. So frame j of chunk
k plays at request_time(k) + 10 ms + j / 48000. request_time(k) is estimated from when the chunk
shows up on our end of the pipe: the requests run on a 50 ms steady timer, so for each chunk we take
the earliest (read time - n * 50 ms) over its +-20 neighbours, which removes our own reader's wake-
up delay. What is measured is Snapcast's own schedule, the same idealised sound card as the
broadcaster simulator's first_sample_at; a real DAC adds its own fixed latency to both.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import benchlib

RATE, CHANNELS, WIDTH = 48000, 2, 2
FRAME_BYTES = CHANNELS * WIDTH
WRITE_MS = 20
PLAYER_CHUNK = 2400  # frames per file-player request (50 ms in 0.26)
PLAYER_PERIOD = 0.050
DAC_LEAD = 0.010
CLICK_FRAMES = 48  # 1 ms burst
CLICK_AMP = 20000


@dataclass
class Options:
    """What to run."""

    clients: int = 6
    buffers_ms: list[int] = field(default_factory=lambda: [1000, 100])
    clicks: int = 8
    spacing: float = 1.5
    warmup: float = 3.0
    codec: str = "pcm"


def default_options(quick: bool = False) -> Options:
    """Defaults, or a shorter run."""
    return Options(clicks=4, clients=4) if quick else Options()


def ensure_installed() -> str | None:
    """Install snapserver/snapclient with apt-get if missing; returns a reason if unavailable."""
    if shutil.which("snapserver") and shutil.which("snapclient"):
        return None
    if os.geteuid() != 0:
        return "snapserver/snapclient are not installed and this is not root (apt-get needs root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    upd = subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env)
    if upd.returncode:
        return f"apt-get update failed: {upd.stderr[-500:]}"
    inst = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "snapserver", "snapclient"],
        capture_output=True,
        text=True,
        env=env,
    )
    if inst.returncode:
        return f"apt-get install snapserver snapclient failed: {inst.stderr[-500:]}"
    if not (shutil.which("snapserver") and shutil.which("snapclient")):
        return "apt-get install succeeded but snapserver/snapclient are not on PATH"
    return None


def version() -> str:
    """snapserver's version line."""
    out = subprocess.run(["snapserver", "-v"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "?"


class Reader(threading.Thread):
    """Reads every client's stdout in one thread; notes when each byte offset first arrived."""

    def __init__(self, procs: list[subprocess.Popen]) -> None:
        super().__init__(daemon=True)
        self.sel = selectors.DefaultSelector()
        self.data = [bytearray() for _ in procs]
        self.reads: list[list[tuple[float, int]]] = [[] for _ in procs]  # (time, offset before)
        for i, p in enumerate(procs):
            assert p.stdout is not None
            os.set_blocking(p.stdout.fileno(), False)
            self.sel.register(p.stdout.fileno(), selectors.EVENT_READ, i)
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            for key, _ in self.sel.select(timeout=0.2):
                i = key.data
                try:
                    chunk = os.read(key.fd, 1 << 20)
                except BlockingIOError:
                    continue
                now = time.time()
                if not chunk:
                    self.sel.unregister(key.fd)
                    continue
                self.reads[i].append((now, len(self.data[i])))
                self.data[i] += chunk


def chunk_times(reads: list[tuple[float, int]], total: int) -> tuple[list[float], list[float]]:
    """Per 50 ms player chunk: raw first-seen time, and the steady-timer estimate of its request."""
    n = total // (PLAYER_CHUNK * FRAME_BYTES)
    raw: list[float] = []
    r = 0
    for k in range(n):
        start = k * PLAYER_CHUNK * FRAME_BYTES
        while r + 1 < len(reads) and reads[r + 1][1] <= start:
            r += 1
        raw.append(reads[r][0])
    base = [t - k * PLAYER_PERIOD for k, t in enumerate(raw)]
    est = [min(base[max(0, k - 20) : k + 21]) + k * PLAYER_PERIOD for k in range(n)]
    return raw, est


def find_clicks(data: bytes) -> list[int]:
    """Frame indices where a click starts (left channel jumps above half the click amplitude)."""
    import array

    pcm = array.array("h")
    pcm.frombytes(bytes(data[: len(data) - len(data) % FRAME_BYTES]))
    left = pcm[0::CHANNELS]
    out, last = [], -10 * RATE
    thr = CLICK_AMP // 2
    for i, v in enumerate(left):
        if v > thr and i - last > RATE // 10:
            out.append(i)
            last = i
        elif v > thr:
            last = i
    return out


def run_buffer(buffer_ms: int, opt: Options, work: Path) -> dict:
    """One snapserver with opt.clients clients at one buffer size; click latencies and skew."""
    fifo = work / f"fifo-{buffer_ms}"
    os.mkfifo(fifo)
    conf = work / "snapserver.conf"
    conf.write_text("")
    port = benchlib.free_port()
    src = (
        f"pipe://{fifo}?name=bench&codec={opt.codec}&sampleformat={RATE}:16:{CHANNELS}"
        f"&chunk_ms={WRITE_MS}"
    )
    server = subprocess.Popen(
        [
            "snapserver",
            "-c",
            str(conf),
            f"--server.datadir={work}",
            "--http.enabled=0",
            "--tcp.enabled=0",
            "--stream.bind_to_address=127.0.0.1",
            f"--stream.port={port}",
            f"--stream.source={src}",
            f"--stream.buffer={buffer_ms}",
            "--logging.sink=stderr",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"server-{buffer_ms}.log", "wb"),
    )
    clients: list[subprocess.Popen] = []
    reader: Reader | None = None
    writes: list[float] = []
    try:
        time.sleep(0.5)
        for i in range(opt.clients):
            clients.append(
                subprocess.Popen(
                    [
                        "snapclient",
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(port),
                        "--hostID",
                        f"bench{i}",
                        "-i",
                        str(i + 1),
                        "--player",
                        "file:filename=stdout",
                        "--logsink",
                        "null",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            )
        reader = Reader(clients)
        reader.start()
        old = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)  # the reader thread must not wait 5 ms for the GIL
        cpu0 = None
        try:
            fd = os.open(fifo, os.O_WRONLY)
            chunk = WRITE_MS * RATE // 1000
            silence = bytes(chunk * FRAME_BYTES)
            burst = (int(CLICK_AMP).to_bytes(2, "little", signed=True) * CHANNELS) * CLICK_FRAMES
            click = burst + bytes((chunk - CLICK_FRAMES) * FRAME_BYTES)
            per = round(opt.spacing * 1000 / WRITE_MS)
            first_click = round(opt.warmup * 1000 / WRITE_MS)
            total = first_click + per * opt.clicks + round((buffer_ms + 1500) / WRITE_MS)
            t0 = time.time() + 0.05
            for n in range(total):
                due = t0 + n * WRITE_MS / 1000
                wait = due - time.time()
                if wait > 0:
                    time.sleep(wait)
                is_click = (
                    n >= first_click and (n - first_click) % per == 0 and len(writes) < opt.clicks
                )
                if n == first_click:
                    cpu0 = (
                        benchlib.cpu_seconds(server.pid),
                        [benchlib.cpu_seconds(c.pid) for c in clients],
                        time.time(),
                    )
                t = time.time()
                os.write(fd, click if is_click else silence)
                if is_click:
                    writes.append(t)
            cpu1 = (
                benchlib.cpu_seconds(server.pid),
                [benchlib.cpu_seconds(c.pid) for c in clients],
                time.time(),
            )
            time.sleep(0.3)
            os.close(fd)
        finally:
            sys.setswitchinterval(old)
    finally:
        if reader:
            reader.stop = True
        for p in clients + [server]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in clients + [server]:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        if reader:
            reader.join(2)
    assert reader is not None
    return analyse(buffer_ms, opt, reader, writes, cpu0, cpu1)


def analyse(buffer_ms: int, opt: Options, reader: Reader, writes: list[float], cpu0, cpu1) -> dict:
    """Turn clicks found in each client's output into play instants, latencies and skew."""
    per_client: list[list[float | None]] = []
    per_client_raw: list[list[float | None]] = []
    found = []
    for i, data in enumerate(reader.data):
        raw_t, est_t = chunk_times(reader.reads[i], len(data)) if reader.reads[i] else ([], [])
        plays, plays_raw = [None] * len(writes), [None] * len(writes)
        clicks = find_clicks(data)
        found.append(len(clicks))
        for fr in clicks:
            k, j = divmod(fr, PLAYER_CHUNK)
            if k >= len(est_t):
                continue
            t_play = est_t[k] + DAC_LEAD + j / RATE
            # the click written last before it played is its source (spacing > latency)
            before = [w for w in range(len(writes)) if writes[w] < t_play]
            if not before:
                continue
            w = before[-1]
            if plays[w] is None:
                plays[w] = t_play
                plays_raw[w] = raw_t[k] + DAC_LEAD + j / RATE
        per_client.append(plays)
        per_client_raw.append(plays_raw)
    lat, lat_first, lat_last, spreads, devs, spreads_raw = [], [], [], [], [], []
    for w, t_w in enumerate(writes):
        got = [c[w] for c in per_client if c[w] is not None]
        got_raw = [c[w] for c in per_client_raw if c[w] is not None]
        if not got:
            continue
        lat += [(g - t_w) * 1000 for g in got]
        lat_first.append((min(got) - t_w) * 1000)
        lat_last.append((max(got) - t_w) * 1000)
        if len(got) == len(per_client):
            spreads.append((max(got) - min(got)) * 1000)
            spreads_raw.append((max(got_raw) - min(got_raw)) * 1000)
            med = statistics.median(got)
            devs += [abs(g - med) * 1000 for g in got]
    minutes = (cpu1[2] - cpu0[2]) / 60 if cpu0 and cpu1 else float("nan")
    return {
        "buffer_ms": buffer_ms,
        "clients": opt.clients,
        "codec": opt.codec,
        "clicks_written": len(writes),
        "clicks_found_per_client": found,
        "complete_clicks": len(spreads),
        "latency_first_ms": benchlib.summary(lat_first),
        "latency_last_ms": benchlib.summary(lat_last),
        "latency_all_ms": benchlib.summary(lat),
        "spread_ms": benchlib.summary(spreads),
        "spread_unfitted_ms": benchlib.summary(spreads_raw),
        "deviation_from_median_ms": benchlib.summary(devs),
        "server_cpu_per_client_min": (
            (cpu1[0] - cpu0[0]) / (opt.clients * minutes) if cpu0 and cpu1 else None
        ),
        "client_cpu_per_min": (
            statistics.fmean(b - a for a, b in zip(cpu0[1], cpu1[1])) / minutes
            if cpu0 and cpu1
            else None
        ),
    }


def run(opt: Options) -> dict:
    """Install if needed, run every buffer size, return the figures (or why it could not run)."""
    reason = ensure_installed()
    if reason:
        return {"available": False, "reason": reason}
    out: dict = {"available": True, "version": version(), "options": vars(opt), "runs": []}
    work = Path(tempfile.mkdtemp(prefix="snapbench-"))
    try:
        for b in opt.buffers_ms:
            print(
                f"snapcast: buffer {b} ms, {opt.clients} clients, {opt.clicks} clicks ...",
                flush=True,
            )
            out["runs"].append(run_buffer(b, opt, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def print_report(snap: dict) -> None:
    """One table per buffer size."""
    if not snap.get("available"):
        print(f"\n=== snapcast: not measured — {snap.get('reason')} ===")
        return
    for r in snap["runs"]:
        print(
            f"\n=== snapcast ({snap['version']}): buffer {r['buffer_ms']} ms, {r['clients']} "
            f"clients, codec {r['codec']}, clicks written {r['clicks_written']}, found per "
            f"client {r['clicks_found_per_client']} ==="
        )
        rows = [
            benchlib.stat_row("pipe write -> sound (earliest client)", r["latency_first_ms"]),
            benchlib.stat_row("pipe write -> sound (latest client)", r["latency_last_ms"]),
            benchlib.stat_row("skew: spread per click", r["spread_ms"]),
            benchlib.stat_row("skew: spread, unfitted read times", r["spread_unfitted_ms"]),
            benchlib.stat_row("skew: |client - median|", r["deviation_from_median_ms"]),
        ]
        print(benchlib.table(benchlib.STAT_HEADERS, rows, digits=3))
        print(
            f"snapserver CPU {benchlib.fmt(r['server_cpu_per_client_min'] * 1000, 1)} cpu-ms "
            f"per client-minute; each snapclient {benchlib.fmt(r['client_cpu_per_min'], 2)} "
            "cpu-s per minute"
        )


def side_by_side(bc_results: list[dict], snap: dict) -> str:
    """broadcaster's scenarios and Snapcast's buffer sizes in one table."""
    headers = [
        "system",
        "receivers",
        "cmd->sound p50",
        "p99",
        "max",
        "skew spread p50",
        "p99",
        "max",
        "|dev| p99",
        "loss %",
    ]
    rows = []
    for r in bc_results:
        s = r["summary"]
        rows.append(
            [
                f"broadcaster {r['scenario']}",
                str(r["speakers"]),
                s["latency_last_ms"]["p50"],
                s["latency_last_ms"]["p99"],
                s["latency_last_ms"]["max"],
                s["spread_ms"]["p50"],
                s["spread_ms"]["p99"],
                s["spread_ms"]["max"],
                s["deviation_from_median_ms"]["p99"],
                s["loss_pct"],
            ]
        )
    if snap.get("available"):
        for r in snap["runs"]:
            rows.append(
                [
                    f"snapcast buffer {r['buffer_ms']} ms",
                    str(r["clients"]),
                    r["latency_last_ms"]["p50"],
                    r["latency_last_ms"]["p99"],
                    r["latency_last_ms"]["max"],
                    r["spread_ms"]["p50"],
                    r["spread_ms"]["p99"],
                    r["spread_ms"]["max"],
                    r["deviation_from_median_ms"]["p99"],
                    "-",
                ]
            )
    else:
        rows.append(["snapcast", "-", "not measured: " + str(snap.get("reason"))[:60]] + [""] * 7)
    return (
        "\n=== side by side (ms; cmd->sound = command to the LAST receiver's first sample) ===\n"
        + benchlib.table(headers, rows, digits=2)
    )
