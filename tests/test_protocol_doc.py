"""docs/protocol.md tells the truth: its marked JSON examples (`<!-- example: NAME -->` before a
```json block) are checked against a real endpoint and a real controller — the fields, their
types, what a speaker accepts and answers, what a controller sends and what it records."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

import broadcaster.site as zones
from broadcaster.drivers.bcspeaker.link import SpeakerLink
from broadcaster.endpoint.speaker import Speaker, SpeakerSpec, Ticker
from broadcaster.protocol.auth import KeyStore, sign_request
from tests.endpoint.direct import Stream
from tests.support.audio import sweep
from tests.support.harness import ROOT, controller, wait_done, wait_online
from tests.support.net import free_port
from tests.support.sites import small_site

DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
EXAMPLE = re.compile(r"<!-- example: (\S+) -->\s*```json\n(.*?)```", re.DOTALL)
NULLABLE = {"playing", "priority", "base_time", "multicast", "volume", "first_sample_at"}


def examples() -> dict[str, object]:
    """Every marked example, parsed."""
    return {name: json.loads(body) for name, body in EXAMPLE.findall(DOC)}


def kind(v: object) -> str:
    """A JSON value's type."""
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        type(None): "null",
        list: "array",
        dict: "object",
    }[type(v)]


def same_shape(doc: dict, real: dict, where: str) -> None:
    """Exactly the documented fields, each of the documented type (null where it may be)."""
    assert set(real) == set(doc), (where, sorted(set(real) ^ set(doc)))
    for k, v in doc.items():
        if k in NULLABLE and None in (v, real[k]):
            continue
        assert kind(real[k]) == kind(v), (where, k, real[k], v)


def test_the_examples_are_valid_json_and_all_there():
    assert set(examples()) >= {
        "status",
        "play",
        "play-answer",
        "outranked",
        "refusal",
        "playout-record",
        "key-file",
    }


async def test_a_real_endpoint_matches_the_documented_examples(tmp_path):
    ex = examples()
    key = os.urandom(32)
    sp = Speaker(SpeakerSpec("horn-01-01-1", "horn", key, "t", record_dir=tmp_path))
    await sp.start()
    ticker = asyncio.ensure_future(Ticker([sp]).run())
    link = SpeakerLink({"horn-01-01-1": key})

    async def call(method: str, path: str, body: dict | None = None) -> dict:
        return await link.call("horn-01-01-1", sp.spec.host, sp.control_port, method, path, body)

    try:
        # /status: exactly the documented fields and types; every counter it has is documented
        status = await call("GET", "/status")
        same_shape(ex["status"], status, "status")
        same_shape(ex["status"]["clock"], status["clock"], "status.clock")
        assert all(isinstance(v, int) for v in status["counters"].values())

        # the documented /play body is accepted as it stands (with a real sealed key)
        stream = Stream("20261127-205909-bc1b06", 21, [sp])
        body = dict(ex["play"])
        body.update(
            ssrc=stream.sender.ssrc, base_ts=stream.sender.base_ts, key=stream.body(sp)["key"]
        )
        answer = await call("POST", "/play", body)
        same_shape(ex["play-answer"], answer, "play answer")
        assert sp.status()["playing"] == body["broadcast"] and sp.volume == body["volume"]
        stream.start()
        await stream.send(sweep(8000, 0.6))
        stream.end()
        while sp.status()["playing"]:
            await asyncio.sleep(0.02)
        rec = await call("GET", f"/playout/{body['broadcast']}")
        assert rec.pop("state") == "done"
        same_shape(ex["playout-record"], rec, "playout record")
        assert rec["ended"] == "end" and rec["packets"] + rec["lost"] == stream.sent
        assert rec["samples"] == (rec["packets"] + rec["lost"]) * 160
        # first_sample_at is controller time: the instant the stream fixed for frame 0
        assert abs(rec["first_sample_at"] - stream.base_time) < 0.01
        stream.close()

        # 409 outranked, in the documented shape
        hold = Stream("holder", 43, [sp])
        await call("POST", "/play", hold.body(sp))
        low = Stream("low", 21, [sp])
        async with aiohttp.ClientSession() as http:
            raw = json.dumps(low.body(sp)).encode()
            auth = sign_request("horn-01-01-1", key, "POST", "/play", raw, time.time())
            async with http.post(
                f"http://127.0.0.1:{sp.control_port}/play",
                data=raw,
                headers={"Authorization": auth},
            ) as resp:
                assert resp.status == 409 and "X-BC-MAC" in resp.headers  # errors are signed
                out = await resp.json()
            same_shape(ex["outranked"], out, "outranked")
            same_shape(ex["outranked"]["detail"], out["detail"], "outranked.detail")
            await call("POST", "/stop", {"broadcast": "holder"})

            # an unauthenticated request: 401, the documented shape, and no MAC
            raw = json.dumps({"volume": 10}).encode()
            auth = sign_request("horn-01-01-1", key, "POST", "/volume", raw, time.time() - 41)
            async with http.post(
                f"http://127.0.0.1:{sp.control_port}/volume",
                data=raw,
                headers={"Authorization": auth},
            ) as resp:
                assert resp.status == 401 and "X-BC-MAC" not in resp.headers
                out = await resp.json()
            same_shape(ex["refusal"], out, "refusal")
            assert out["error"] == "auth_stale" and f"`{out['error']}`" in DOC
        hold.close()
        low.close()
        # every counter the speaker kept is named in the document
        counters = (await call("GET", "/status"))["counters"]
        undocumented = [
            c for c in counters if f"`{c}`" not in DOC and not c.startswith("control_refused_")
        ]
        assert not undocumented, undocumented
    finally:
        ticker.cancel()
        await link.close()
        await sp.close()


