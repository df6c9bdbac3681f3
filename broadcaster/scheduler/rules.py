"""A schedule's *when* as data, and its occurrences; pure (the clock and the zone are arguments).

Kinds: `once` at a date-time; `daily` at times; `weekly` on named weekdays; `cron`; `lunar_days`
(days of every lunar month, e.g. 逢一逢六 = 1, 6, 11, 16, 21, 26); `lunar_date` (e.g. 腊月二十三,
every year or in one lunar year); `relative` (N days before or after a solar term or festival).
Any recurring kind takes a date range, excluded dates, `workdays_only` (the official list, make-up
Saturdays included) and `skip_holidays` (statutory holidays only, not plain weekends).

Decisions (docs/scheduling.md): a lunar date that can never exist (month 13, day 31, a leap month
that year lacks, day 30 of a 29-day month in a given year) is refused when saved; an every-year
day 30 is kept and skipped, with a warning, in years whose month has 29 days. For a year whose
official holiday list the installed chinese-calendar does not carry, holiday-filtered occurrences
are held (not produced) and a warning says so: never guessed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from broadcaster.scheduler import calendar as cal
from broadcaster.scheduler.cron import DAYS, Cron, parse_cron
from broadcaster.scheduler.fields import (  # noqa: F401 - re-exported: the rule's vocabulary
    BadTime,
    EndBeforeStart,
    ImpossibleLunarDate,
    RuleError,
    TimePassed,
    UnknownAnchor,
    UnknownDay,
    day_name,
    parse_anchor,
    parse_date,
    parse_datetime,
    parse_time,
    parse_weekday,
    zone,
)
from broadcaster.scheduler.lunartext import parse_lunar_date

KINDS = ("once", "daily", "weekly", "cron", "lunar_days", "lunar_date", "relative")
MAX_TIMES = 1440


@dataclass(frozen=True)
class Rule:
    """When a schedule fires; build it with `parse_rule`, store it with `to_dict`."""

    kind: str
    at: dt.datetime | None = None  # once: naive, in the site's zone
    times: tuple[dt.time, ...] = ()
    weekdays: tuple[str, ...] = ()
    cron: Cron | None = None
    lunar_days: tuple[int, ...] = ()
    lunar_month: int | None = None
    lunar_day: int | None = None
    lunar_year: int | None = None
    leap: bool = False
    anchor: str | None = None
    offset_days: int = 0
    start: dt.date | None = None
    end: dt.date | None = None
    excluded: frozenset[dt.date] = frozenset()
    workdays_only: bool = False
    skip_holidays: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form (what is stored, and what `parse_rule` reads back)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "once":
            assert self.at is not None
            out["at"] = self.at.strftime("%Y-%m-%d %H:%M:%S")
            return out
        if self.kind == "cron":
            assert self.cron is not None
            out["cron"] = self.cron.text
        else:
            out["times"] = [t.strftime("%H:%M:%S") for t in self.times]
        if self.kind == "weekly":
            out["days"] = list(self.weekdays)
        elif self.kind == "lunar_days":
            out["days"] = list(self.lunar_days)
        elif self.kind == "lunar_date":
            out.update(month=self.lunar_month, day=self.lunar_day, leap=self.leap)
            if self.lunar_year is not None:
                out["year"] = self.lunar_year
        elif self.kind == "relative":
            out.update(anchor=self.anchor, offset_days=self.offset_days)
        for key, value in (("start", self.start), ("end", self.end)):
            if value is not None:
                out[key] = value.isoformat()
        if self.excluded:
            out["except"] = sorted(d.isoformat() for d in self.excluded)
        if self.workdays_only:
            out["workdays_only"] = True
        if self.skip_holidays:
            out["skip_holidays"] = True
        return out


# --- parsing -----------------------------------------------------------------------------------


def parse_rule(raw: dict[str, Any]) -> Rule:
    """Validate a `when` (JSON) into a Rule; every fault is a RuleError naming the field."""
    if not isinstance(raw, dict):
        raise RuleError('when must be an object such as {"kind": "daily", "times": ["08:00"]}')
    kind = raw.get("kind")
    if kind not in KINDS:
        raise RuleError(f"when.kind {kind!r} is not one of {', '.join(KINDS)}")
    known = {
        "kind",
        "at",
        "times",
        "days",
        "cron",
        "month",
        "day",
        "year",
        "leap",
        "date",
        "anchor",
        "offset_days",
        "start",
        "end",
        "except",
        "workdays_only",
        "skip_holidays",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RuleError(f"when has unknown field(s): {', '.join(unknown)}")
    if kind == "once":
        extra = sorted(set(raw) - {"kind", "at"})
        if extra:
            raise RuleError(f"a once schedule takes only 'at', not {', '.join(extra)}")
        if "at" not in raw:
            raise BadTime("a once schedule needs 'at': 'YYYY-MM-DD HH:MM:SS' (site time)")
        return Rule("once", at=parse_datetime(raw["at"]))
    rule = Rule(kind, **_common(raw))
    if kind == "cron":
        if "cron" not in raw:
            raise RuleError("a cron schedule needs 'cron': 'minute hour day month weekday'")
        rule = replace(rule, cron=parse_cron(raw["cron"]))
    else:
        rule = replace(rule, times=_times(raw.get("times")))
    if kind == "weekly":
        days = _list(raw.get("days"), "days")
        rule = replace(
            rule, weekdays=tuple(sorted({parse_weekday(d) for d in days}, key=DAYS.index))
        )
    elif kind == "lunar_days":
        values = []
        for d in _list(raw.get("days"), "days"):
            if not (isinstance(d, int) or str(d).isdigit()) or not 1 <= int(d) <= 30:
                raise ImpossibleLunarDate(
                    f"lunar day {d!r} does not exist: a lunar month has days 1 to 29 or 30"
                )
            values.append(int(d))
        rule = replace(rule, lunar_days=tuple(sorted(set(values))))
    elif kind == "lunar_date":
        rule = _lunar_date(rule, raw)
    elif kind == "relative":
        if "anchor" not in raw:
            raise RuleError("a relative schedule needs 'anchor': a solar term or festival")
        offset = raw.get("offset_days", 0)
        if not isinstance(offset, int) or isinstance(offset, bool) or abs(offset) > 60:
            raise RuleError(
                f"offset_days {offset!r} must be a whole number of days, -60..60 (negative: before)"
            )
        rule = replace(rule, anchor=parse_anchor(raw["anchor"]), offset_days=offset)
    return rule


def _list(value: Any, name: str) -> list:
    if isinstance(value, str):
        value = [v for v in value.replace("，", ",").split(",") if v.strip()]
    if not isinstance(value, list) or not value:
        raise RuleError(f"when.{name} needs at least one value")
    return value


def _times(value: Any) -> tuple[dt.time, ...]:
    times = sorted({parse_time(t) for t in _list(value, "times")})
    if len(times) > MAX_TIMES:
        raise RuleError(f"{len(times)} times a day is more than {MAX_TIMES}")
    return tuple(times)


def _common(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("start", "end"):
        if raw.get(key) is not None:
            out[key] = parse_date(raw[key], f"{key} date")
    if "start" in out and "end" in out and out["end"] < out["start"]:
        raise EndBeforeStart(
            f"the range ends on {out['end']} before it starts on {out['start']}",
            detail={"start": str(out["start"]), "end": str(out["end"])},
        )
    if raw.get("except"):
        out["excluded"] = frozenset(
            parse_date(d, "excluded date") for d in _list(raw["except"], "except")
        )
    for key in ("workdays_only", "skip_holidays"):
        if key in raw:
            if not isinstance(raw[key], bool):
                raise RuleError(f"when.{key} must be true or false")
            out[key] = raw[key]
    return out


def _lunar_date(rule: Rule, raw: dict[str, Any]) -> Rule:
    month: Any  # as the YAML gave them until the range check below
    day: Any
    if "date" in raw:
        month, day, leap = parse_lunar_date(raw["date"])
    else:
        month, day, leap = raw.get("month"), raw.get("day"), bool(raw.get("leap", False))
    year = raw.get("year")
    bad = [
        f"{k} {v!r}"
        for k, v, lo, hi in (("month", month, 1, 12), ("day", day, 1, 30))
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi
    ]
    if bad:
        raise ImpossibleLunarDate(
            f"lunar {' and '.join(bad)} cannot exist: lunar months are 1-12 and have 29 or 30 days"
        )
    if year is not None and (not isinstance(year, int) or not 1900 <= year <= 2100):
        raise RuleError(f"lunar year {year!r} must be a year between 1900 and 2100")
    name = ("闰" if leap else "") + cal.MONTH_NAMES[month - 1] + day_name(day)
    if leap and year is None:
        raise ImpossibleLunarDate(
            f"{name}: a leap month comes back only in some years; give the lunar year it is in"
        )
    if year is not None and cal.solar_of(year, month, day, leap) is None:
        m = cal.lunar_month(year, month, leap)
        why = (
            f"lunar year {year} has no {'闰' if leap else ''}{cal.MONTH_NAMES[month - 1]}"
            if m is None
            else f"{m.name()} of lunar year {year} has only {m.days} days"
        )
        raise ImpossibleLunarDate(
            f"{name} does not exist: {why}",
            detail={"year": year, "month": month, "day": day, "leap": leap},
        )
    return replace(rule, lunar_month=month, lunar_day=day, leap=leap, lunar_year=year)


# --- occurrences -----------------------------------------------------------------------------


@dataclass
class Expansion:
    """Occurrences in a window, with the warnings a user should see (held or skipped days)."""

    instants: list[dt.datetime] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        """Add a warning once."""
        if text not in self.warnings:
            self.warnings.append(text)


def occurrences(
    rule: Rule, start: dt.datetime, end: dt.datetime, tz: str | ZoneInfo | None = None
) -> list[dt.datetime]:
    """Every instant in [start, end) at which the rule fires, aware in the site's zone."""
    return expand(rule, start, end, tz).instants


