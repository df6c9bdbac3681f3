"""The schedule commands over HTTP and the command surface: bad input is a 4xx with a code and
nothing is stored; scope limits what a user sees and edits; preview warns of conflicts; the CLI
speaks the same API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import time

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

import broadcaster.site as zones
from broadcaster.access.principal import Principal
from broadcaster.cli import schedule as cli
from broadcaster.core.commands import call
from broadcaster.core.controller import Controller, ControllerConfig
from broadcaster.core.services import Services
from broadcaster.errors import BroadcasterError
from broadcaster.scheduler.engine import Scheduler
from broadcaster.web.api import make_app
from tests.scheduler.world import add_clip, site_time
from tests.support.harness import site_tag
from tests.support.sites import small_site


@pytest_asyncio.fixture
async def api(tmp_path):
    site = zones.load(small_site(tmp_path / "zones.yaml", villages=2, horns=2, columns=1))
    data = tmp_path / "data"
    data.mkdir()
    ctl = Controller(site, ControllerConfig(data, site_tag=site_tag(), mdns=False))
    services = Services.for_controller(ctl, accounts=False)
    await ctl.start()
    sched = Scheduler.attach(services)
    await sched.start()
    client = TestClient(TestServer(make_app(services), host="127.0.0.1"))
    await client.start_server()
    clip = add_clip(services, tmp_path)
    yield {"client": client, "services": services, "site": site, "clip": clip, "sched": sched}
    await client.close()
    await sched.close()
    await ctl.close()
    services.close()


DAILY = {"kind": "daily", "times": ["08:00"]}


def system_of(api):
    return Principal.system(api["site"].root.id, "test")


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"to": ["v1"], "when": {"kind": "daily", "times": ["24:30"]}}, 400, "bad_time"),
        (
            {"to": ["v1"], "when": {"kind": "weekly", "days": ["mnday"], "times": ["08:00"]}},
            400,
            "unknown_day",
        ),
        ({"to": ["v1"], "when": {"kind": "cron", "cron": "0 8 * * 1-5"}}, 400, "numeric_weekday"),
        (
            {"to": ["v1"], "when": {**DAILY, "start": "2026-06-02", "end": "2026-06-01"}},
            400,
            "end_before_start",
        ),
        (
            {
                "to": ["v1"],
                "when": {
                    "kind": "lunar_date",
                    "date": "二月三十",
                    "year": 2026,
                    "times": ["08:00"],
                },
            },
            400,
            "impossible_lunar_date",
        ),
        ({"to": ["v1"], "when": {"kind": "once", "at": "2020-01-01 08:00:00"}}, 400, "time_passed"),
        ({"to": ["v1"], "when": DAILY, "clip": "ffff0000ffff"}, 404, "not_found"),
        ({"to": ["v9"], "when": DAILY}, 404, "unknown_target"),
        ({"to": ["v1"], "when": DAILY, "chime": "kazoo"}, 404, "unknown_chime"),
        ({"to": ["v1"], "when": DAILY, "volume": 140}, 400, "bad_volume"),
        ({"to": ["v1"]}, 400, "missing_field"),
    ],
)
async def test_bad_input_is_a_4xx_with_a_code_and_nothing_is_stored(api, body, status, code):
    body = {"clip": api["clip"], **body}
    resp = await api["client"].post("/api/schedules", json=body)
    err = await resp.json()
    assert resp.status == status and err["error"] == code and err["message"], err
    resp = await api["client"].get("/api/schedules")
    assert (await resp.json())["schedules"] == []


async def test_a_target_outside_the_callers_scope_is_refused(api):
    village = Principal("cun1", "v1")
    with pytest.raises(BroadcasterError) as err:
        await call(
            "schedules/create",
            village,
            api["services"],
            {"to": ["v2"], "clip": api["clip"], "when": DAILY},
        )
    assert err.value.status == 403 and "outside your scope" in err.value.message
    assert api["sched"].table.all() == []


async def test_create_list_pause_resume_update_delete_over_http(api):
    c = api["client"]
    resp = await c.post(
        "/api/schedules",
        json={
            "to": ["v1"],
            "clip": api["clip"],
            "when": {"kind": "weekly", "days": "mon,fri", "times": ["07:30"]},
        },
    )
    s = await resp.json()
    assert resp.status == 201 and len(s["next"]) == 3 and s["time_zone"] == "Asia/Shanghai"
    assert all(t[11:16] == "07:30" for t in s["next"]) and s["what"]["duration"] > 0.5
    listed = (await (await c.get("/api/schedules", params={"next": 5})).json())["schedules"]
    assert [x["id"] for x in listed] == [s["id"]] and len(listed[0]["next"]) == 5
    paused = await (await c.post(f"/api/schedules/{s['id']}/pause")).json()
    assert paused["paused"] and paused["next"] == [] and api["sched"].next_job(s["id"]) is None
    resumed = await (await c.post(f"/api/schedules/{s['id']}/resume")).json()
    assert not resumed["paused"] and api["sched"].next_job(s["id"]) is not None
    edited = await (
        await c.post(
            f"/api/schedules/{s['id']}",
            json={"when": {"kind": "lunar_days", "days": [1, 6], "times": ["07:00"]}},
        )
    ).json()
    assert edited["when"]["kind"] == "lunar_days" and edited["what"]["clip"] == api["clip"]
    bad = await c.post(
        f"/api/schedules/{s['id']}",
        json={"when": {"kind": "weekly", "days": ["sundy"], "times": ["07:00"]}},
    )
    assert bad.status == 400
    assert (await (await c.get(f"/api/schedules/{s['id']}")).json())["when"][
        "kind"
    ] == "lunar_days"  # the failed edit changed nothing
    resp = await c.delete(f"/api/schedules/{s['id']}")
    assert resp.status == 200 and (await c.get(f"/api/schedules/{s['id']}")).status == 404
    rows = api["services"].audit.rows()
    assert {
        "schedule_created",
        "schedule_paused",
        "schedule_resumed",
        "schedule_updated",
        "schedule_deleted",
    } <= {r["action"] for r in rows}


async def test_users_see_and_edit_only_schedules_in_their_scope(api):
    svc = api["services"]
    mine = await call(
        "schedules/create",
        Principal("cun1", "v1"),
        svc,
        {"to": ["v1"], "clip": api["clip"], "when": DAILY},
    )
    other = await call(
        "schedules/create", system_of(api), svc, {"to": ["v2"], "clip": api["clip"], "when": DAILY}
    )
    v1 = await call("schedules/list", Principal("cun1", "v1"), svc, {})
    assert [s["id"] for s in v1["schedules"]] == [mine["id"]]
    area = await call("schedules/list", Principal("guan1", "a1"), svc, {})
    assert {s["id"] for s in area["schedules"]} == {mine["id"], other["id"]}
    with pytest.raises(BroadcasterError) as err:
        await call("schedules/pause", Principal("cun1", "v1"), svc, {"id": other["id"]})
    assert err.value.status == 404
    with pytest.raises(BroadcasterError) as err:
        await call("schedules/delete", Principal("cun1b", "v1"), svc, {"id": mine["id"]})
    assert err.value.code == "not_yours"


async def test_preview_lists_occurrences_and_warns_of_conflicts(api):
    svc, c = api["services"], api["client"]
    for to in (["v1"], ["a1"], ["v2"]):
        await call(
            "schedules/create", system_of(api), svc, {"to": to, "clip": api["clip"], "when": DAILY}
        )
    out = await (await c.get("/api/schedules/preview", params={"weeks": 1})).json()
    assert len(out["occurrences"]) == 21
    pairs = {tuple(sorted(x["speakers"])) for x in out["conflicts"]}
    assert len(out["conflicts"]) == 14  # a1 overlaps v1 and v2 every day, v1 and v2 never
    assert pairs == {("h1-1", "h1-2"), ("h2-1", "h2-2")}


# --- the CLI -----------------------------------------------------------------------------------


def parse(*argv):
    p = argparse.ArgumentParser()
    p.add_argument("--controller")
    cli.register(p.add_subparsers(dest="cmd"))
    return p.parse_args(list(argv))


@pytest.mark.parametrize(
    "argv, when",
    [
        (["--at", "2030-05-01 08:00:00"], {"kind": "once", "at": "2030-05-01 08:00:00"}),
        (["--daily", "08:00,17:30"], {"kind": "daily", "times": ["08:00", "17:30"]}),
        (
            ["--weekdays", "mon,fri", "--time", "07:30"],
            {"kind": "weekly", "days": ["mon", "fri"], "times": ["07:30"]},
        ),
        (
            ["--lunar-days", "1,6", "--time", "07:00", "--workdays-only"],
            {"kind": "lunar_days", "days": [1, 6], "times": ["07:00"], "workdays_only": True},
        ),
        (
            ["--before-term", "清明", "--days", "3", "--time", "08:00"],
            {"kind": "relative", "anchor": "清明", "offset_days": -3, "times": ["08:00"]},
        ),
        (
            [
                "--lunar-date",
                "腊月二十三",
                "--time",
                "08:00",
                "--from",
                "2026-01-01",
                "--until",
                "2030-12-31",
                "--except",
                "2027-01-30",
            ],
            {
                "kind": "lunar_date",
                "date": "腊月二十三",
                "times": ["08:00"],
                "start": "2026-01-01",
                "end": "2030-12-31",
                "except": ["2027-01-30"],
            },
        ),
        (
            ["--cron", "30 7 * * mon-fri", "--skip-holidays"],
            {"kind": "cron", "cron": "30 7 * * mon-fri", "skip_holidays": True},
        ),
    ],
)
def test_cli_forms_build_the_api_when(argv, when):
    args = parse("schedule", "add", "--to", "v1", "--clip", "x", *argv)
    assert cli.when_from_args(args) == when


async def test_cli_adds_lists_pauses_and_removes_over_http(api, monkeypatch):
    url = str(api["client"].make_url("")).rstrip("/")

    async def run(*argv):
        out, err = io.StringIO(), io.StringIO()
        args = parse("--controller", url, "schedule", *argv)

        def go():
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    return args.func(args)
                except SystemExit as exc:
                    return exc.code

        code = await asyncio.to_thread(go)
        return code, out.getvalue(), err.getvalue()

    at = site_time(time.time() + 3600)
    code, out, _ = await run("add", "--to", "v1", "--clip", api["clip"], "--at", at)
    sid = out.strip()
    assert code == 0 and sid.startswith("s-")
    code, out, _ = await run("list", "--json")
    listed = json.loads(out)["schedules"]
    assert (
        code == 0 and listed[0]["id"] == sid and listed[0]["next"][0][:19] == at.replace(" ", "T")
    )
    code, out, _ = await run("list")
    assert sid in out and f"once {at}" in out
    assert (await run("pause", sid))[1].strip() == f"{sid} paused"
    code, _, err = await run(
        "add", "--to", "v1", "--clip", api["clip"], "--weekdays", "1,5", "--time", "08:00"
    )
    assert code == 1 and "numbers are ambiguous" in err
    assert (await run("remove", sid))[0] == 0
    code, out, _ = await run("list", "--json")
    assert json.loads(out)["schedules"] == []
