"""The live event feed (SSE): scope filtering, Last-Event-ID, heartbeats, and leaving cleanly."""

from __future__ import annotations

import asyncio
import json

import pytest

import broadcaster.site as zones
from broadcaster.web import feed
from tests.support.harness import controller
from tests.support.sites import small_site
from tests.web.helpers import accounts_of, bearer, make_user


@pytest.fixture
def site(tmp_path):
    return zones.load(small_site(tmp_path / "zones.yaml", villages=2, horns=2, columns=1))


async def read_events(resp, count: int, timeout: float = 5.0) -> tuple[list[dict], list[str]]:
    """Read `count` events from an SSE response: (event JSON list, every line read)."""
    events: list[dict] = []
    lines: list[str] = []
    ids: list[int] = []

    async def go() -> None:
        while len(events) < count:
            line = (await resp.content.readline()).decode()
            if not line:
                return
            lines.append(line.rstrip("\n"))
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            elif line.startswith("data: "):
                events.append(json.loads(line[6:]))

    await asyncio.wait_for(go(), timeout)
    assert [e["seq"] for e in events] == ids[: len(events)]  # each id is the event's seq
    return events, lines


async def test_feed_is_filtered_to_scope_and_resumes_from_last_event_id(site, data, tag):
    async with controller(site, data, tag, accounts=True, mdns=False) as (ctl, client):
        _, root = make_user(client, "office", site.root.id, "admin")
        _, village = make_user(client, "v1-op", "v1")
        base = len(ctl.events._subs)
        resp = await client.get(feed.PATH, headers=bearer(village))
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        await asyncio.sleep(0.1)
        assert len(ctl.events._subs) == base + 1
        ctl.events.publish("online", speaker="h2-1")  # another village
        ctl.events.publish("storage_fault", message="disk full")  # no speaker: site-wide only
        mine = ctl.events.publish("offline", speaker="h1-2", reason="test")
        got, _ = await read_events(resp, 1)
        assert [(e["kind"], e["speaker"]) for e in got] == [("offline", "h1-2")]
        assert got[0]["seq"] == mine.seq
        resp.close()
        for _ in range(50):  # the subscription ends when the client goes (within POLL)
            if len(ctl.events._subs) == base:
                break
            await asyncio.sleep(0.1)
        assert len(ctl.events._subs) == base

        # the subdistrict sees all three; a reconnect from Last-Event-ID gets only what followed
        later = ctl.events.publish("online", speaker="h1-1")
        resp = await client.get(
            feed.PATH, headers={**bearer(root), "Last-Event-ID": str(mine.seq - 2)}
        )
        got, _ = await read_events(resp, 3)
        assert [e["seq"] for e in got] == [mine.seq - 1, mine.seq, later.seq]
        assert [e["kind"] for e in got] == ["storage_fault", "offline", "online"]
        resp.close()
        resp = await client.get(
            feed.PATH, headers={**bearer(village), "Last-Event-ID": str(mine.seq - 3)}
        )
        live = ctl.events.publish("online", speaker="h1-2")
        got, _ = await read_events(resp, 3)
        assert [e["seq"] for e in got] == [mine.seq, later.seq, live.seq]
        resp.close()


async def test_heartbeat_and_revocation_end_the_stream(site, data, tag, monkeypatch):
    monkeypatch.setattr(feed, "HEARTBEAT", 0.3)
    monkeypatch.setattr(feed, "POLL", 0.1)
    async with controller(site, data, tag, accounts=True, mdns=False) as (_ctl, client):
        _, token = make_user(client, "v2-op", "v2")
        resp = await client.get(feed.PATH, headers=bearer(token))
        assert resp.status == 200
        lines: list[str] = []
        while ": heartbeat" not in lines:
            lines.append((await asyncio.wait_for(resp.content.readline(), 3)).decode().strip())
        acc = accounts_of(client)
        acc.revoke_token(acc.token_id_of(token))
        rest = await asyncio.wait_for(resp.content.read(), 3)  # the server ends the stream
        assert b"data:" not in rest
        assert (await client.get(feed.PATH, headers=bearer(token))).status == 401


async def test_feed_needs_credentials(site, data, tag):
    async with controller(site, data, tag, accounts=True, mdns=False) as (_ctl, client):
        resp = await client.get(feed.PATH)
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthorized"