def test_the_key_file_is_as_documented(tmp_path):
    path = small_site(tmp_path / "z.yaml", villages=1, horns=1, columns=0)
    out = tmp_path / "h.key"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "broadcaster.cli.main",
            "--data",
            str(tmp_path / "d"),
            "speaker",
            "pair",
            "h1-1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "BROADCASTER_ZONES": str(path)},
    )
    info = json.loads(out.read_text())
    same_shape(examples()["key-file"], info, "key file")
    assert info["speaker"] == "h1-1" and info["site"] == "sd" and len(info["key"]) == 64
    assert oct(out.stat().st_mode & 0o777) == "0o600"


async def test_a_real_controller_sends_and_records_as_documented(tmp_path, data, tag):
    ex = examples()
    port = free_port()
    path = small_site(
        tmp_path / "z.yaml", villages=1, horns=1, columns=0, static={"h1-1": f"127.0.0.1:{port}"}
    )
    text = Path(path).read_text().replace("kind: horn,", "kind: horn, volume: 65,")
    Path(path).write_text(text)
    site = zones.load(path)
    key = KeyStore(data / "speaker-keys.json").ensure(list(site.speakers))["h1-1"]
    sp = Speaker(
        SpeakerSpec("h1-1", "horn", key, tag, control_port=port, record_dir=tmp_path / "rec")
    )
    bodies: list[dict] = []
    play = sp._play

    async def spy(body: bytes):
        bodies.append(json.loads(body))
        return await play(body)

    sp._play = spy  # type: ignore[method-assign]
    await sp.start()
    ticker = asyncio.ensure_future(Ticker([sp]).run())
    try:
        async with controller(site, data, tag, mdns=False) as (ctl, _):
            await wait_online(ctl, 1)
            while not ctl.registry.get("h1-1").clock_synced:
                await asyncio.sleep(0.05)
            b = await wait_done(ctl, (await ctl.play(sweep(8000, 1.0), ["h1-1"])).id)
        # the /play a real controller sends: the documented fields; base_time null at set-up;
        # the volume from zones.yaml
        assert len(bodies) == 1
        same_shape(ex["play"], bodies[0], "controller's /play")
        assert bodies[0]["base_time"] is None and bodies[0]["volume"] == 65
        # what the controller recorded is what the speaker reported, on the controller's clock
        rec = sp.reports[b["id"]]
        same_shape(ex["playout-record"], rec, "speaker's record")
        res = b["speakers"][0]
        assert (res["packets"], res["lost"], res["samples"]) == (
            rec["packets"],
            rec["lost"],
            rec["samples"],
        )
        assert res["first_sample_at"] == rec["first_sample_at"]
        assert abs(rec["first_sample_at"] - b["started_at"]) < 0.01
        assert res["state"] == "played" and rec["ended"] == "end"
    finally:
        ticker.cancel()
        await sp.close()
