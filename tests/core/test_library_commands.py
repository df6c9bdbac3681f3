"""Library commands over HTTP: TTS into a clip, its audio to preview, bad input as 4xx."""

from __future__ import annotations

import io
import wave

import broadcaster.site as zones
from tests.support.harness import controller
from tests.support.sites import small_site


async def test_tts_clip_can_be_previewed_as_wav_and_errors_are_plain(tmp_path, data, tag):
    site = zones.load(small_site(tmp_path / "z.yaml", villages=1, horns=1, columns=1))
    async with controller(site, data, tag, mdns=False) as (_, client):
        r = await client.post("/api/library/tts", json={"text": "各位村民请注意", "title": "试听"})
        assert r.status == 201, await r.text()
        clip = await r.json()
        r = await client.get(f"/api/library/{clip['id']}/audio")
        assert r.status == 200 and r.content_type == "audio/wav"
        with wave.open(io.BytesIO(await r.read())) as w:
            assert w.getframerate() == 16000 and w.getnframes() > 16000 * 0.5
        r = await client.get("/api/library/nope/audio")
        assert r.status == 404 and (await r.json())["error"]
        r = await client.post("/api/library/tts", json={"text": "  "})
        assert r.status == 422 and (await r.json())["error"] == "empty_text"
        r = await client.post("/api/library/tts", json={"text": "x", "colour": "red"})
        body = await r.json()
        assert r.status == 400 and body["error"] == "unknown_field" and "colour" in body["message"]
        listed = await (await client.get("/api/library")).json()
        assert clip["id"] in {c["id"] for c in listed["clips"]} and "four-tone" in listed["chimes"]


async def test_an_upload_longer_than_the_limit_is_refused_while_decoding(tmp_path, data, tag):
    from broadcaster.web.api import SERVICES
    from tests.support.audio import sweep, wav_file

    site = zones.load(small_site(tmp_path / "z.yaml", villages=1, horns=1, columns=1))
    async with controller(site, data, tag, mdns=False) as (ctl, client):
        client.app[SERVICES].max_upload_seconds = 1.0
        ctl.registry.get("h1-1").online = True  # no speaker needed: refused before playing
        wav = wav_file(tmp_path / "long.wav", 8000, sweep(8000, 3.0)).read_bytes()
        r = await client.post("/api/broadcasts", params={"to": "v1", "name": "long.wav"}, data=wav)
        body = await r.json()
        assert r.status == 413 and body["error"] == "too_long" and "long.wav" in body["message"]
        assert not ctl.broadcasts  # nothing started
