"""`broadcaster speaker`: run one endpoint, simulate a whole site, or pair a speaker."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from broadcaster.endpoint.outputs import output_command
from broadcaster.endpoint.simulator import build_specs, load_keys, run_simulation
from broadcaster.endpoint.speaker import SpeakerSpec
from broadcaster.net.udp import Impairment
from broadcaster.protocol.auth import KeyStore


def pair(args: argparse.Namespace, data: Path) -> int:
    """Write one speaker's key file from the controller's key store (minting its key if new)."""
    from broadcaster.cli.main import load_site

    if not args.speaker_id:
        raise SystemExit("usage: broadcaster speaker pair SPEAKER_ID --out FILE")
    site = load_site(os.environ.get("BROADCASTER_ZONES", "zones.yaml"))
    if args.speaker_id not in site.speakers:
        raise SystemExit(f"error: speaker {args.speaker_id!r} is not in zones.yaml")
    controller = getattr(args, "dial_in", None)
    if controller:
        from broadcaster.endpoint.dialin import parse_controller

        try:
            parse_controller(controller)
        except ValueError as exc:
            raise SystemExit(f"error: --controller: {exc}") from None
    key = KeyStore(data / "speaker-keys.json").ensure(list(site.speakers))[args.speaker_id]
    out = Path(args.out or f"{args.speaker_id}.key")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode on open: force owner-only
    info = {
        "speaker": args.speaker_id,
        "kind": site.speakers[args.speaker_id].kind,
        "site": site.id,
        "key": key.hex(),
    }
    if controller:  # a speaker behind NAT: it dials this address (docs/protocol.md §8)
        info["controller"] = controller
    with os.fdopen(fd, "w") as fh:
        json.dump(info, fh)
    print(
        f"wrote {out}: copy it to the speaker over a trusted channel (USB, SSH) and run "
        f"`broadcaster speaker --key-file {out.name}` there"
        + (f" (it dials in to {controller})" if controller else "")
    )
    return 0


def dial_target(option: str | None, info: dict, key_file: str) -> tuple[str, int] | None:
    """The controller to dial: --controller, else the key file's `controller`; None for a
    speaker that waits to be reached (no address, or `--controller none`)."""
    from broadcaster.endpoint.dialin import parse_controller

    text = option if option is not None else info.get("controller")
    if text is None or text == "none":
        return None
    try:
        if not isinstance(text, str):
            raise ValueError(f"{text!r} is not HOST:PORT (e.g. 10.0.0.1:8600)")
        return parse_controller(text)
    except ValueError as exc:
        where = "--controller" if option is not None else f"{key_file}: controller"
        raise SystemExit(f"error: {where}: {exc}") from None


async def _run_one(spec: SpeakerSpec, mdns: bool) -> None:
    # a real speaker advertises on the interface it serves on (loopback unless told otherwise)
    await run_simulation([spec], mdns=mdns, mdns_interfaces=[spec.host])


def run(args: argparse.Namespace, data: Path) -> int:
    """Dispatch the speaker command."""
    if args.action == "pair":
        return pair(args, data)
    record = Path(args.record) if args.record else None
    if args.simulate:
        from broadcaster.cli.main import load_site

        site = load_site(args.simulate)
        only = [i.strip() for i in args.only.split(",")] if args.only else None
        specs = build_specs(
            site,
            load_keys(data, site),
            only=only,
            tag=args.site_tag or site.id,
            record_dir=record,
            impair=args.impair,
            clock_skew=args.clock_skew,
            clock_ppm=args.clock_ppm,
            seed=args.seed,
            clock_steps=args.clock_step,
            light=args.light,
        )
        if args.dial_in:  # a simulated village behind NAT: every speaker dials the controller
            from broadcaster.endpoint.dialin import run_dialin

            target = dial_target(args.dial_in, {}, args.simulate)
            if target is not None:
                ready = Path(args.ready_file) if args.ready_file else None
                asyncio.run(run_dialin(specs, target, ready))
                return 0
        asyncio.run(
            run_simulation(
                specs,
                mdns=not args.no_mdns,
                ready_file=Path(args.ready_file) if args.ready_file else None,
            )
        )
        return 0
    if not args.key_file:
        raise SystemExit("error: a real speaker needs --key-file (see `broadcaster speaker pair`)")
    info = json.loads(Path(args.key_file).read_text())
    spec = SpeakerSpec(
        info["speaker"],
        info.get("kind", "horn"),
        bytes.fromhex(info["key"]),
        args.site_tag or info["site"],
        host=args.host,
        control_port=args.port,
        rtp_port=args.rtp_port,
        record_dir=record,
        multicast_iface=args.host,
        impair=Impairment.parse(args.impair) if args.impair else None,
        output=output_command(args.output) if args.output else None,
        output_latency=args.output_latency / 1000,
    )
    target = dial_target(getattr(args, "dial_in", None), info, args.key_file)
    if target is not None:  # behind NAT: connect out, advertise nothing
        from broadcaster.endpoint.dialin import run_dialin

        asyncio.run(run_dialin([spec], target))
        return 0
    asyncio.run(_run_one(spec, not args.no_mdns))
    return 0