def expand(
    rule: Rule,
    start: dt.datetime,
    end: dt.datetime,
    tz: str | ZoneInfo | None = None,
    limit: int | None = None,
) -> Expansion:
    """Occurrences in [start, end) (at most `limit`) and warnings; start/end must be aware."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be time-zone aware")
    zi = zone(tz)
    out = Expansion()
    if rule.kind == "once":
        assert rule.at is not None
        inst = _local(rule.at.date(), rule.at.time(), zi, out)
        if start <= inst < end:
            out.instants.append(inst)
        return out
    first = start.astimezone(zi).date()
    last = end.astimezone(zi).date()
    if rule.start and rule.start > first:
        first = rule.start
    if rule.end and rule.end < last:
        last = rule.end
    dates = _dates(rule, first, last, out)
    for day in dates:
        if day in rule.excluded or not _allowed(rule, day, out):
            continue
        for t in rule.cron.times() if rule.cron else rule.times:
            inst = _local(day, t, zi, out)
            if start <= inst < end:
                out.instants.append(inst)
                if limit is not None and len(out.instants) >= limit:
                    return out
    return out


def next_occurrences(
    rule: Rule, now: dt.datetime, count: int, tz: str | ZoneInfo | None = None, days: int = 800
) -> Expansion:
    """The next `count` occurrences after `now` (searching `days` ahead), with warnings."""
    return expand(rule, now, now + dt.timedelta(days=days), tz, limit=count)


def check_saveable(rule: Rule, now: dt.datetime, tz: str | ZoneInfo | None = None) -> None:
    """TimePassed when a one-off time or the range's end lies in the past."""
    zi = zone(tz)
    if rule.kind == "once":
        assert rule.at is not None
        if _local(rule.at.date(), rule.at.time(), zi, Expansion()) <= now:
            raise TimePassed(
                f"{rule.at:%Y-%m-%d %H:%M:%S} ({zi.key}) has already passed",
                detail={"at": rule.to_dict()["at"]},
            )
    elif rule.end is not None and rule.end < now.astimezone(zi).date():
        raise TimePassed(
            f"the range ended on {rule.end}, before today", detail={"end": str(rule.end)}
        )


