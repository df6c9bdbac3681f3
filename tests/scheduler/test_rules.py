"""The pure rules: weekday names, cron, lunar market days, lunar dates, solar terms, the official
holiday list, time zones — checked against the calendar libraries themselves where they apply."""

from __future__ import annotations

import datetime as dt

import chinese_calendar
import pytest
from lunar_python import Solar

from broadcaster.scheduler import calendar as cal
from broadcaster.scheduler import rules
from broadcaster.scheduler.lunartext import parse_lunar_date

SH = rules.zone("Asia/Shanghai")


def window(y0, m0, d0, y1, m1, d1, tz=SH):
    return dt.datetime(y0, m0, d0, tzinfo=tz), dt.datetime(y1, m1, d1, tzinfo=tz)


def occ(when, *span, tz=SH):
    return rules.occurrences(rules.parse_rule(when), *window(*span, tz=tz), tz)


def dates(instants):
    return [i.date() for i in instants]


# --- weekdays: names, never numbers ------------------------------------------------------------


def test_named_weekdays_fire_on_those_days_only():
    got = occ(
        {"kind": "weekly", "days": "mon,wed,fri", "times": ["07:30"]}, 2026, 6, 1, 2026, 6, 15
    )
    assert [d.strftime("%a %d") for d in got] == [
        "Mon 01",
        "Wed 03",
        "Fri 05",
        "Mon 08",
        "Wed 10",
        "Fri 12",
    ]
    assert all(i.hour == 7 and i.minute == 30 for i in got)


def test_weekday_numbers_are_refused_with_the_reason():
    with pytest.raises(rules.UnknownDay) as err:
        rules.parse_rule({"kind": "weekly", "days": [1, 5], "times": ["08:00"]})
    assert err.value.code == "numeric_weekday" and "Monday as 0" in err.value.message
    with pytest.raises(rules.RuleError) as err:
        rules.parse_rule({"kind": "cron", "cron": "0 8 * * 1-5"})
    assert err.value.code == "numeric_weekday" and "mon-fri" in err.value.message


def test_the_trap_itself_apscheduler_reads_1_5_as_tuesday_to_saturday():
    from apscheduler.triggers.cron import CronTrigger

    trap = CronTrigger.from_crontab("0 8 * * 1-5", timezone=SH)
    t = dt.datetime(2026, 6, 1, tzinfo=SH) - dt.timedelta(seconds=1)  # Sunday night
    fired = []
    for _ in range(5):
        t = trap.get_next_fire_time(None, t + dt.timedelta(seconds=1))
        fired.append(t.strftime("%a"))
    assert fired == ["Tue", "Wed", "Thu", "Fri", "Sat"]
    ours = occ({"kind": "cron", "cron": "0 8 * * mon-fri"}, 2026, 6, 1, 2026, 6, 8)
    assert [i.strftime("%a") for i in ours] == ["Mon", "Tue", "Wed", "Thu", "Fri"]


@pytest.mark.parametrize("name, hint", [("mno", "mon"), ("fir", "fri"), ("thurs", "thu")])
def test_unknown_day_name_suggests_the_nearest(name, hint):
    with pytest.raises(rules.UnknownDay) as err:
        rules.parse_rule({"kind": "weekly", "days": [name], "times": ["08:00"]})
    assert err.value.code == "unknown_day" and f"did you mean {hint}?" in err.value.message


def test_chinese_day_names_are_read():
    r = rules.parse_rule({"kind": "weekly", "days": ["周一", "星期五"], "times": ["08:00"]})
    assert r.weekdays == ("mon", "fri")


def test_cron_fields_and_wraparound_weekdays():
    got = occ({"kind": "cron", "cron": "0,30 7 1,15 * *"}, 2026, 5, 1, 2026, 6, 1)
    assert [i.strftime("%d %H:%M") for i in got] == ["01 07:00", "01 07:30", "15 07:00", "15 07:30"]
    weekend = occ({"kind": "cron", "cron": "0 9 * * sat-sun"}, 2026, 6, 1, 2026, 6, 8)
    assert [i.strftime("%a") for i in weekend] == ["Sat", "Sun"]


