"""`broadcaster schedule …`: scheduled announcements on a running controller, over its HTTP API.

`main.py` adds them with one call: `schedule.register(sub)`. Times are site times (the
controller's zone, Asia/Shanghai by default). Every form of `add` builds the same `when` object
the API takes (docs/scheduling.md), so the CLI can do nothing the API cannot.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from broadcaster.cli.client import Client, ClientError
from broadcaster.errors import InvalidInput

FORMS = (
    "--at",
    "--daily",
    "--weekdays",
    "--lunar-days",
    "--lunar-date",
    "--before-term",
    "--after-term",
    "--cron",
)


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").replace("，", ",").split(",") if t.strip()]


def when_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """The API's `when` object from the `add` options; InvalidInput when they do not fit."""
    given = [f for f in FORMS if getattr(a, f[2:].replace("-", "_")) is not None]
    if len(given) != 1:
        raise InvalidInput(
            f"give exactly one of {', '.join(FORMS)}"
            + (f" (not {' and '.join(given)})" if given else ""),
            code="bad_rule",
        )
    times = [t for chunk in (a.time or []) for t in _csv(chunk)]
    form = given[0]
    if form == "--at":
        if times or a.workdays_only or a.skip_holidays or a.from_ or a.until or a.except_:
            raise InvalidInput(
                "--at is a one-off: --time, --from, --until, --except and the "
                "holiday options apply to recurring forms",
                code="bad_rule",
            )
        return {"kind": "once", "at": a.at}
    when: dict[str, Any]
    if form == "--daily":
        when = {"kind": "daily", "times": _csv(a.daily) + times}
    elif form == "--cron":
        when = {"kind": "cron", "cron": a.cron}
    else:
        if not times:
            raise InvalidInput(f"{form} needs --time HH:MM", code="bad_time")
        if form == "--weekdays":
            when = {"kind": "weekly", "days": _csv(a.weekdays)}
        elif form == "--lunar-days":
            days = _csv(a.lunar_days)
            bad = [d for d in days if not d.isdigit()]
            if bad:
                raise InvalidInput(
                    f"--lunar-days takes day numbers such as 1,6 (not {bad[0]!r})", code="bad_rule"
                )
            when = {"kind": "lunar_days", "days": [int(d) for d in days]}
        elif form == "--lunar-date":
            when = {"kind": "lunar_date", "date": a.lunar_date}
            if a.lunar_year is not None:
                when["year"] = a.lunar_year
        else:
            anchor = a.before_term if form == "--before-term" else a.after_term
            sign = -1 if form == "--before-term" else 1
            when = {"kind": "relative", "anchor": anchor, "offset_days": sign * a.days}
        when["times"] = times
    for key, value in (("start", a.from_), ("end", a.until)):
        if value:
            when[key] = value
    if a.except_:
        when["except"] = [d for chunk in a.except_ for d in _csv(chunk)]
    if a.workdays_only:
        when["workdays_only"] = True
    if a.skip_holidays:
        when["skip_holidays"] = True
    return when


def describe(when: dict[str, Any]) -> str:
    """A one-line summary of a `when`."""
    kind = when.get("kind")
    times = ",".join(t[:5] if t.endswith(":00") else t for t in when.get("times", []))
    text = {
        "once": f"once {when.get('at')}",
        "daily": f"daily {times}",
        "weekly": f"{','.join(when.get('days', []))} {times}",
        "cron": f"cron {when.get('cron')}",
        "lunar_days": f"lunar days {','.join(str(d) for d in when.get('days', []))} {times}",
        "lunar_date": (
            f"lunar {'闰' if when.get('leap') else ''}{when.get('month')}-"
            f"{when.get('day')}{' ' + str(when['year']) if 'year' in when else ''} "
            f"{times}"
        ),
        "relative": (
            f"{abs(when.get('offset_days', 0))} days "
            f"{'before' if when.get('offset_days', 0) < 0 else 'after'} "
            f"{when.get('anchor')} {times}"
        ),
    }.get(str(kind), str(kind))
    extra = [
        x
        for x, on in (
            ("workdays only", when.get("workdays_only")),
            ("no holidays", when.get("skip_holidays")),
        )
        if on
    ]
    if when.get("start") or when.get("end"):
        extra.append(f"{when.get('start', '…')}..{when.get('end', '…')}")
    if when.get("except"):
        extra.append(f"except {','.join(when['except'])}")
    return text + (f" ({'; '.join(extra)})" if extra else "")


def _api(
    a: argparse.Namespace, method: str, path: str, params: list | None = None, **kw: Any
) -> Any:
    try:
        return Client(getattr(a, "controller", None)).call(method, path, params or [], **kw)
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=1))


