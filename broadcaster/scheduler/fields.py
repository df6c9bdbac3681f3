"""The fields of a schedule's `when`, read from text: times, dates, weekday names, solar terms
and festivals, time zones — and the errors that name what is wrong; pure.

Weekday numbers are refused: crontab counts Sunday as 0, APScheduler's crontab Monday as 0
(DOMAIN.md), so a number is ambiguous; names are not.
"""

from __future__ import annotations

import datetime as dt
import difflib
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from broadcaster.errors import InvalidInput
from broadcaster.scheduler import calendar as cal

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_ZONE = "Asia/Shanghai"
_DAY_ALIASES = {
    **{d: d for d in DAYS},
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
    "周一": "mon",
    "周二": "tue",
    "周三": "wed",
    "周四": "thu",
    "周五": "fri",
    "周六": "sat",
    "周日": "sun",
    "周天": "sun",
    "星期一": "mon",
    "星期二": "tue",
    "星期三": "wed",
    "星期四": "thu",
    "星期五": "fri",
    "星期六": "sat",
    "星期日": "sun",
    "星期天": "sun",
}


class RuleError(InvalidInput):
    """A schedule's `when` is malformed; the message names the field and what is wrong."""

    code = "bad_rule"


class BadTime(RuleError):
    """A time or date is not a valid HH:MM[:SS] or YYYY-MM-DD."""

    code = "bad_time"


class UnknownDay(RuleError):
    """A weekday name is not one we know (the message suggests the nearest)."""

    code = "unknown_day"


class EndBeforeStart(RuleError):
    """The date range ends before it starts."""

    code = "end_before_start"


class ImpossibleLunarDate(RuleError):
    """A lunar date that can never exist (or not in the lunar year given)."""

    code = "impossible_lunar_date"


class UnknownAnchor(RuleError):
    """Not a solar term or festival we know (the message suggests the nearest)."""

    code = "unknown_anchor"


class TimePassed(RuleError):
    """A one-off time, or a range's end, is already in the past."""

    code = "time_passed"


def zone(name: str | ZoneInfo | None) -> ZoneInfo:
    """A time zone by IANA name (None: Asia/Shanghai)."""
    if isinstance(name, ZoneInfo):
        return name
    try:
        return ZoneInfo(name or DEFAULT_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(
            f"time zone {name!r} is not an IANA zone such as Asia/Shanghai",
            code="unknown_time_zone",
        ) from None


def parse_time(text: Any) -> dt.time:
    """'08:00' or '08:00:30' -> a time of day."""
    parts = str(text).strip().split(":")
    if len(parts) in (2, 3) and all(p.isdigit() and len(p) <= 2 for p in parts):
        h, m, s = (int(p) for p in (*parts, "0")[:3])
        if h < 24 and m < 60 and s < 60:
            return dt.time(h, m, s)
    raise BadTime(
        f"time {text!r} is not a time of day: write HH:MM or HH:MM:SS (24-hour), e.g. 07:30",
        detail={"value": str(text)},
    )


def parse_date(text: Any, what: str = "date") -> dt.date:
    """'2026-05-01' -> a date."""
    try:
        return dt.date.fromisoformat(str(text).strip())
    except ValueError:
        raise BadTime(
            f"{what} {text!r} is not a date: write YYYY-MM-DD, e.g. 2026-05-01",
            detail={"value": str(text)},
        ) from None


def parse_datetime(text: Any) -> dt.datetime:
    """'2026-05-01 08:00[:00]' (site time) -> a naive date-time."""
    raw = str(text).strip().replace("T", " ")
    day, _, clock = raw.partition(" ")
    if not clock:
        raise BadTime(
            f"date-time {text!r} needs a date and a time: 'YYYY-MM-DD HH:MM:SS'",
            detail={"value": str(text)},
        )
    return dt.datetime.combine(parse_date(day, "date-time"), parse_time(clock))


def parse_weekday(text: Any) -> str:
    """'mon', 'Monday', '周一' -> 'mon'; numbers refused (the APScheduler Monday-0 trap)."""
    token = str(text).strip().lower()
    if token.isdigit():
        raise UnknownDay(
            f"weekday {token!r} is a number; numbers are ambiguous (crontab counts "
            "Sunday as 0, APScheduler Monday as 0): write a day name such as mon",
            code="numeric_weekday",
            detail={"value": token},
        )
    if token in _DAY_ALIASES:
        return _DAY_ALIASES[token]
    near = difflib.get_close_matches(token, list(_DAY_ALIASES), n=1, cutoff=0.5)
    hint = f"; did you mean {_DAY_ALIASES[near[0]]}?" if near else ""
    raise UnknownDay(
        f"unknown day name {text!r}{hint} (use {', '.join(DAYS)})",
        detail={"value": str(text), "suggestion": _DAY_ALIASES[near[0]] if near else None},
    )


def parse_anchor(text: Any) -> str:
    """A solar term or festival name: 清明, 春节, 端午 (节 may be added), 中秋 …"""
    name = str(text).strip()
    for candidate in (name, name.removesuffix("节"), name + "节"):
        if candidate in cal.ANCHORS:
            return candidate
    near = difflib.get_close_matches(name, cal.ANCHORS, n=1, cutoff=0.3)
    hint = f"; did you mean {near[0]}?" if near else ""
    raise UnknownAnchor(
        f"{name!r} is not a solar term or festival we know{hint} (terms: "
        f"{' '.join(cal.TERMS)}; festivals: "
        f"{' '.join(a for a in cal.ANCHORS if a not in cal.TERMS)})",
        detail={"value": name, "suggestion": near[0] if near else None},
    )


def day_name(day: int) -> str:
    """A lunar day in words: 1 -> 初一, 23 -> 二十三."""
    digits = "一二三四五六七八九十"
    if day <= 10:
        return "初" + digits[day - 1]
    if day < 20:
        return "十" + digits[day - 11]
    if day == 20:
        return "二十"
    return ("廿" + digits[day - 21]) if day < 30 else "三十"
