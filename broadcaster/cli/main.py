"""The `broadcaster` command: every front end's operations from a shell.

Commands that act on a running controller talk to its HTTP API (`--controller`, default
http://127.0.0.1:8600); `serve`, `speaker`, `zones` and `library` work locally.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import broadcaster.site as zones_mod
from broadcaster.cli.client import DEFAULT_URL, Client, ClientError
from broadcaster.core.broadcast import ACTIVE
from broadcaster.errors import BroadcasterError, StorageError, ZonesError
from broadcaster.protocol.codecs import CODECS

DEFAULT_DATA = Path.home() / ".local" / "share" / "broadcaster"
DEFAULT_ZONES = "zones.yaml"


def data_dir(args: argparse.Namespace) -> Path:
    """--data, else $BROADCASTER_DATA, else ~/.local/share/broadcaster."""
    raw = args.data or os.environ.get("BROADCASTER_DATA") or str(DEFAULT_DATA)
    path = Path(raw).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path)
        raise StorageError(
            f"{blocker}: cannot make the data directory {path} here ({exc.strerror}); move "
            "the file aside, or give another directory with --data",
            detail={"file": str(blocker)},
        ) from None
    return path


def hostport(text: str, default_port: int) -> tuple[str, int]:
    """Parse host[:port]."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    return host, int(port)


def load_site(path: str) -> zones_mod.Site:
    """Load zones.yaml or exit with every problem listed."""
    try:
        return zones_mod.load(path)
    except ZonesError as exc:
        for p in exc.problems:
            print(f"error: {p}", file=sys.stderr)
        raise SystemExit(2) from None


# --- the controller's API, through the one client -------------------------------------------


def api(
    args: argparse.Namespace, method: str, path: str, params: list | None = None, **kw: object
) -> dict:
    """Call the controller's API; an error is printed as its plain message and exits non-zero."""
    try:
        return Client(args.controller).call(method, path, params or [], **kw)  # type: ignore[arg-type]
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None


def fmt_time(t: float | None, tz: ZoneInfo) -> str:
    """A Unix time in the site's time zone."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M:%S")


def site_tz(args: argparse.Namespace) -> ZoneInfo:
    """The display time zone: --tz, $BROADCASTER_TZ, else Asia/Shanghai."""
    return ZoneInfo(
        getattr(args, "tz", None) or os.environ.get("BROADCASTER_TZ") or "Asia/Shanghai"
    )


# --- commands --------------------------------------------------------------------------------


def cmd_zones(args: argparse.Namespace) -> int:
    """zones check [FILE] / zones show [FILE] [--json]."""
    if args.action == "check":
        site = load_site(args.file)
        c = site.counts()
        print(f"{args.file}: ok — {json.dumps(c, ensure_ascii=False)}")
        return 0
    site = load_site(args.file)
    if args.json:
        print(json.dumps(site.to_tree(), ensure_ascii=False, indent=1))
    else:
        print(site.render_text())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the controller and its HTTP API until interrupted.

    A fault at start-up (zones.yaml, key store, database, data directory, address in use) is
    one line naming the file and what to do, and a non-zero exit: never a traceback.
    """
    from broadcaster.web.server import serve, startup_problem

    site = load_site(args.zones)
    try:
        host, port = hostport(args.listen, 8600)
    except ValueError:
        print(
            f"error: --listen {args.listen}: give HOST:PORT, e.g. 127.0.0.1:8600", file=sys.stderr
        )
        return 2
    from broadcaster.web import tls

    files = tls.choose(
        data_dir(args), host, site.id, auto=args.tls == "auto", cert=args.tls_cert, key=args.tls_key
    )
    try:
        return asyncio.run(
            serve(
                site,
                data_dir(args),
                host=host,
                port=port,
                interface=args.interface,
                playout_delay=args.playout_delay / 1000,
                site_tag=args.site_tag,
                mdns=not args.no_mdns,
                tls=files,
                max_upload_seconds=args.max_upload_minutes * 60,
                max_upload_bytes=int(args.max_upload_mb * 2**20),
            )
        )
    except OSError as exc:
        print(f"error: {startup_problem(exc, args.listen)}", file=sys.stderr)
        return 1


