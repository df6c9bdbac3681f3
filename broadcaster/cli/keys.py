"""`broadcaster keys`: the speakers' pairing keys, on the controller's machine.

`list` shows ids and fingerprints (never a key), `init` makes the keys of a new site, `rekey`
replaces chosen keys (a stolen or decommissioned horn). The controller only ever mints keys for
a new store or for speakers new in zones.yaml: anything that unpairs a speaker is asked for here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from broadcaster.protocol.auth import KeyStore, fingerprint
from broadcaster.site import Site

DEFAULT_ZONES = "zones.yaml"
KEY_FILE = "speaker-keys.json"
DataDirFn = Callable[[argparse.Namespace], Path]
LoadSiteFn = Callable[[str], Site]


def paired_speakers(site: Site) -> list[str]:
    """The speakers that hold a pairing key: our own endpoints."""
    return sorted(s for s, sp in site.speakers.items() if sp.driver == "bcspeaker")


def _repair_note(ids: list[str]) -> None:
    print(
        f"re-pair {'this speaker' if len(ids) == 1 else f'these {len(ids)} speakers'} "
        "(until then each refuses the controller and shows offline):"
    )
    for sid in ids:
        print(
            f"  broadcaster speaker pair {sid} --out {sid}.key   # copy to the speaker, restart it"
        )
    print(
        "  (a speaker behind NAT: add --controller HOST:PORT, the address it dials, and the key "
        "file carries it)"
    )
    print("then restart the controller: it loads the keys when it starts")


def _cmd_list(args: argparse.Namespace, data: Path, site: Site) -> int:
    keys = KeyStore(data / KEY_FILE).read()
    if keys is None:
        print(
            f"error: {data / KEY_FILE}: no key store yet; `broadcaster keys init` makes one",
            file=sys.stderr,
        )
        return 1
    wanted = paired_speakers(site)
    rows = [
        {
            "speaker": sid,
            "fingerprint": fingerprint(keys[sid]) if sid in keys else None,
            "in_zones": sid in site.speakers,
        }
        for sid in sorted(set(keys) | set(wanted))
    ]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'speaker':<20}{'fingerprint':<13}note")
    for r in rows:
        note = (
            ""
            if r["in_zones"] and r["fingerprint"]
            else ("not in zones.yaml" if r["fingerprint"] else "no key: `broadcaster keys init`")
        )
        print(f"{r['speaker']:<20}{r['fingerprint'] or '-':<13}{note}")
    have = sum(1 for r in rows if r["fingerprint"] and r["in_zones"])
    print(f"{have}/{len(wanted)} speakers of zones.yaml have a key")
    return 0


def _cmd_init(args: argparse.Namespace, data: Path, site: Site) -> int:
    minted = KeyStore(data / KEY_FILE).init(paired_speakers(site))
    print(
        f"{data / KEY_FILE}: keys minted for {len(minted)} speakers"
        + (f": {', '.join(minted)}" if minted else " (every speaker already has one)")
    )
    if minted:
        print("pair each: broadcaster speaker pair ID --out ID.key, copy the file to the speaker")
    return 0


def _cmd_rekey(args: argparse.Namespace, data: Path, site: Site) -> int:
    wanted = paired_speakers(site)
    if args.all == bool(args.speakers):
        print("error: name the speakers to re-key, or give --all", file=sys.stderr)
        return 2
    ids = wanted if args.all else list(dict.fromkeys(args.speakers))
    unknown = [sid for sid in ids if sid not in wanted]
    if unknown:
        print(
            f"error: not a speaker of {args.zones} with a pairing key: {', '.join(unknown)}",
            file=sys.stderr,
        )
        return 2
    keys = KeyStore(data / KEY_FILE).rekey(ids, everyone=args.all)
    print(f"{data / KEY_FILE}: new keys for {len(ids)} speaker(s) (mode 0600):")
    for sid in ids:
        print(f"  {sid:<20}{fingerprint(keys[sid])}")
    _repair_note(ids)
    return 0


def register(
    subparsers: argparse._SubParsersAction, data_dir_fn: DataDirFn, load_site_fn: LoadSiteFn
) -> None:
    """Add the `keys` command to a `broadcaster` sub-command parser."""

    def bind(fn: Callable[[argparse.Namespace, Path, Site], int]) -> Callable[..., int]:
        return lambda args: fn(args, data_dir_fn(args), load_site_fn(args.zones))

    zones_default = os.environ.get("BROADCASTER_ZONES", DEFAULT_ZONES)
    k = subparsers.add_parser("keys", help="speaker pairing keys: list, init, rekey")
    ks = k.add_subparsers(dest="keys_action", required=True)
    ls = ks.add_parser("list", help="speaker ids and key fingerprints (never the keys)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=bind(_cmd_list))
    ini = ks.add_parser("init", help="mint keys for every speaker without one (a new site)")
    ini.set_defaults(func=bind(_cmd_init))
    rk = ks.add_parser("rekey", help="replace speakers' keys; they must be re-paired")
    rk.add_argument("speakers", nargs="*", metavar="SPEAKER")
    rk.add_argument("--all", action="store_true", help="every speaker: a new key store")
    rk.set_defaults(func=bind(_cmd_rekey))
    for p in (ls, ini, rk):
        p.add_argument(
            "--zones",
            default=zones_default,
            help=f"the zones file (default $BROADCASTER_ZONES or {DEFAULT_ZONES})",
        )