@pytest.mark.parametrize(
    "when, code",
    [
        ({"kind": "daily", "times": ["25:00"]}, "bad_time"),
        ({"kind": "daily", "times": ["8h"]}, "bad_time"),
        ({"kind": "once", "at": "2026-02-30 08:00"}, "bad_time"),
        (
            {"kind": "daily", "times": ["08:00"], "start": "2026-05-02", "end": "2026-05-01"},
            "end_before_start",
        ),
        ({"kind": "hourly"}, "bad_rule"),
        ({"kind": "daily"}, "bad_rule"),
        (
            {"kind": "relative", "anchor": "清名", "offset_days": -3, "times": ["08:00"]},
            "unknown_anchor",
        ),
        ({"kind": "lunar_days", "days": [0, 31], "times": ["08:00"]}, "impossible_lunar_date"),
    ],
)
def test_bad_when_is_refused_with_a_code(when, code):
    with pytest.raises(rules.RuleError) as err:
        rules.parse_rule(when)
    assert err.value.code == code and err.value.status == 400


def test_a_one_off_in_the_past_or_a_range_already_ended_cannot_be_saved():
    now = dt.datetime(2026, 6, 1, 12, 0, tzinfo=SH)
    with pytest.raises(rules.TimePassed):
        rules.check_saveable(rules.parse_rule({"kind": "once", "at": "2026-06-01 11:59:59"}), now)
    rules.check_saveable(rules.parse_rule({"kind": "once", "at": "2026-06-01 12:00:01"}), now)
    with pytest.raises(rules.TimePassed):
        rules.check_saveable(
            rules.parse_rule({"kind": "daily", "times": ["08:00"], "end": "2026-05-31"}), now
        )


def test_range_and_excluded_dates():
    got = occ(
        {
            "kind": "daily",
            "times": ["08:00"],
            "start": "2026-06-03",
            "end": "2026-06-06",
            "except": ["2026-06-04"],
        },
        2026,
        6,
        1,
        2026,
        7,
        1,
    )
    assert dates(got) == [dt.date(2026, 6, 3), dt.date(2026, 6, 5), dt.date(2026, 6, 6)]


def test_rule_round_trips_through_its_stored_form():
    for when in (
        {"kind": "once", "at": "2026-06-01 08:00:00"},
        {
            "kind": "weekly",
            "days": ["mon", "fri"],
            "times": ["07:30:00"],
            "workdays_only": True,
            "except": ["2026-06-05"],
        },
        {"kind": "cron", "cron": "30 7 * * mon-fri", "start": "2026-01-01"},
        {"kind": "lunar_days", "days": [1, 6], "times": ["07:00:00"]},
        {"kind": "lunar_date", "month": 12, "day": 23, "leap": False, "times": ["08:00:00"]},
        {
            "kind": "relative",
            "anchor": "清明",
            "offset_days": -3,
            "times": ["08:00:00"],
            "skip_holidays": True,
        },
    ):
        r = rules.parse_rule(when)
        assert rules.parse_rule(r.to_dict()) == r
        assert r.to_dict() == when


# --- the lunar calendar ------------------------------------------------------------------------


def test_market_days_1_and_6_over_2027_match_the_library_day_by_day():
    got = set(
        dates(
            occ(
                {"kind": "lunar_days", "days": [1, 6, 11, 16, 21, 26], "times": ["07:00"]},
                2027,
                1,
                1,
                2028,
                1,
                1,
            )
        )
    )
    expected = set()
    day = dt.date(2027, 1, 1)
    while day.year == 2027:
        if Solar.fromYmd(day.year, day.month, day.day).getLunar().getDay() in (
            1,
            6,
            11,
            16,
            21,
            26,
        ):
            expected.add(day)
        day += dt.timedelta(days=1)
    assert got == expected and len(got) > 70