def cmd_speaker(args: argparse.Namespace) -> int:
    """Run one speaker endpoint, or simulate every speaker of a zones file, or pair one."""
    import broadcaster.cli.speaker as speaker_cmd

    return speaker_cmd.run(args, data_dir(args))


def cmd_speakers(args: argparse.Namespace) -> int:
    """List speakers known to the running controller."""
    out = api(args, "GET", "/api/speakers")
    if args.json:
        print(json.dumps(out, ensure_ascii=False, indent=1))
        return 0
    tz = site_tz(args)
    storage = api(args, "GET", "/api/health").get("storage", {})
    if storage and not storage.get("ok", True):
        print(
            f"WARNING: the controller cannot write its history: {storage.get('error')} "
            f"({storage.get('pending')} records waiting); audio keeps playing",
            file=sys.stderr,
        )
    print(f"{'id':<16}{'kind':<8}{'online':<8}{'address':<22}{'last seen':<21}{'alerts':<10}zone")
    for s in out["speakers"]:
        alerts = sum(s.get("attacks", {}).values())
        zone = s["zone_path"] if s["assigned"] else "(unassigned: not in zones.yaml)"
        print(
            f"{s['id']:<16}{s['kind'] or '-':<8}{'yes' if s['online'] else 'NO':<8}"
            f"{s['address'] or '-':<22}{fmt_time(s['last_seen'], tz):<21}"
            f"{alerts or '-'!s:<10}{zone}"
        )
    c = out["counts"]
    print(f"{c['online']}/{c['total']} online, {c['unassigned']} unassigned")
    return 0


def print_broadcast(b: dict, tz: ZoneInfo) -> None:
    """A broadcast's state and per-speaker outcome, for people."""
    s = b["summary"]
    src = b["source"]
    what = (
        src.get("name")
        or src.get("title")
        or src.get("text")
        or src.get("label")
        or src.get("kind")
        if isinstance(src, dict)
        else src
    )
    others = ", ".join(f"{n} {k}" for k, n in sorted(s.get("states", {}).items()) if k != "played")
    print(
        f"broadcast {b['id']}: {b['state']} — {s['played']}/{s['speakers']} speakers played it"
        f" in full{f' ({others})' if others else ''} ({what}, {b['codec']}, started "
        f"{fmt_time(b['started_at'], tz)})"
    )
    if b.get("error"):
        print(f"  error: {b['error']}")
    for r in b["speakers"]:
        if not r["played"] or r["state"] != "played" or r["lost"]:
            print(
                f"  {r['speaker']}: {r['state']} packets={r['packets']} lost={r['lost']}"
                + (f" — {r['error']}" if r["error"] else "")
            )


def cmd_play(args: argparse.Namespace) -> int:
    """Upload a file (or name a library clip, or TTS text) and play it to the targets."""
    params = [("to", t) for t in args.to] + [
        ("codec", args.codec),
        ("priority", args.priority),
        ("chime", args.chime),
    ]
    data = None
    if args.clip or args.tts:
        params += [("clip", args.clip), ("tts", args.tts)]
    else:
        if not args.file:
            print("error: give an audio FILE, --clip ID or --tts TEXT", file=sys.stderr)
            return 2
        path = Path(args.file)
        if not path.is_file():
            print(f"error: {path}: no such file", file=sys.stderr)
            return 1
        data, params = path.read_bytes(), params + [("name", path.name)]
    b = api(args, "POST", "/api/broadcasts", params, data=data)
    if args.wait:
        while b["state"] in ACTIVE:
            time.sleep(0.3)
            b = api(args, "GET", f"/api/broadcasts/{b['id']}")
    if args.json:
        print(json.dumps(b, ensure_ascii=False, indent=1))
    else:
        print_broadcast(b, site_tz(args))
    return 0 if b["state"] in ("starting", "playing", "done") else 1


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop a broadcast."""
    b = api(args, "POST", f"/api/broadcasts/{args.id}/stop")
    print_broadcast(b, site_tz(args))
    return 0


def cmd_broadcasts(args: argparse.Namespace) -> int:
    """Show one broadcast, or list them."""
    if args.id:
        items = [api(args, "GET", f"/api/broadcasts/{args.id}")]
    else:
        items = api(args, "GET", "/api/broadcasts")["broadcasts"]
    if args.json:
        print(json.dumps(items if not args.id else items[0], ensure_ascii=False, indent=1))
        return 0
    for b in items:
        print_broadcast(b, site_tz(args))
    return 0


def cmd_library(args: argparse.Namespace) -> int:
    """Forward to the audio library's command line."""
    from audio_library import cli as lib_cli

    return lib_cli.main(args.rest, data_dir(args))


