"""Access through HTTP: no open door, expiry and revocation, login throttling, cross-origin and
CSRF refusal, and no secret in any log, event, audit row, journal or error message."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest

import broadcaster.site as zones
from broadcaster.core.commands import REGISTRY
from broadcaster.web.api import SERVICES
from broadcaster.web.feed import PATH as STREAM_PATH
from tests.support.harness import controller
from tests.support.sites import small_site
from tests.web.helpers import accounts_of, bearer, make_user

PUBLIC = {"/api/health", "/api/login", "/api/openapi.json"}


@pytest.fixture
def site(tmp_path):
    return zones.load(small_site(tmp_path / "zones.yaml", villages=2, horns=2, columns=1))


def routes() -> list[tuple[str, str]]:
    """Every (method, path) the app serves under /api/, path parameters filled in."""
    out = [(s.method, re.sub(r"{\w+}", "x1", s.path)) for s in REGISTRY.values()]
    return out + [("GET", STREAM_PATH), ("GET", "/api/openapi.json")]


async def test_no_open_door(site, data, tag):
    async with controller(site, data, tag, accounts=True, mdns=False) as (_ctl, client):
        for method, path in routes():
            resp = await client.request(method, path, json={})
            body = await resp.json()
            if path in PUBLIC:
                assert resp.status != 401, (method, path)
            else:
                assert resp.status == 401, (method, path, resp.status, body)
                assert body["error"] == "unauthorized"
            # a made-up token opens nothing either
            resp = await client.request(method, path, headers=bearer("bct_forged"), json={})
            if path not in PUBLIC:
                assert resp.status == 401, (method, path)
        resp = await client.get("/api/health")
        assert resp.status == 200
        # every answer says how long the controller itself took, refusals included
        timing = resp.headers["Server-Timing"]
        assert timing.startswith("app;dur=") and float(timing.split("=")[1]) >= 0
        assert "Server-Timing" in (await client.get("/api/speakers")).headers  # a 401
        assert (await client.get("/api/openapi.json")).status == 200
        # the loop lag of the last seconds only: a bad number is named, never a 500
        recent = await (await client.get("/api/health?lag_seconds=5")).json()
        assert recent["loop_lag"]["samples"] <= 5 / 0.05 + 1
        for bad in ("0", "61", "soon"):
            resp = await client.get(f"/api/health?lag_seconds={bad}")
            assert resp.status == 400 and "lag_seconds" in (await resp.json())["message"], bad


async def test_expiry_and_revocation_take_effect_at_the_next_request(site, data, tag):
    async with controller(site, data, tag, accounts=True, mdns=False) as (_ctl, client):
        acc = accounts_of(client)
        _, short = make_user(client, "shortlived", "v1", expires=0.5)
        assert (await client.get("/api/me", headers=bearer(short))).status == 200
        await asyncio.sleep(0.7)
        resp = await client.get("/api/me", headers=bearer(short))
        assert resp.status == 401 and (await resp.json())["message"] == "token expired"

        password, token = make_user(client, "revoked", "v1")
        assert (await client.get("/api/speakers", headers=bearer(token))).status == 200
        acc.revoke_token(acc.token_id_of(token))  # as `broadcaster users revoke` does
        resp = await client.get("/api/speakers", headers=bearer(token))
        assert resp.status == 401 and (await resp.json())["message"] == "token revoked"

        # a session ended with POST /api/logout is refused at its next use
        resp = await client.post("/api/login", json={"name": "revoked", "password": password})
        assert resp.status == 200
        session = resp.cookies["bc_session"].value
        csrf = (await resp.json())["csrf"]
        cookie = {"Cookie": f"bc_session={session}"}
        assert (await client.get("/api/me", headers=cookie)).status == 200
        resp = await client.post("/api/logout", headers={**cookie, "X-CSRF-Token": csrf})
        assert resp.status == 200
        assert (await client.get("/api/me", headers=cookie)).status == 401

        # removing a user ends their tokens at once
        _, gone = make_user(client, "removed", "v2")
        _, admin = make_user(client, "office", site.root.id, "admin")
        assert (await client.delete("/api/users/removed", headers=bearer(admin))).status == 200
        assert (await client.get("/api/me", headers=bearer(gone))).status == 401


async def test_login_throttling(site, data, tag):
    async with controller(site, data, tag, accounts=True, mdns=False) as (_ctl, client):
        password, _ = make_user(client, "clerk", "v1")
        statuses = []
        for _ in range(7):
            resp = await client.post("/api/login", json={"name": "clerk", "password": "wrong-pw1"})
            statuses.append(resp.status)
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429]
        body = await resp.json()
        assert body["error"] == "login_throttled" and "try again in" in body["message"]
        # while throttled even the right password is refused: a guesser learns nothing
        resp = await client.post("/api/login", json={"name": "clerk", "password": password})
        assert resp.status == 429
        rows = accounts_of(client).audit.rows(actor="clerk", limit=50)
        assert sum(r["action"] == "login_failed" for r in rows) >= 7


async def test_cross_origin_and_csrf_are_refused(site, data, tag):
    async with controller(site, data, tag, accounts=True, mdns=False) as (ctl, client):
        password, token = make_user(client, "office", site.root.id, "admin")
        evil = {"Origin": "http://evil.example"}
        for method, path in (
            ("GET", "/api/speakers"),
            ("POST", "/api/broadcasts?to=v1&tts=x"),
            ("POST", "/api/login"),
            ("GET", "/api/health"),
        ):
            resp = await client.request(
                method,
                path,
                headers={**bearer(token), **evil},
                json={"name": "office", "password": password},
            )
            assert resp.status == 403, (method, path)
            assert (await resp.json())["error"] == "cross_origin"
        # the controller's own origin is fine
        own = {"Origin": str(client.make_url("")).rstrip("/")}
        assert (await client.get("/api/me", headers={**bearer(token), **own})).status == 200

        resp = await client.post("/api/login", json={"name": "office", "password": password})
        assert "samesite=strict" in resp.headers["Set-Cookie"].lower()
        assert "httponly" in resp.headers["Set-Cookie"].lower()
        cookie = {"Cookie": f"bc_session={resp.cookies['bc_session'].value}"}
        csrf = (await resp.json())["csrf"]
        events_before = len(ctl.events.recent)
        resp = await client.post(
            "/api/users",
            headers=cookie,
            json={"name": "x-csrf", "password": "long-enough", "scope": "v1"},
        )
        assert resp.status == 403 and (await resp.json())["error"] == "csrf_failed"
        resp = await client.post(
            "/api/users",
            headers={**cookie, "X-CSRF-Token": "guess"},
            json={"name": "x-csrf", "password": "long-enough", "scope": "v1"},
        )
        assert resp.status == 403
        with pytest.raises(Exception, match="no user"):
            accounts_of(client).get_user("x-csrf")  # nothing happened
        assert len(ctl.events.recent) == events_before
        # a GET with the cookie needs no CSRF token; a POST with it is accepted
        assert (await client.get("/api/me", headers=cookie)).status == 200
        resp = await client.post(
            "/api/users",
            headers={**cookie, "X-CSRF-Token": csrf},
            json={"name": "x-csrf", "password": "long-enough", "scope": "v1"},
        )
        assert resp.status == 201


async def test_no_secret_in_logs_events_audit_journal_or_errors(site, data, tag, caplog):
    caplog.set_level(logging.DEBUG)
    async with controller(site, data, tag, accounts=True, mdns=False) as (ctl, client):
        password, token = make_user(client, "office", site.root.id, "admin")
        answers: list[str] = []

        async def call(method: str, path: str, **kw) -> int:
            resp = await client.request(method, path, **kw)
            answers.append(await resp.text())
            answers.append(json.dumps(dict(resp.headers)) if resp.status >= 400 else "")
            return resp.status

        new_pw = "Secret-new-" + "9" * 8
        user_pw = "Secret-user-" + "7" * 8
        assert (
            await call(
                "POST", "/api/login", json={"name": "office", "password": "Wrong-" + password}
            )
            == 401
        )
        # a password typed into the name field
        assert await call("POST", "/api/login", json={"name": password, "password": "x"}) == 401
        resp = await client.post("/api/login", json={"name": "office", "password": password})
        session = resp.cookies["bc_session"].value
        answers.append(await resp.text())
        assert (
            await call(
                "POST",
                "/api/users",
                headers=bearer(token),
                json={"name": "v1-clerk", "password": user_pw, "scope": "v1"},
            )
            == 201
        )
        assert (
            await call(
                "POST",
                "/api/users",
                headers=bearer(token),
                json={"name": "v1-clerk", "password": user_pw, "scope": "v1"},
            )
            == 409
        )
        assert (
            await call(
                "POST",
                "/api/users",
                headers=bearer(token),
                json={"name": "BAD NAME", "password": user_pw, "scope": "nowhere"},
            )
            == 400
        )
        assert (
            await call(
                "POST",
                "/api/me/password",
                headers=bearer(token),
                json={"old": "Wrong-" + password, "new": new_pw},
            )
            == 401
        )
        assert (
            await call(
                "POST",
                "/api/me/password",
                headers=bearer(token),
                json={"old": password, "new": new_pw},
            )
            == 200
        )
        assert await call("GET", "/api/me", headers=bearer(token + "x")) == 401
        assert await call("GET", "/api/audit", headers=bearer(token)) == 200
        assert await call("POST", "/api/broadcasts?to=v9&tts=hi", headers=bearer(token)) == 404
        await asyncio.sleep(0.3)  # audit rows are written on the audit thread

        svc = client.server.app[SERVICES]
        hashes = [
            r[0]
            for r in svc.store.run(
                lambda db: db.conn.execute("SELECT pw_hash FROM users").fetchall()
            )
        ]
        token_hashes = [
            r[0]
            for r in svc.store.run(lambda db: db.conn.execute("SELECT hash FROM tokens").fetchall())
        ]
        secrets_ = [password, new_pw, user_pw, token, session, *hashes, *token_hashes]
        audit = json.dumps(svc.audit.rows(limit=1000), ensure_ascii=False)
        events = json.dumps(list(ctl.events), ensure_ascii=False)
        journal = "".join(p.read_text() for p in (data / "log").glob("*"))
        places = {
            "log": caplog.text,
            "audit": audit,
            "events": events,
            "journal": journal,
            "answers": "\n".join(answers),
        }
        assert "login_failed" in audit and "user_added" in audit  # the rows are there
        for where, text in places.items():
            for secret in secrets_:
                assert secret not in text, f"a secret ({secret[:6]}…) is in the {where}"
            assert "$argon2" not in text, where
