"""The lead chosen from the speakers' measured paths (core/lead.py): a pure function."""

from __future__ import annotations

import math

import pytest

from broadcaster.core.lead import CAP, K_JITTER, MARGIN, PathFigure, choose_lead, path_of
from broadcaster.protocol.clock import OffsetEstimator

LAN = PathFigure(0.0002, 0.0003)
VILLAGE = PathFigure(0.150, 0.045)


def test_path_of_a_synced_status():
    p = path_of({"synced": True, "offset": 0.1, "rtt": 0.3, "rtt_p90": 0.345})
    assert p == PathFigure(0.15, pytest.approx(0.045))


@pytest.mark.parametrize(
    "clock",
    [
        None,
        "x",
        {},
        {"synced": False, "rtt": 0.3, "rtt_p90": 0.4},
        {"synced": "yes", "rtt": 0.3},
        {"synced": True},
        {"synced": True, "rtt": "0.3"},
        {"synced": True, "rtt": -1.0},
        {"synced": True, "rtt": math.nan},
        {"synced": True, "rtt": math.inf},
        {"synced": True, "rtt": True},
    ],
)
def test_path_of_unsynced_or_malformed_is_none(clock):
    assert path_of(clock) is None


def test_path_of_an_older_speaker_without_p90_is_jitter_free():
    assert path_of({"synced": True, "rtt": 0.02}) == PathFigure(0.01, 0.0)


@pytest.mark.parametrize("p90", [0.1, -3, "bad", None, math.nan])
def test_a_p90_below_the_minimum_or_bad_gives_no_negative_jitter(p90):
    p = path_of({"synced": True, "rtt": 0.2, "rtt_p90": p90})
    assert p is not None and p.delay == 0.1 and p.jitter == 0.0


def test_no_speakers_or_no_figures_gives_the_floor():
    assert choose_lead({}, 0.1).lead == 0.1
    c = choose_lead({"a": None, "b": None}, 0.07)
    assert (c.lead, c.worst, c.unmeasured, c.need, c.capped) == (0.07, None, 2, 0.0, False)


def test_lan_columns_get_the_floor():
    c = choose_lead({"col-1": LAN, "col-2": LAN}, 0.1)
    assert c.lead == 0.1 and c.worst == "col-1" and not c.capped
    assert c.need == pytest.approx(LAN.delay + K_JITTER * LAN.jitter + MARGIN)


def test_the_slowest_path_sets_the_lead():
    c = choose_lead({"col-1": LAN, "h1-1": VILLAGE, "h2-1": PathFigure(0.03, 0.01)}, 0.1)
    assert c.worst == "h1-1"
    assert c.lead == pytest.approx(0.15 + K_JITTER * 0.045 + MARGIN)
    assert 0.2 < c.lead < 0.5


def test_jitter_counts_k_times():
    a = choose_lead({"x": PathFigure(0.1, 0.0)}, 0.0, k=2, margin=0)
    b = choose_lead({"x": PathFigure(0.1, 0.05)}, 0.0, k=2, margin=0)
    assert a.lead == pytest.approx(0.1) and b.lead == pytest.approx(0.2)


def test_a_jittery_short_path_can_outweigh_a_steady_long_one():
    c = choose_lead(
        {"steady": PathFigure(0.2, 0.0), "jittery": PathFigure(0.05, 0.1)}, 0.0, k=2, margin=0
    )
    assert c.worst == "jittery" and c.lead == pytest.approx(0.25)


def test_live_floor_is_kept_for_lan():
    assert choose_lead({"col-1": LAN}, 0.07).lead == 0.07


def test_capped():
    c = choose_lead({"sat": PathFigure(1.5, 0.5)}, 0.1)
    assert c.lead == CAP and c.capped and c.need > CAP


def test_a_floor_above_the_cap_wins():
    c = choose_lead({"x": PathFigure(5.0, 0)}, 3.0, cap=2.0)
    assert c.lead == 3.0


def test_unmeasured_speakers_are_counted_not_guessed():
    c = choose_lead({"a": VILLAGE, "b": None}, 0.1)
    assert c.unmeasured == 1 and c.worst == "a"


def test_ties_name_the_first_speaker_in_order():
    assert choose_lead({"b": VILLAGE, "a": VILLAGE}, 0.1).worst == "a"


def test_to_dict_is_json_friendly():
    d = choose_lead({"h1-1": VILLAGE}, 0.1).to_dict()
    assert set(d) == {"lead", "floor", "need", "worst", "capped", "unmeasured"}
    assert d["worst"] == "h1-1" and isinstance(d["lead"], float)


def test_rtt_p90_of_the_estimator_window():
    est = OffsetEstimator()
    assert est.rtt_p90 == 0.0
    for i in range(20):  # round trips 0.300 .. 0.319
        rtt = 0.3 + i / 1000
        est.add(100.0 + i, 100.0 + i + rtt / 2, 100.0 + i + rtt / 2, 100.0 + i + rtt)
    assert est.rtt == pytest.approx(0.3)
    assert est.rtt_p90 == pytest.approx(0.318)
    p = path_of({"synced": est.synced, "rtt": est.rtt, "rtt_p90": est.rtt_p90})
    assert p is not None and p.jitter == pytest.approx(0.018)
