"""The arbitration core: who holds each speaker, what a new broadcast takes or is refused."""

from __future__ import annotations

from broadcaster.access.policy import rank
from broadcaster.core.arbitration import Hold, Holdings

VILLAGE_ANN = Hold("v-ann", rank("announcement", "village"), "announcement", "v1")
AREA_LIVE = Hold("a-live", rank("live", "area"), "live", "a1")
EMERGENCY = Hold("sd-em", rank("emergency", "subdistrict"), "emergency", "office")
BACKGROUND = Hold("bg", rank("background", "subdistrict"), "background", "office")


def test_the_ladder_classes_then_tiers():
    assert rank("emergency", "village") > rank("live", "subdistrict")
    assert rank("live", "village") > rank("announcement", "subdistrict")
    assert (
        rank("announcement", "subdistrict")
        > rank("announcement", "area")
        > rank("announcement", "village")
        > rank("background", "subdistrict")
    )


def test_higher_takes_lower_equal_blocks():
    h = Holdings()
    h.claim(["h1", "h2", "h3"], VILLAGE_ANN)
    d = h.decide(["h1", "h2", "h4"], AREA_LIVE.rank)
    assert set(d.take) == {"h1", "h2"} and d.free == ["h4"] and not d.blocked
    assert d.cuts() == {"v-ann": ["h1", "h2"]}
    cut = h.claim(["h1", "h2", "h4"], AREA_LIVE)
    assert cut == {"v-ann": ["h1", "h2"]}
    assert h.held_by("v-ann") == ["h3"]  # its other speaker keeps playing it
    again = h.decide(["h1"], rank("live", "area"))
    assert set(again.blocked) == {"h1"} and again.blocked["h1"].broadcast == "a-live"
    assert set(h.decide(["h3"], rank("announcement", "village")).blocked) == {"h3"}


def test_emergency_cuts_everything_and_nothing_cuts_it():
    h = Holdings()
    h.claim(["h1"], AREA_LIVE)
    assert h.claim(["h1", "h2"], EMERGENCY) == {"a-live": ["h1"]}
    for cls, tier in (("emergency", "subdistrict"), ("live", "subdistrict")):
        assert set(h.decide(["h1", "h2"], rank(cls, tier)).blocked) == {"h1", "h2"}


def test_background_pauses_and_resumes_others_are_cut_for_good():
    h = Holdings()
    h.claim(["h1", "h2"], BACKGROUND)
    h.claim(["h1"], VILLAGE_ANN)
    assert h.held_by("bg") == ["h2"]
    assert h.release("v-ann") == {"bg": ["h1"]}
    assert h.held_by("bg") == ["h1", "h2"]
    h.claim(["h1"], AREA_LIVE)
    h.claim(["h1"], EMERGENCY)  # the live page is cut; it never comes back
    assert h.release("sd-em") == {"bg": ["h1"]}
    assert h.holders["h1"].broadcast == "bg"


def test_a_paused_background_that_ends_is_forgotten():
    h = Holdings()
    h.claim(["h1"], BACKGROUND)
    h.claim(["h1"], VILLAGE_ANN)
    h.release("bg")  # it ended while paused
    assert h.release("v-ann") == {}
    assert "h1" not in h.holders