def test_lunar_of_agrees_with_the_library_across_leap_months():
    day = dt.date(2025, 1, 1)
    while day < dt.date(2026, 3, 1):  # 2025 has a leap sixth month
        lunar = Solar.fromYmd(day.year, day.month, day.day).getLunar()
        mine = cal.lunar_of(day)
        assert (mine.month.month, mine.month.leap, mine.day) == (
            abs(lunar.getMonth()),
            lunar.getMonth() < 0,
            lunar.getDay(),
        ), day
        day += dt.timedelta(days=3)
    assert cal.leap_month(2025) == 6


def test_la_yue_23_is_the_lunar_date_every_year():
    got = occ(
        {"kind": "lunar_date", "date": "腊月二十三", "times": ["08:00"]}, 2026, 1, 1, 2028, 1, 1
    )
    assert dates(got) == [dt.date(2026, 2, 10), dt.date(2027, 1, 30)]
    for d in dates(got):
        lunar = Solar.fromYmd(d.year, d.month, d.day).getLunar()
        assert (lunar.getMonth(), lunar.getDay()) == (12, 23)


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("腊月二十三", (12, 23, False)),
        ("正月十五", (1, 15, False)),
        ("闰六月初一", (6, 1, True)),
        ("十二月廿三", (12, 23, False)),
        ("冬月初十", (11, 10, False)),
        ("12-23", (12, 23, False)),
    ],
)
def test_lunar_dates_are_read_as_written(text, parsed):
    assert parse_lunar_date(text) == parsed


@pytest.mark.parametrize(
    "when, why",
    [
        ({"date": "二月三十", "year": 2026}, "has only 29 days"),
        ({"date": "闰二月初一", "year": 2026}, "has no 闰二月"),
        ({"month": 13, "day": 1}, "cannot exist"),
        ({"month": 1, "day": 31}, "cannot exist"),
        ({"date": "闰六月初一"}, "give the lunar year"),
    ],
)
def test_an_impossible_lunar_date_is_refused(when, why):
    with pytest.raises(rules.ImpossibleLunarDate) as err:
        rules.parse_rule({"kind": "lunar_date", "times": ["08:00"], **when})
    assert err.value.code == "impossible_lunar_date" and why in err.value.message


def test_a_leap_month_date_with_its_year_exists():
    got = occ(
        {"kind": "lunar_date", "date": "闰六月初一", "year": 2025, "times": ["08:00"]},
        2025,
        1,
        1,
        2026,
        1,
        1,
    )
    assert dates(got) == [dt.date(2025, 7, 25)]


def test_every_year_day_30_is_skipped_with_a_warning_in_29_day_years():
    rule = rules.parse_rule({"kind": "lunar_date", "date": "二月三十", "times": ["08:00"]})
    exp = rules.expand(rule, *window(2026, 1, 1, 2028, 1, 1))
    assert dates(exp.instants) == [dt.date(2027, 4, 6)]  # 2027's second month has 30 days
    assert any("lunar year 2026" in w and "29 days" in w for w in exp.warnings)


# --- solar terms and festivals -----------------------------------------------------------------


def test_three_days_before_qingming_2027():
    got = occ(
        {"kind": "relative", "anchor": "清明", "offset_days": -3, "times": ["08:00"]},
        2027,
        1,
        1,
        2028,
        1,
        1,
    )
    assert dates(got) == [dt.date(2027, 4, 2)]
    assert cal.term_date("清明", 2027) == dt.date(2027, 4, 5)


@pytest.mark.parametrize(
    "anchor, offset, expected",
    [
        ("春节", -1, dt.date(2027, 2, 5)),
        ("端午节", 0, dt.date(2027, 6, 9)),
        ("中秋", 2, dt.date(2027, 9, 17)),
        ("除夕", 0, dt.date(2027, 2, 5)),
        ("冬至", 0, dt.date(2027, 12, 22)),
        ("国庆", -1, dt.date(2027, 9, 30)),
    ],
)
def test_days_around_festivals_and_terms(anchor, offset, expected):
    got = occ(
        {"kind": "relative", "anchor": anchor, "offset_days": offset, "times": ["08:00"]},
        2027,
        1,
        1,
        2028,
        1,
        1,
    )
    assert dates(got) == [expected]