def cmd_demo(args: argparse.Namespace) -> int:
    """Controller + every simulated speaker + an announcement to the whole subdistrict."""
    from broadcaster.cli.demo import run_demo

    return run_demo(args, data_dir(args))


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    p = argparse.ArgumentParser(prog="broadcaster", description=__doc__)
    p.add_argument(
        "--data", help="data directory (default $BROADCASTER_DATA or ~/.local/share/broadcaster)"
    )
    p.add_argument(
        "--controller", help=f"controller URL (default $BROADCASTER_URL or {DEFAULT_URL})"
    )
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--tz", help="time zone for displayed times (default Asia/Shanghai)")
    sub = p.add_subparsers(dest="command", required=True)

    z = sub.add_parser("zones", help="check or show zones.yaml")
    z.add_argument("action", choices=["check", "show"])
    z.add_argument("file", nargs="?", default=DEFAULT_ZONES)
    z.add_argument("--json", action="store_true")
    z.set_defaults(func=cmd_zones)

    s = sub.add_parser("serve", help="run the controller")
    s.add_argument("--zones", default=DEFAULT_ZONES)
    s.add_argument(
        "--listen", default="127.0.0.1:8600", help="HTTP address (default 127.0.0.1:8600)"
    )
    s.add_argument(
        "--interface",
        default="127.0.0.1",
        help="address to send audio, browse mDNS and serve the clock on; a real site "
        "gives its LAN address here (default 127.0.0.1: loopback only)",
    )
    s.add_argument("--playout-delay", type=float, default=100.0, help="milliseconds (default 100)")
    s.add_argument("--site-tag", help="mDNS site tag to accept (default: the site id)")
    s.add_argument("--no-mdns", action="store_true", help="static addresses only")
    s.add_argument(
        "--max-upload-minutes",
        type=float,
        default=30.0,
        help="longest audio accepted for a broadcast, checked while decoding (default 30)",
    )
    s.add_argument(
        "--max-upload-mb", type=float, default=64.0, help="largest upload in MiB (default 64)"
    )
    s.add_argument(
        "--tls",
        choices=["auto"],
        help="serve HTTPS with a certificate made on first "
        "run under DATA/tls (trust DATA/tls/ca.pem on the devices; README)",
    )
    s.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve HTTPS with the site's certificate (PEM, chain included)",
    )
    s.add_argument("--tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    s.set_defaults(func=cmd_serve)

    sp = sub.add_parser("speaker", help="run a speaker endpoint, simulate many, or pair one")
    sp.add_argument("action", nargs="?", choices=["run", "pair"], default="run")
    sp.add_argument("speaker_id", nargs="?", help="with pair: the speaker to pair")
    sp.add_argument("--out", help="with pair: key file to write")
    sp.add_argument("--simulate", metavar="ZONES", help="simulate every speaker of this zones file")
    sp.add_argument("--only", help="comma-separated speaker ids to simulate")
    sp.add_argument("--record", metavar="DIR", help="write what each speaker played under DIR")
    sp.add_argument("--key-file", help="this speaker's key file (from `speaker pair`)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    sp.add_argument("--port", type=int, default=8700, help="control API port (default 8700)")
    sp.add_argument(
        "--rtp-port", type=int, default=5004, help="RTP port, RTCP is +1 (default 5004)"
    )
    sp.add_argument(
        "--output",
        help="a real speaker's audio output: alsa[:DEVICE] (aplay) or "
        "pipe:COMMAND reading s16le mono on stdin ({rate} is filled in)",
    )
    sp.add_argument(
        "--output-latency",
        type=float,
        default=0.0,
        help="milliseconds from writing to the output until sound leaves it",
    )
    sp.add_argument("--impair", help="test faults: 'ID=delay=50ms,jitter=5ms,loss=1%%;*=...'")
    sp.add_argument(
        "--clock-skew",
        type=float,
        default=0.0,
        help="simulate speaker clocks off by up to this many seconds",
    )
    sp.add_argument(
        "--clock-ppm",
        type=float,
        default=0.0,
        help="simulate speaker clocks running up to this many millionths fast or slow",
    )
    sp.add_argument(
        "--clock-step",
        metavar="ID=AT:STEP",
        help="test: step a simulated speaker's wall clock by STEP s, AT s after start "
        "(e.g. h1-1=3:+5; several separated by ';')",
    )
    sp.add_argument("--seed", type=int, default=1)
    sp.add_argument("--site-tag", help="mDNS site tag (default: the site id)")
    sp.add_argument("--no-mdns", action="store_true")
    sp.add_argument(
        "--controller",
        dest="dial_in",
        metavar="HOST:PORT",
        help="dial in: connect out to this controller (behind NAT, on 4G); default: the key "
        "file's `controller`, if any ('none': don't); with pair: write it into the key file",
    )
    sp.add_argument("--ready-file", help="write the simulated addresses here as JSON when ready")
    sp.add_argument(
        "--light",
        action="store_true",
        help="with --simulate, for scale runs: authenticate one packet in 50, take the rest by "
        "their header, decode nothing (docs/scale.md)",
    )
    sp.set_defaults(func=cmd_speaker)

    ls = sub.add_parser("speakers", help="list speakers and their health")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_speakers)

    pl = sub.add_parser("play", help="play an audio file to zones, groups or speakers")
    pl.add_argument("file", nargs="?", help="an audio file (any format ffmpeg reads)")
    pl.add_argument("--clip", help="play this audio-library clip instead of a file")
    pl.add_argument("--tts", help="read this text aloud (Mandarin) instead of a file")
    pl.add_argument("--chime", help="a chime before the audio (two-tone, four-tone, …)")
    pl.add_argument(
        "--to",
        action="append",
        required=True,
        help="a speaker, village, area, group or the subdistrict (repeatable)",
    )
    pl.add_argument("--codec", default="pcmu", choices=sorted(CODECS))
    pl.add_argument(
        "--priority",
        default="announcement",
        choices=["background", "announcement", "live", "emergency"],
    )
    pl.add_argument("--wait", action="store_true", help="wait until it ends and print the outcome")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_play)

    st = sub.add_parser("stop", help="stop a broadcast")
    st.add_argument("id")
    st.set_defaults(func=cmd_stop)

    bc = sub.add_parser("broadcasts", help="list broadcasts or show one")
    bc.add_argument("id", nargs="?")
    bc.add_argument("--json", action="store_true")
    bc.set_defaults(func=cmd_broadcasts)

    lib = sub.add_parser(
        "library", help="the audio library (add, list, show, tts, export ...)", add_help=False
    )
    lib.add_argument("rest", nargs=argparse.REMAINDER)
    lib.set_defaults(func=cmd_library)

    from broadcaster.cli import keys, page, schedule, users

    users.register(sub, data_dir, load_site)
    schedule.register(sub)
    page.register(sub)
    keys.register(sub, data_dir, load_site)

    d = sub.add_parser("demo", help="controller + all simulated speakers + a sample announcement")
    d.add_argument("--zones", default=DEFAULT_ZONES)
    d.add_argument("--once", action="store_true", help="exit after the announcement")
    d.add_argument("--port", type=int, default=8600)
    d.add_argument("--site-tag", help="mDNS site tag, to keep two demos on one host apart")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args) or 0
    except BroadcasterError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `broadcaster zones show | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
