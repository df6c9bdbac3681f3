"""The registry's rows and order are kept between requests for the list: they must still follow
every change a speaker's reports, a failed poll, a new address or a newcomer make."""

from __future__ import annotations

from broadcaster.core.registry import OFFLINE_AFTER, Registry


def make() -> Registry:
    reg = Registry()
    for sid in ("sp-2", "sp-1"):
        reg.assign(sid, "horn", f"村 {sid}", "bcspeaker")
    return reg


def test_a_kept_row_follows_every_change_of_its_speaker():
    reg = make()
    st = reg.get("sp-1")
    first = st.row()
    assert first["online"] is False and first["address"] is None
    assert st.row() is first  # kept while nothing changed

    reg.seen("sp-1", {"clock": {"synced": True}, "playing": "b-1"}, now=10.0)
    row = st.row()
    assert (row["online"], row["clock_synced"], row["playing"]) == (True, True, "b-1")
    assert row["status_answers"] == 1 and row["last_seen"] == 10.0

    reg.alive("sp-1", {"playing": None}, now=11.0)
    assert (st.row()["heartbeats"], st.row()["playing"], st.row()["last_seen"]) == (1, None, 11.0)

    # counters that grew are attacks, added to what the row showed (a new dict each time)
    reg.seen("sp-1", {"counters": {"dropped_replay": 2}}, now=12.0)
    shown = st.row()["attacks"]
    reg.seen("sp-1", {"counters": {"dropped_replay": 5, "dropped_malformed": 1}}, now=13.0)
    assert shown == {"dropped_replay": 2}  # a row already handed out is left as it was
    assert st.row()["attacks"] == {"dropped_replay": 5, "dropped_malformed": 1}
    assert "counters" not in st.row()

    st.host, st.port = "127.0.0.1", 9000
    assert st.row()["address"] == "127.0.0.1:9000"

    assert not reg.failed("sp-1", "timeout", now=13.0 + OFFLINE_AFTER / 2)
    assert st.row()["last_error"] == "timeout" and st.row()["online"] is True
    assert reg.failed("sp-1", "timeout", now=13.0 + OFFLINE_AFTER)
    assert st.row()["online"] is False


def test_to_dict_is_the_callers_own_copy():
    st = make().get("sp-1")
    d = st.to_dict()
    d["online"] = True
    assert st.row()["online"] is False and st.to_dict() == st.row()


def test_the_kept_order_takes_in_newcomers_zones_file_first():
    reg = make()
    assert [s.id for s in reg.ordered()] == ["sp-1", "sp-2"]
    reg.get("sp-0")  # advertises, not in the zones file
    reg.assign("sp-3", "column", "街道", "rtp")
    assert [(s.id, s.assigned) for s in reg.ordered()] == [
        ("sp-1", True),
        ("sp-2", True),
        ("sp-3", True),
        ("sp-0", False),
    ]
    # a newcomer of the zones file that first advertised unassigned moves up once assigned
    reg.get("sp-9")
    reg.assign("sp-9", "horn", "村", "bcspeaker")
    assert [s.id for s in reg.ordered()][-2:] == ["sp-9", "sp-0"]