# --- the official holiday list -----------------------------------------------------------------


def test_2026_workdays_follow_the_official_list_with_make_up_days():
    got = set(
        dates(
            occ(
                {"kind": "daily", "times": ["08:00"], "workdays_only": True}, 2026, 1, 1, 2027, 1, 1
            )
        )
    )
    make_up = {
        dt.date(2026, 1, 4),
        dt.date(2026, 2, 14),
        dt.date(2026, 2, 28),
        dt.date(2026, 5, 9),
        dt.date(2026, 9, 20),
        dt.date(2026, 10, 10),
    }
    assert make_up <= got and all(d.weekday() >= 5 for d in make_up)
    assert not {dt.date(2026, 10, 1), dt.date(2026, 2, 17), dt.date(2026, 1, 1)} & got
    day, expected = dt.date(2026, 1, 1), set()
    while day.year == 2026:
        if chinese_calendar.is_workday(day):
            expected.add(day)
        day += dt.timedelta(days=1)
    assert got == expected


def test_skip_holidays_skips_statutory_holidays_not_weekends():
    got = set(
        dates(
            occ(
                {"kind": "daily", "times": ["08:00"], "skip_holidays": True},
                2026,
                9,
                12,
                2026,
                10,
                12,
            )
        )
    )
    assert dt.date(2026, 9, 13) in got  # a plain Sunday
    assert dt.date(2026, 9, 25) not in got  # Mid-Autumn
    assert not any(dt.date(2026, 10, d) in got for d in range(1, 8))  # National Day
    assert dt.date(2026, 10, 8) in got


def test_a_year_without_the_official_list_is_held_with_a_warning():
    rule = rules.parse_rule(
        {"kind": "weekly", "days": ["mon"], "times": ["08:00"], "workdays_only": True}
    )
    exp = rules.expand(rule, *window(2026, 12, 1, 2027, 2, 1))
    assert max(dates(exp.instants)) < dt.date(2027, 1, 1)
    assert any("2027" in w and "not guessed" in w for w in exp.warnings)


# --- time zones --------------------------------------------------------------------------------


def test_asia_shanghai_has_no_dst_08_00_is_always_00_00_utc():
    got = occ({"kind": "daily", "times": ["08:00"]}, 2026, 1, 1, 2027, 1, 1)
    assert len(got) == 365
    assert {i.astimezone(dt.UTC).strftime("%H:%M") for i in got} == {"00:00"}


def test_a_configured_zone_keeps_wall_time_across_dst():
    berlin = rules.zone("Europe/Berlin")
    got = occ({"kind": "daily", "times": ["08:00"]}, 2026, 3, 28, 2026, 3, 31, tz=berlin)
    assert [i.strftime("%H:%M") for i in got] == ["08:00"] * 3
    assert [i.astimezone(dt.UTC).hour for i in got] == [7, 6, 6]
    rule = rules.parse_rule({"kind": "daily", "times": ["02:30"]})
    exp = rules.expand(rule, *window(2026, 3, 29, 2026, 3, 30, tz=berlin), berlin)
    assert [i.strftime("%H:%M") for i in exp.instants] == ["03:30"]
    assert exp.warnings and "jump forward" in exp.warnings[0]
    autumn = rules.expand(rule, *window(2026, 10, 25, 2026, 10, 26, tz=berlin), berlin)
    assert len(autumn.instants) == 1  # 02:30 happens twice that night: it fires once


def test_unknown_time_zone_is_refused():
    with pytest.raises(rules.RuleError.__mro__[1]) as err:
        rules.zone("Mars/Olympus")
    assert err.value.code == "unknown_time_zone"
