"""The OpenAPI document matches the running API: schemathesis over every operation, no 5xx.

The controller runs for real (aiohttp on 127.0.0.1 port 0, accounts on, a small site with no
speakers online, so a broadcast that passes every check is refused 409 and nothing plays long).
Schemathesis generates valid and invalid requests from the served document and calls the server
from a worker thread while the event loop serves them.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import broadcaster.site as zones
from broadcaster.core.commands import REGISTRY
from broadcaster.protocol.codecs import CODECS
from broadcaster.scheduler.engine import Scheduler
from broadcaster.web.api import SERVICES
from broadcaster.web.feed import PATH as STREAM_PATH
from tests.support.harness import controller
from tests.support.sites import small_site
from tests.web.helpers import accounts_of, bearer, make_user

EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 6}
# extra passes that reach past the first check (a real target, a live body), positive data
STEERED: list[tuple[str, str, dict, int]] = [
    ("POST", "/api/broadcasts", {"to": ["v1"]}, 15),
    ("POST", "/api/broadcasts", {"to": ["h2-1"], "live": "true"}, 8),
    ("POST", "/api/library", {"name": "clip.mp3"}, 6),
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def site(tmp_path):
    return zones.load(small_site(tmp_path / "zones.yaml", villages=2, horns=2, columns=1))


def run_operation(
    op,
    mode: GenerationMode,
    examples: int,
    base_url: str,
    token: str,
    fresh_token,
    seen: Counter,
    query: dict | None = None,
) -> int:
    """Schemathesis cases for one operation; raises the first failing check."""
    calls = 0

    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=op.as_strategy(generation_mode=mode, query=query))
    def check(case):
        nonlocal calls
        # logging out revokes the token it came with: give it its own
        tok = fresh_token() if op.path == "/api/logout" else token
        headers = {**(case.headers or {}), **bearer(tok)}
        resp = case.call(base_url=base_url, headers=headers, timeout=60)
        calls += 1
        seen[f"{op.method.upper()} {op.path} {resp.status_code}"] += 1
        case.validate_response(resp, checks=CHECKS)

    check()
    return calls


def fuzz(base_url: str, doc: dict, token: str, fresh_token, seen: Counter) -> tuple[list[str], int]:
    """Run schemathesis over every operation; returns (failures, requests made)."""
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    calls = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()
        op = result.ok()
        if op.path == STREAM_PATH:
            continue  # an endless stream: tested in test_feed.py
        for mode, examples in EXAMPLES.items():
            if mode is GenerationMode.NEGATIVE and not (
                op.body or len(op.query) or len(op.path_parameters)
            ):
                continue  # nothing to make invalid
            try:
                calls += run_operation(op, mode, examples, base_url, token, fresh_token, seen)
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure
                failures.append(f"{op.label} ({mode}): {str(exc)[:1500]}")
        for method, path, query, examples in STEERED:
            if (op.method.upper(), op.path) != (method, path):
                continue
            try:
                calls += run_operation(
                    op, GenerationMode.POSITIVE, examples, base_url, token, fresh_token, seen, query
                )
            except Exception as exc:  # noqa: BLE001
                failures.append(f"{op.label} {query}: {str(exc)[:1500]}")
    return failures, calls


async def test_openapi_document_matches_the_running_api(site, data, tag):
    async with controller(site, data, tag, accounts=True, mdns=False) as (_ctl, client):
        _, token = make_user(client, "adm-openapi-root", site.root.id, "admin")
        services = client.server.app[SERVICES]
        sched = Scheduler.attach(services)  # as `broadcaster serve` runs it
        await sched.start()
        resp = await client.get("/api/openapi.json")  # public, like health and login
        assert resp.status == 200
        doc = await resp.json()
        base = str(client.make_url("/")).rstrip("/")
        acc = accounts_of(client)
        t0 = time.monotonic()
        seen: Counter = Counter()
        failures, calls = await asyncio.to_thread(
            fuzz, base, doc, token, lambda: acc.issue_token("adm-openapi-root", None).secret, seen
        )
        print(f"schemathesis: {calls} requests in {time.monotonic() - t0:.1f} s")
        for key, n in sorted(seen.items()):
            print(f"  {key}: {n}")
        took = time.monotonic() - t0
        # the document lists every route of the API, the WebSockets too
        routes = {
            (r.method.lower(), r.resource.canonical)
            for r in client.server.app.router.routes()
            if r.resource is not None
            and r.resource.canonical.startswith("/api/")
            and r.method not in ("HEAD", "*")
        }
        documented = {(m, p) for p, item in doc["paths"].items() for m in item}
        assert routes - documented == set()
        assert {("get", "/api/page"), ("get", "/api/dial-in")} <= routes
        assert not failures, "\n\n".join(failures)
        assert calls > 100
        assert took < 120, f"schemathesis took {took:.0f} s"
        # the admin token survived the run: the server still answers it
        assert (await client.get("/api/me", headers=bearer(token))).status == 200
        await sched.close()
        services.scheduler = None


async def test_the_page_websocket_is_documented_and_a_plain_get_is_told_what_it_is(site, data, tag):
    async with controller(site, data, tag, accounts=True, mdns=False) as (_ctl, client):
        _, token = make_user(client, "adm-openapi-ws", site.root.id, "admin")
        doc = await (await client.get("/api/openapi.json")).json()
        page = doc["paths"]["/api/page"]["get"]
        assert "101" in page["responses"] and page["externalDocs"]["url"] == "docs/paging.md"
        first = page["x-websocket"]["client_first_message"]
        assert first["required"] == ["to"]
        assert first["properties"]["codec"]["enum"] == list(CODECS)
        assert [p["name"] for p in page["parameters"]] == ["csrf"]
        assert "security" not in page  # a token or a session, as every route
        dial = doc["paths"]["/api/dial-in"]["get"]
        assert dial["security"] == [] and "protocol.md" in dial["externalDocs"]["url"]
        # a GET without the upgrade is a 400 that says so, not a failure
        resp = await client.get("/api/page", headers=bearer(token))
        assert resp.status == 400
        body = await resp.json()
        assert body["error"] == "websocket_required" and "WebSocket" in body["message"]
        assert (await client.get("/api/page")).status == 401  # and no door without a token


def test_document_covers_every_command():
    from broadcaster.web import feed, openapi, paging

    doc = openapi.document(extra={**openapi.SELF_PATH, **feed.OPENAPI, **paging.OPENAPI})
    for spec in REGISTRY.values():
        op = doc["paths"][spec.path][spec.method.lower()]
        assert str(spec.status) in op["responses"]
        for code in ("400", "401", "403", "404", "409", "413", "422", "429", "503"):
            assert op["responses"][code]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
        assert (op.get("security") == []) == spec.public
    assert doc["paths"]["/api/events/stream"]["get"]["responses"]["200"]["content"].get(
        "text/event-stream"
    )
    play = doc["paths"]["/api/broadcasts"]["post"]
    assert "application/octet-stream" in play["requestBody"]["content"]
    assert {p["name"] for p in play["parameters"]} >= {"to", "priority", "queue", "tts"}
    add = doc["paths"]["/api/users"]["post"]["requestBody"]["content"]["application/json"]
    assert add["schema"]["additionalProperties"] is False
    assert add["schema"]["required"] == ["name", "password", "scope"]
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "session", "csrf"}
    assert doc["paths"]["/api/page"]["get"]["responses"]["101"]