def _dates(rule: Rule, first: dt.date, last: dt.date, out: Expansion) -> list[dt.date]:
    if last < first:
        return []
    if rule.kind == "relative":
        assert rule.anchor is not None
        shift = dt.timedelta(days=rule.offset_days)
        span = dt.timedelta(days=abs(rule.offset_days) + 1)
        base = cal.anchor_dates(rule.anchor, (first - span).year, (last + span).year)
        return sorted(d + shift for d in base if first <= d + shift <= last)
    if rule.kind == "lunar_date":
        return _lunar_dates(rule, first, last, out)
    days = []
    day = first
    while day <= last:
        if _matches(rule, day):
            days.append(day)
        day += dt.timedelta(days=1)
    return days


def _matches(rule: Rule, day: dt.date) -> bool:
    if rule.kind == "daily":
        return True
    if rule.kind == "weekly":
        return DAYS[day.weekday()] in rule.weekdays
    if rule.kind == "cron":
        assert rule.cron is not None
        return rule.cron.matches(day)
    if rule.kind == "lunar_days":
        return cal.lunar_of(day).day in rule.lunar_days
    raise AssertionError(rule.kind)


def _lunar_dates(rule: Rule, first: dt.date, last: dt.date, out: Expansion) -> list[dt.date]:
    assert rule.lunar_month is not None and rule.lunar_day is not None
    years = (
        [rule.lunar_year] if rule.lunar_year is not None else range(first.year - 1, last.year + 1)
    )
    found = []
    for year in years:
        month = cal.lunar_month(year, rule.lunar_month, rule.leap)
        if month is None:
            continue
        day = cal.solar_of(year, rule.lunar_month, rule.lunar_day, rule.leap)
        if day is None:
            ends = month.first + dt.timedelta(days=month.days - 1)
            if month.first <= last and ends >= first:
                out.warn(
                    f"{month.name()}{day_name(rule.lunar_day)} does not exist in lunar "
                    f"year {year} ({month.name()} has {month.days} days): no occurrence"
                )
            continue
        if first <= day <= last:
            found.append(day)
    return sorted(found)


def _allowed(rule: Rule, day: dt.date, out: Expansion) -> bool:
    if not (rule.workdays_only or rule.skip_holidays):
        return True
    if not cal.holiday_year_known(day.year):
        out.warn(
            f"the official holiday list for {day.year} is not in {cal.LIBRARY} yet: "
            f"occurrences in {day.year} are held, not guessed (update chinese-calendar "
            "once the State Council publishes it)"
        )
        return False
    if rule.workdays_only and not cal.is_workday(day):
        return False
    return not (rule.skip_holidays and cal.holiday_name(day))


def _local(day: dt.date, t: dt.time, zi: ZoneInfo, out: Expansion) -> dt.datetime:
    """A wall-clock time in the zone; a time a DST jump skips moves forward, with a warning;
    one that happens twice fires once (the first)."""
    inst = dt.datetime.combine(day, t).replace(tzinfo=zi, fold=0)
    back = inst.astimezone(dt.UTC).astimezone(zi)
    if back.replace(tzinfo=None) != inst.replace(tzinfo=None):
        out.warn(
            f"{day} {t} does not exist in {zi.key} (clocks jump forward): it fires at "
            f"{back:%H:%M:%S} instead"
        )
        return back
    return back