def cmd_schedule(a: argparse.Namespace) -> int:
    """Run one `schedule` action."""
    act = a.schedule_action
    if act == "add":
        try:
            when = when_from_args(a)
        except InvalidInput as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
        if bool(a.clip) == bool(a.tts):
            print("error: give exactly one of --clip ID or --tts TEXT", file=sys.stderr)
            return 2
        body = {
            "to": a.to,
            "when": when,
            "clip": a.clip,
            "tts": a.tts,
            "chime": a.chime,
            "repeat": a.repeat,
            "priority": a.priority,
            "volume": a.volume,
            "title": a.title,
            "paused": a.paused,
        }
        out = _api(
            a, "POST", "/api/schedules", json_body={k: v for k, v in body.items() if v is not None}
        )
        if a.json:
            _print_json(out)
        else:
            print(out["id"])
            for w in out.get("warnings", []):
                print(f"warning: {w}", file=sys.stderr)
        return 0
    if act == "list":
        out = _api(a, "GET", "/api/schedules", [("next", a.next)])
        if a.json:
            _print_json(out)
            return 0
        print(f"{'id':<12}{'state':<8}{'owner':<12}{'targets':<18}{'next':<27}when / title")
        for s in out["schedules"]:
            nxt = s["next"][0][:19].replace("T", " ") if s["next"] else "-"
            print(
                f"{s['id']:<12}{'paused' if s['paused'] else 'active':<8}{s['owner']:<12}"
                f"{','.join(s['targets'])[:17]:<18}{nxt:<27}{describe(s['when'])} / "
                f"{s['title']}"
            )
            for w in s.get("warnings", []):
                print(f"{'':<12}warning: {w}")
        return 0
    if act in ("pause", "resume", "show"):
        out = (
            _api(a, "POST", f"/api/schedules/{a.id}/{act}")
            if act != "show"
            else _api(a, "GET", f"/api/schedules/{a.id}")
        )
        if a.json or act == "show":
            _print_json(out)
        else:
            print(f"{out['id']} {'paused' if out['paused'] else 'active'}")
        return 0
    if act == "remove":
        _api(a, "DELETE", f"/api/schedules/{a.id}")
        print(f"{a.id} removed")
        return 0
    if act == "history":
        out = _api(a, "GET", f"/api/schedules/{a.id}/occurrences", [("limit", a.limit)])
        if a.json:
            _print_json(out)
            return 0
        for o in out["occurrences"]:
            print(
                f"{o['instant'][:19].replace('T', ' ')}  {o['state']:<11} "
                f"{o.get('broadcast') or '-':<24} {o.get('why') or ''}"
            )
        return 0
    out = _api(a, "GET", "/api/schedules/preview", [("weeks", a.weeks)])
    if a.json:
        _print_json(out)
        return 0
    for o in out["occurrences"]:
        print(f"{o['at'][:19].replace('T', ' ')}  {o['schedule']:<12}{o['title']}")
    for c in out["conflicts"]:
        print(f"conflict: {c['message']}")
    for w in out["warnings"]:
        print(f"warning: {w}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `schedule` command to a `broadcaster` sub-command parser."""
    p = subparsers.add_parser(
        "schedule",
        help="scheduled announcements: add, list, pause, resume, remove, preview, history",
    )
    sp = p.add_subparsers(dest="schedule_action", required=True)
    a = sp.add_parser("add", help="save a schedule; prints its id")
    a.add_argument(
        "--to",
        action="append",
        required=True,
        help="a speaker, village, area, group or the subdistrict (repeatable)",
    )
    a.add_argument("--clip", help="a library clip id")
    a.add_argument("--tts", help="text read aloud (rendered once, when saved)")
    a.add_argument("--chime", help="a chime before the audio (two-tone, four-tone, …)")
    a.add_argument("--repeat", type=int, default=1)
    a.add_argument(
        "--priority",
        default="announcement",
        choices=["background", "announcement", "live", "emergency"],
    )
    a.add_argument("--volume", type=int, help="0-100 (default: each zone's own)")
    a.add_argument("--title")
    a.add_argument("--at", help='once: "YYYY-MM-DD HH:MM:SS" (site time)')
    a.add_argument("--daily", help="every day at HH:MM[,HH:MM…]")
    a.add_argument("--weekdays", help="named days: mon,wed,fri (never numbers)")
    a.add_argument(
        "--lunar-days", help="days of every lunar month, e.g. 1,6,11,16,21,26 (逢一逢六)"
    )
    a.add_argument("--lunar-date", help="a lunar date: 腊月二十三, 正月十五, 12-23")
    a.add_argument("--lunar-year", type=int, help="the lunar year, for a one-year lunar date")
    a.add_argument("--before-term", help="N (--days) days before a solar term or festival: 清明")
    a.add_argument("--after-term", help="N (--days) days after a solar term or festival")
    a.add_argument("--days", type=int, default=0)
    a.add_argument("--cron", help="minute hour day month weekday, e.g. '30 7 * * mon-fri'")
    a.add_argument("--time", action="append", help="HH:MM[:SS] (repeatable, or comma list)")
    a.add_argument("--from", dest="from_", help="first date YYYY-MM-DD")
    a.add_argument("--until", help="last date YYYY-MM-DD")
    a.add_argument("--except", dest="except_", action="append", help="dates to skip")
    a.add_argument(
        "--workdays-only",
        action="store_true",
        help="only official working days (make-up days included)",
    )
    a.add_argument("--skip-holidays", action="store_true", help="skip statutory holidays")
    a.add_argument("--paused", action="store_true", help="save it paused")
    a.add_argument("--json", action="store_true")
    ls = sp.add_parser("list", help="schedules in your scope with their next occurrences")
    ls.add_argument("--next", type=int, default=3)
    ls.add_argument("--json", action="store_true")
    for name, text in (
        ("show", "one schedule"),
        ("pause", "pause a schedule"),
        ("resume", "resume a schedule"),
        ("remove", "delete a schedule"),
    ):
        x = sp.add_parser(name, help=text)
        x.add_argument("id")
        x.add_argument("--json", action="store_true")
    h = sp.add_parser("history", help="what happened at each occurrence of a schedule")
    h.add_argument("id")
    h.add_argument("--limit", type=int, default=50)
    h.add_argument("--json", action="store_true")
    pv = sp.add_parser("preview", help="the coming weeks' occurrences and conflicts")
    pv.add_argument("--weeks", type=int, default=2)
    pv.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_schedule)
