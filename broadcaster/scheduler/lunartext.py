"""Lunar dates written the way people write them: 腊月二十三, 正月十五, 闰六月初一, or 12-23; pure.

Only numerals and the customary month names are read here; what a date means in a given year is
the calendar module's business.
"""

from __future__ import annotations

import re

from broadcaster.errors import InvalidInput

_DIGITS = {
    "一": 1,
    "二": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
    "十": 10,
}
_MONTHS = {
    "正": 1,
    "冬": 11,
    "腊": 12,
    "十一": 11,
    "十二": 12,
    **{k: v for k, v in _DIGITS.items()},
}
_NUMERIC = re.compile(r"(闰|L)?\s*(\d{1,2})\s*[-/月]\s*(\d{1,2})\s*日?", re.IGNORECASE)


class LunarTextError(InvalidInput):
    """A lunar date is not written in a form we read."""

    code = "bad_lunar_date"


def parse_lunar_date(text: object) -> tuple[int, int, bool]:
    """'腊月二十三' -> (12, 23, False); '闰六月初一' -> (6, 1, True); '12-23' -> (12, 23, False).

    Values are returned as written (month 13 or day 31 too): checking that the date can exist
    is the caller's job, so the error can say why it cannot."""
    raw = str(text).strip().replace("农历", "")
    m = _NUMERIC.fullmatch(raw)
    if m:
        return int(m.group(2)), int(m.group(3)), bool(m.group(1))
    leap = raw.startswith("闰")
    body = raw[1:] if leap else raw
    month_part, sep, day_part = body.partition("月")
    if not sep or month_part not in _MONTHS and _chinese_number(month_part) is None:
        raise _bad(text)
    month = _MONTHS.get(month_part) or _chinese_number(month_part)
    day = _day(day_part)
    if month is None or day is None:
        raise _bad(text)
    return month, day, leap


def _day(text: str) -> int | None:
    text = text.removesuffix("日")
    if text.startswith("初"):
        return _chinese_number(text[1:])
    if text.startswith("廿"):
        rest = _chinese_number(text[1:]) if text[1:] else 0
        return None if rest is None else 20 + rest
    if text.startswith("卅"):
        return 30 if len(text) == 1 else None
    return _chinese_number(text)


def _chinese_number(text: str) -> int | None:
    """一 .. 九十九 (as used for months and days)."""
    if not text:
        return None
    if text in _DIGITS:
        return _DIGITS[text]
    tens, sep, ones = text.partition("十")
    if not sep:
        return None
    t = _DIGITS.get(tens, 0) if tens else 1
    o = _DIGITS.get(ones, 0) if ones else 0
    if (tens and tens not in _DIGITS) or (ones and ones not in _DIGITS):
        return None
    return t * 10 + o


def _bad(text: object) -> LunarTextError:
    return LunarTextError(
        f"lunar date {text!r} is not in a form we read: write it like "
        "腊月二十三, 正月十五, 闰六月初一, or month-day such as 12-23",
        detail={"value": str(text)},
    )
