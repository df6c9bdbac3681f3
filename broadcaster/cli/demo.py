"""`broadcaster demo`: the controller and all 113 simulated speakers, then an announcement to the
whole subdistrict (chime + Mandarin text-to-speech from the audio library), then where to look."""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from broadcaster.access.accounts import Accounts
from broadcaster.access.audit import AuditLog
from broadcaster.cli.client import Client, ClientError
from broadcaster.core.broadcast import ACTIVE
from broadcaster.endpoint.simulator import playout_records
from broadcaster.errors import BroadcasterError
from broadcaster.protocol.auth import KeyStore
from broadcaster.site import Site, load
from broadcaster.storage.db import Store

ANNOUNCEMENT = (
    "各位村民请注意：现在是秋冬季防火禁烧关键时期，严禁焚烧秸秆和垃圾，发现火情请立即拨打一一九。"
)


DEMO_ADMIN = "admin"


def demo_login(data: Path, site: Site) -> tuple[str, str, str]:
    """The demo's own admin in its own data directory: (name, password, API token).

    A fresh install has no default password; the demo makes one admin for itself, once, keeps
    the password in DATA/demo-admin.txt (mode 0600) and says so.
    """
    pw_file = data / "demo-admin.txt"
    store = Store.in_data_dir(data)
    try:
        accounts = Accounts(store, site, audit=AuditLog(store))
        if not pw_file.exists():
            password = secrets.token_urlsafe(9)
            try:
                accounts.add_user(DEMO_ADMIN, password, site.root.id, "admin")
            except BroadcasterError:  # made by an earlier run that lost its note
                accounts.set_password(DEMO_ADMIN, password)
            fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
        password = pw_file.read_text().strip()
        token = accounts.issue_token(DEMO_ADMIN, 24 * 3600.0).secret
    finally:
        store.close()
    return DEMO_ADMIN, password, token


def run_demo(args: argparse.Namespace, data: Path) -> int:
    """Run the demo; with --once, exit after the announcement."""
    zones_file = Path(args.zones)
    site = load(zones_file)
    record = data / "recordings"
    KeyStore(data / "speaker-keys.json").ensure(list(site.speakers))
    base = f"http://127.0.0.1:{args.port}"
    user, password, token = demo_login(data, site)
    client = Client(base, token=token)
    py = [sys.executable, "-m", "broadcaster.cli.main", "--data", str(data)]
    t0 = time.monotonic()
    tag = ["--site-tag", args.site_tag] if args.site_tag else []
    procs = [
        subprocess.Popen(
            py + ["serve", "--zones", str(zones_file), "--listen", f"127.0.0.1:{args.port}"] + tag
        ),
        subprocess.Popen(
            py + ["speaker", "--simulate", str(zones_file), "--record", str(record)] + tag,
            stdout=subprocess.DEVNULL,
        ),
    ]
    print(
        f"starting the controller on {base} and {len(site.speakers)} simulated speakers …",
        flush=True,
    )
    try:
        counts: dict = {}
        while time.monotonic() - t0 < 90:
            try:
                counts = client.get("/api/speakers")["counts"]
                if counts["online"] == counts["total"]:
                    break
            except ClientError:
                pass
            if any(p.poll() is not None for p in procs):
                print("error: a demo process exited; see its messages above", file=sys.stderr)
                return 1
            time.sleep(0.3)
        print(
            f"{counts.get('online', 0)}/{counts.get('total', 0)} speakers online after "
            f"{time.monotonic() - t0:.1f} s",
            flush=True,
        )
        b = client.post(
            "/api/broadcasts",
            [
                ("to", site.root.id),
                ("tts", ANNOUNCEMENT),
                ("chime", "four-tone"),
                ("priority", "announcement"),
            ],
        )
        print(
            f"playing the fire-ban notice (four-tone chime + Mandarin text-to-speech) to the "
            f"whole subdistrict: broadcast {b['id']}",
            flush=True,
        )
        while b["state"] in ACTIVE:
            time.sleep(0.5)
            b = client.get(f"/api/broadcasts/{b['id']}")
        recs = playout_records(record, b["id"])
        # the acoustic truth a simulated speaker adds (first_sample_at is controller time)
        starts = [
            r.get("first_sample_true", r["first_sample_at"])
            for r in recs.values()
            if r["first_sample_at"]
        ]
        spread = (max(starts) - min(starts)) * 1000 if starts else float("nan")
        med = statistics.median(starts) if starts else 0
        lost = sum(r["lost"] for r in recs.values())
        print(
            f"broadcast {b['state']}: {b['summary']['heard']}/{b['summary']['speakers']} "
            f"speakers played it ({b['summary']['played']} in full; {lost} frames lost in all, "
            f"by the speakers' own reports); first sample spread across speakers "
            f"{spread:.2f} ms; "
            f"first sound {(med - b['created_at']) * 1000:.0f} ms after the command"
        )
        print("\nwhere to look:")
        print(
            f"  the console     {base}/   (open it in a browser on this machine; log in "
            "with the name and password below)"
        )
        print(f"  recordings      {record}/<speaker-id>/{b['id']}.wav and playout.jsonl")
        print(
            f"  speakers        {base}/api/speakers   (or: broadcaster --controller {base} "
            "speakers)"
        )
        print(f"  the broadcast   {base}/api/broadcasts/{b['id']}")
        print(f"  the zone tree   {base}/api/zones")
        print(f"  data directory  {data}")
        print(
            f"\nlog in as {user!r} with password {password!r} (made for this demo, kept in "
            f"{data / 'demo-admin.txt'}); for the command line: "
            f"export BROADCASTER_TOKEN=$(broadcaster --data {data} users token {user})"
        )
        if args.once:
            return 0 if b["state"] == "done" else 1
        print("\nthe controller and speakers keep running; press Ctrl-C to stop", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
