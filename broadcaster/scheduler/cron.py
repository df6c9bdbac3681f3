"""Cron-style fields (minute hour day month weekday), with weekday *names* only; pure.

Why names: crontab numbers Sunday 0 and Monday 1, but APScheduler's `from_crontab` numbers Monday
0, so `1-5` silently means Tuesday to Saturday there (DOMAIN.md). A weekday given as a number is
refused with that explanation. All five fields must match (no crontab day-or-weekday rule).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from broadcaster.scheduler.fields import DAYS, RuleError

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
FIELDS = ("minute", "hour", "day", "month", "weekday")
_BOUNDS = {"minute": (0, 59), "hour": (0, 23), "day": (1, 31), "month": (1, 12), "weekday": (0, 6)}


class CronError(RuleError):
    """A cron expression is malformed; the message names the field and the fault."""

    code = "bad_cron"


class NumericWeekday(CronError):
    """A weekday was written as a number (the APScheduler Monday-is-0 trap)."""

    code = "numeric_weekday"


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression: the allowed values of each field (None: any)."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int] | None
    months: frozenset[int] | None
    weekdays: frozenset[int] | None  # 0 = Monday, as datetime.weekday()

    def matches(self, day: dt.date) -> bool:
        """True when the date's day, month and weekday fields all match."""
        return (
            (self.days is None or day.day in self.days)
            and (self.months is None or day.month in self.months)
            and (self.weekdays is None or day.weekday() in self.weekdays)
        )

    def times(self) -> list[dt.time]:
        """The times of day it fires on a matching date."""
        return [dt.time(h, m) for h in self.hours for m in self.minutes]


def parse_cron(text: str) -> Cron:
    """Parse `minute hour day month weekday`, e.g. `30 7 * * mon-fri`, `0 8 1,15 * *`."""
    parts = str(text).split()
    if len(parts) != 5:
        raise CronError(
            f"cron {text!r} has {len(parts)} field(s); write five: minute hour day "
            "month weekday, e.g. '30 7 * * mon-fri'"
        )
    values = {name: _field(name, part, text) for name, part in zip(FIELDS, parts, strict=True)}
    return Cron(
        " ".join(parts),
        tuple(sorted(values["minute"] or range(60))),
        tuple(sorted(values["hour"] or range(24))),
        values["day"],
        values["month"],
        values["weekday"],
    )


def _field(name: str, part: str, text: str) -> frozenset[int] | None:
    lo, hi = _BOUNDS[name]
    if part == "*":
        return None
    out: set[int] = set()
    for item in part.split(","):
        rng, _, step_s = item.partition("/")
        step = _number(name, step_s, text) if step_s else 1
        if step < 1:
            raise CronError(f"cron {text!r}: the step in {name} field {item!r} must be 1 or more")
        if rng == "*":
            a, b = lo, hi
        else:
            first, dash, last = rng.partition("-")
            a = _value(name, first, text)
            b = _value(name, last, text) if dash else (hi if step_s else a)
        if name == "weekday" and b < a:  # sat-mon wraps over the week's end
            out.update(x % 7 for x in range(a, b + 8, step))
            continue
        if b < a:
            raise CronError(f"cron {text!r}: the range {rng!r} in the {name} field runs backwards")
        out.update(range(a, b + 1, step))
    return frozenset(out)


def _value(name: str, token: str, text: str) -> int:
    token = token.strip().lower()
    if name == "weekday":
        if token.isdigit():
            raise NumericWeekday(
                f"cron {text!r}: weekday {token!r} is a number; crontab counts Sunday as 0 but "
                "APScheduler counts Monday as 0, so numbers are ambiguous: write day names "
                "(mon, tue, wed, thu, fri, sat, sun), e.g. mon-fri",
                detail={"field": "weekday", "value": token},
            )
        if token[:3] in DAYS and token in (token[:3], _full_day(token[:3])):
            return DAYS.index(token[:3])
        raise CronError(
            f"cron {text!r}: {token!r} is not a day name; use {', '.join(DAYS)}", code="unknown_day"
        )
    if name == "month" and token[:3] in MONTHS:
        return MONTHS.index(token[:3]) + 1
    value = _number(name, token, text)
    lo, hi = _BOUNDS[name]
    if not lo <= value <= hi:
        raise CronError(f"cron {text!r}: {name} {value} is outside {lo}-{hi}")
    return value


def _number(name: str, token: str, text: str) -> int:
    if not token.isdigit():
        raise CronError(f"cron {text!r}: {token!r} in the {name} field is not a number")
    return int(token)


def _full_day(abbr: str) -> str:
    return {
        "mon": "monday",
        "tue": "tuesday",
        "wed": "wednesday",
        "thu": "thursday",
        "fri": "friday",
        "sat": "saturday",
        "sun": "sunday",
    }[abbr]
