"""The Chinese calendars the villages live by: lunar months, solar terms, festivals, and the
official holiday and make-up working-day (调休) list.

The only module that imports `lunar_python` (lunar months and the 24 solar terms, computed) and
`chinese_calendar` (the State Council's published holiday lists). The rest of the scheduler speaks
in `datetime.date` and our own small types. Lunar months are cached per lunar year: converting
one date through lunar_python costs ~1.5 ms, a whole year's months ~10 ms.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass
from functools import lru_cache

import chinese_calendar
from lunar_python import Lunar, LunarYear, Solar

TERMS = (
    "小寒",
    "大寒",
    "立春",
    "雨水",
    "惊蛰",
    "春分",
    "清明",
    "谷雨",
    "立夏",
    "小满",
    "芒种",
    "夏至",
    "小暑",
    "大暑",
    "立秋",
    "处暑",
    "白露",
    "秋分",
    "寒露",
    "霜降",
    "立冬",
    "小雪",
    "大雪",
    "冬至",
)
# festivals on a lunar month and day; 除夕 is handled apart (the last day of the twelfth month)
LUNAR_FESTIVALS = {
    "春节": (1, 1),
    "元宵": (1, 15),
    "龙抬头": (2, 2),
    "端午": (5, 5),
    "七夕": (7, 7),
    "中元": (7, 15),
    "中秋": (8, 15),
    "重阳": (9, 9),
    "腊八": (12, 8),
    "小年": (12, 23),
}
SOLAR_FESTIVALS = {"元旦": (1, 1), "劳动节": (5, 1), "国庆": (10, 1)}
ANCHORS = (*TERMS, *LUNAR_FESTIVALS, "除夕", *SOLAR_FESTIVALS)
LIBRARY = f"chinese-calendar {getattr(chinese_calendar, '__version__', '?')}"


@dataclass(frozen=True)
class LunarMonth:
    """One lunar month: its lunar year, number (1-12), whether it is a leap month, and its days."""

    year: int
    month: int
    leap: bool
    days: int  # 29 or 30
    first: dt.date  # the Gregorian date of its first day

    def name(self) -> str:
        """Its Chinese name, e.g. 闰六月, 腊月."""
        return ("闰" if self.leap else "") + MONTH_NAMES[self.month - 1]


@dataclass(frozen=True)
class LunarDay:
    """A Gregorian date seen in the lunar calendar."""

    month: LunarMonth
    day: int


MONTH_NAMES = (
    "正月",
    "二月",
    "三月",
    "四月",
    "五月",
    "六月",
    "七月",
    "八月",
    "九月",
    "十月",
    "冬月",
    "腊月",
)


@lru_cache(maxsize=64)
def _months_of(lunar_year: int) -> tuple[LunarMonth, ...]:
    out = []
    for m in LunarYear.fromYear(lunar_year).getMonths():
        if m.getYear() != lunar_year:
            continue  # LunarYear also lists the neighbours' months around its edges
        first = Solar.fromJulianDay(m.getFirstJulianDay())
        out.append(
            LunarMonth(
                m.getYear(),
                abs(m.getMonth()),
                m.isLeap(),
                m.getDayCount(),
                dt.date(first.getYear(), first.getMonth(), first.getDay()),
            )
        )
    return tuple(out)


@lru_cache(maxsize=16)
def _index(gregorian_year: int) -> tuple[list[dt.date], tuple[LunarMonth, ...]]:
    # a Gregorian year lies within lunar years year-1 .. year
    months = _months_of(gregorian_year - 1) + _months_of(gregorian_year)
    return [m.first for m in months], months


def lunar_of(day: dt.date) -> LunarDay:
    """The lunar month and day of a Gregorian date."""
    firsts, months = _index(day.year)
    i = bisect.bisect_right(firsts, day) - 1
    month = months[i]
    return LunarDay(month, (day - month.first).days + 1)


def lunar_month(lunar_year: int, month: int, leap: bool = False) -> LunarMonth | None:
    """A lunar year's month (or its leap month), None when that year has no such month."""
    for m in _months_of(lunar_year):
        if m.month == month and m.leap == leap:
            return m
    return None


def solar_of(lunar_year: int, month: int, day: int, leap: bool = False) -> dt.date | None:
    """The Gregorian date of a lunar date, None when it does not exist (no such leap month, or
    day 30 of a 29-day month)."""
    m = lunar_month(lunar_year, month, leap)
    if m is None or not 1 <= day <= m.days:
        return None
    return m.first + dt.timedelta(days=day - 1)


def leap_month(lunar_year: int) -> int | None:
    """The month a lunar year repeats as a leap month, or None."""
    return next((m.month for m in _months_of(lunar_year) if m.leap), None)


@lru_cache(maxsize=64)
def _terms_of(gregorian_year: int) -> dict[str, dt.date]:
    # the table of a lunar year spans the solar terms from the previous winter solstice on;
    # three neighbouring tables cover every term of the Gregorian year
    found: dict[str, dt.date] = {}
    for y in (gregorian_year - 1, gregorian_year, gregorian_year + 1):
        table = Lunar.fromYmd(y, 6, 1).getJieQiTable()
        for name, solar in table.items():
            if name in TERMS and solar.getYear() == gregorian_year:
                found[name] = dt.date(solar.getYear(), solar.getMonth(), solar.getDay())
    return found


def term_date(name: str, gregorian_year: int) -> dt.date:
    """The date of a solar term (清明, 冬至 …) in a Gregorian year."""
    return _terms_of(gregorian_year)[name]


def anchor_dates(name: str, first_year: int, last_year: int) -> list[dt.date]:
    """Every date of a solar term or festival from Jan 1 of first_year to Dec 31 of last_year."""
    out: list[dt.date] = []
    for y in range(first_year - 1, last_year + 2):
        if name in TERMS:
            if first_year <= y <= last_year:
                out.append(term_date(name, y))
        elif name in SOLAR_FESTIVALS:
            out.append(dt.date(y, *SOLAR_FESTIVALS[name]))
        elif name == "除夕":
            new_year = solar_of(y, 1, 1)
            if new_year:
                out.append(new_year - dt.timedelta(days=1))
        else:
            found = solar_of(y, *LUNAR_FESTIVALS[name])
            if found:
                out.append(found)
    return sorted(d for d in out if first_year <= d.year <= last_year)


# --- the official holiday list ----------------------------------------------------------------


def holiday_year_known(year: int) -> bool:
    """True when the installed chinese-calendar carries the State Council's list for the year."""
    try:
        chinese_calendar.is_workday(dt.date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


def is_workday(day: dt.date) -> bool | None:
    """True on a working day (make-up Saturdays included), False on a rest day; None when the
    year's official list is not known (never guessed)."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


def holiday_name(day: dt.date) -> str | None:
    """The statutory holiday a rest day belongs to (its English name), else None; a plain
    weekend is not one. Check `holiday_year_known` first: an unknown year also gives None."""
    try:
        rest, name = chinese_calendar.get_holiday_detail(day)
    except NotImplementedError:
        return None
    return name if rest and name else None
