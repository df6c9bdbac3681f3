"""Durable history: real SQLite files, a real kill -9, real faults (full, read-only, locked)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broadcaster.core.broadcast import Broadcast, SpeakerResult
from broadcaster.core.events import EventBus
from broadcaster.errors import NotFound
from broadcaster.storage import history as hmod
from broadcaster.storage.db import Store
from broadcaster.storage.history import (
    INTERRUPTED_ERROR,
    History,
    Pending,
    broadcast_from_rows,
    broadcast_rows,
    event_from_row,
    event_row,
    interrupted,
)

REPO = Path(__file__).resolve().parents[2]
SPEAKERS = [f"spk-{i:03d}" for i in range(113)]


def make_broadcast(
    bid: str, created_at: float, speakers: list[str] = SPEAKERS, owner: str = "system"
) -> Broadcast:
    """A broadcast to `speakers`, every one pending."""
    b = Broadcast(
        bid,
        list(speakers),
        {"kind": "file", "name": "chime.wav"},
        "pcmu",
        owner=owner,
        created_at=created_at,
        requested_at=created_at,
    )
    b.results = {s: SpeakerResult(s) for s in speakers}
    return b


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll cond until true (the writer is a thread; faults surface asynchronously)."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    """A fresh SQLite file in tmp_path."""
    s = Store.in_data_dir(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture
def faults() -> list[str]:
    """The messages on_fault received."""
    return []


@pytest.fixture
def hist(store, faults) -> Iterator[History]:
    """A started History with a fast retry."""
    h = History(store, on_fault=faults.append, retry_interval=0.02, retry_max=0.1)
    h.start()
    yield h
    h.close(timeout=2)


# ---- pure helpers -----------------------------------------------------------------------------


def test_broadcast_rows_round_trip():
    b = make_broadcast("b1", 100.0)
    b.results["spk-001"].state = "played"
    b.results["spk-001"].packets = 500
    d = b.to_dict()
    row, speakers = broadcast_rows(d)
    assert row["id"] == "b1" and row["state"] == "starting" and row["owner"] == "system"
    assert row["priority"] == "announcement" and row["created_at"] == 100.0
    assert row["started_at"] is None and "speakers" not in json.loads(row["json"])
    assert len(speakers) == 113 and {s["broadcast"] for s in speakers} == {"b1"}
    assert broadcast_from_rows(row, reversed(speakers)) == d


def test_broadcast_rows_tolerate_odd_values():
    row, speakers = broadcast_rows(
        {
            "id": 7,
            "created_at": "soon",
            "started_at": True,
            "speakers": [
                {"speaker": "a", "state": "pending"},
                "junk",
                {"speaker": "a", "state": "played"},
            ],
        }
    )
    assert row["id"] == "7" and row["created_at"] is None and row["started_at"] is None
    assert [(s["speaker"], s["state"]) for s in speakers] == [("a", "played")]


def test_event_rows_round_trip():
    ev = EventBus(clock=lambda: 5.0).publish("online", speaker="spk-001", broadcast="b1")
    row = event_row(ev.to_dict())
    assert (row["at"], row["kind"], row["speaker"], row["broadcast"]) == (
        5.0,
        "online",
        "spk-001",
        "b1",
    )
    assert event_from_row({"seq": 42, "json": row["json"]}) == {**ev.to_dict(), "seq": 42}


def test_interrupted_marks_only_live_speakers():
    b = make_broadcast("b1", 1.0, ["a", "b", "c", "d"])
    b.state, b.ended_at = "playing", None
    b.results["a"].state = "played"
    b.results["b"].state = "playing"
    b.results["d"].state = "failed"
    d = interrupted(b.to_dict())
    assert d["state"] == "interrupted" and d["ended_at"] is None and d["error"] == INTERRUPTED_ERROR
    assert [s["state"] for s in d["speakers"]] == ["played", "interrupted", "interrupted", "failed"]
    assert d["summary"]["interrupted"] == 2 and "pending" not in d["summary"]


def test_interrupted_recounts_a_per_state_summary():
    d = {
        "id": "x",
        "state": "playing",
        "summary": {"speakers": 3, "playing": 2, "played": 1},
        "speakers": [
            {"speaker": "a", "state": "playing"},
            {"speaker": "b", "state": "playing"},
            {"speaker": "c", "state": "played"},
        ],
    }
    assert interrupted(d)["summary"] == {"speakers": 3, "played": 1, "interrupted": 2}
    assert d["summary"]["playing"] == 2  # the input is left as it was


def test_pending_coalesces_and_keeps_newer_saves():
    p = Pending()
    for state in ("starting", "playing", "done"):
        p.add_broadcast("b1", state)
    p.add_event("e1")
    assert len(p) == 2 and p.broadcasts["b1"] == "done"
    bs, es = p.batch()
    p.add_broadcast("b1", "done again")  # arrives while the batch is being written
    p.done(bs, es)
    assert list(p.broadcasts.items()) == [("b1", "done again")] and not p.events


def test_pending_is_bounded_dropping_oldest_events_first():
    p = Pending(limit=5)
    p.add_broadcast("b1", "x")
    for i in range(10):
        p.add_event(f"e{i}")
    assert len(p) == 5 and p.dropped == 6
    assert list(p.events.values()) == ["e6", "e7", "e8", "e9"] and "b1" in p.broadcasts
    for i in range(5):
        p.add_broadcast(f"c{i}", "y")
    assert len(p) == 5 and not p.events and "b1" not in p.broadcasts


# ---- writing and reading ----------------------------------------------------------------------


def test_broadcast_of_113_speakers_progresses_and_survives_reopening(store, hist):
    b = make_broadcast("20240101-000000-aaaaaa", 1000.0)
    hist.save_broadcast(b.to_dict())
    assert hist.flush(5)
    assert hist.broadcast(b.id) == b.to_dict()
    b.state, b.started_at = "playing", 1000.5
    for s in SPEAKERS[:60]:
        b.results[s].state = "playing"
    hist.save_broadcast(b.to_dict())
    assert hist.flush(5)
    assert hist.broadcast(b.id)["state"] == "playing"
    b.state, b.ended_at, b.frames = "done", 1020.0, 1000
    for s in SPEAKERS:
        b.results[s].state, b.results[s].packets, b.results[s].lost = "played", 1000, 0
    hist.save_broadcast(b.to_dict())
    assert hist.flush(5)
    final = b.to_dict()
    assert hist.broadcast(b.id) == final
    assert [s["state"] for s in final["speakers"]] == ["played"] * 113
    assert hist.close()
    again = History(Store(store.path))
    assert again.broadcast(b.id) == final
    assert again.broadcasts() == [final]
    assert again.broadcast("nope") is None
    again.store.close()


def test_saves_of_one_broadcast_coalesce(store):
    h = History(store)  # not started: saves queue up
    b = make_broadcast("b1", 1.0)
    for i in range(50):
        b.frames = i
        h.save_broadcast(b.to_dict())
    h.save_event({"kind": "broadcast_started", "at": 1.0, "broadcast": "b1"})
    assert h.health()["pending"] == 2
    h.start()
    assert h.flush(5) and h.health()["pending"] == 0
    assert h.broadcast("b1")["frames"] == 49
    assert h.close()


def test_a_tracked_broadcast_is_built_by_the_writer_and_its_last_change_lands(hist):
    b = make_broadcast("20240101-000000-bbbbbb", 1000.0, [f"s{i:04d}" for i in range(1000)])
    built_on: list[str] = []

    def snapshot() -> dict:
        built_on.append(threading.current_thread().name)
        return b.to_dict()

    hist.track_broadcast(b.id, snapshot)
    assert hist.flush(5)
    assert hist.broadcast(b.id)["state"] == "starting"
    b.state, b.ended_at = "done", 1020.0
    for r in b.results.values():
        r.state, r.packets, r.lost = "played", 50, 0
    hist.track_broadcast(b.id, snapshot)
    assert hist.flush(5)
    assert hist.broadcast(b.id) == b.to_dict()
    assert built_on and set(built_on) == {"history-writer"}  # never the caller's thread


def test_a_change_tracked_while_the_writer_builds_the_last_one_is_not_lost(hist):
    """The same function given again while the writer is using it: the newer save must stay
    queued (the queue tells saves apart by identity, so each is wrapped anew)."""
    b = make_broadcast("b2", 1.0)
    building, go_on = threading.Event(), threading.Event()

    def snapshot() -> dict:
        d = b.to_dict()
        if not go_on.is_set():  # the first build waits, mid-write, until the change is queued
            building.set()
            assert go_on.wait(5)
        return d

    hist.track_broadcast(b.id, snapshot)
    assert building.wait(5)
    b.state = "done"
    hist.track_broadcast(b.id, snapshot)  # queued while the writer holds the older one
    go_on.set()
    assert hist.flush(5)
    assert hist.broadcast(b.id)["state"] == "done"


def test_ten_thousand_events_all_land_in_order(hist):
    bus = EventBus(kept=10)
    bus.subscribe(lambda ev: hist.save_event(ev.to_dict()))
    for i in range(10_000):
        bus.publish("tick", speaker=SPEAKERS[i % 113], i=i)
    assert hist.flush(30)
    evs = hist.events(limit=20_000, since_seq=0)
    assert [e["i"] for e in evs] == list(range(10_000))
    assert [e["seq"] for e in evs] == list(range(1, 10_001))
    assert hist.health() == {"ok": True, "error": None, "since": None, "pending": 0, "dropped": 0}


def test_broadcasts_filter_by_speakers_owner_and_page(hist):
    made = []
    for i in range(25):
        targets = SPEAKERS[(i % 5) * 20 : (i % 5) * 20 + 20]  # five disjoint villages
        b = make_broadcast(f"b{i:02d}", 1000.0 + i // 2, targets, owner=f"op{i % 2}")
        made.append(b)
        hist.save_broadcast(b.to_dict())
    assert hist.flush(5)
    newest_first = sorted(made, key=lambda b: (b.created_at, b.id), reverse=True)
    pages, before = [], None
    while True:
        page = hist.broadcasts(limit=10, before=before)
        if not page:
            break
        pages.append([d["id"] for d in page])
        before = page[-1]["id"]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [bid for p in pages for bid in p] == [b.id for b in newest_first]
    assert hist.broadcasts(limit=1)[0] == newest_first[0].to_dict()
    village = {SPEAKERS[45], "not-a-speaker"}  # in the third village (i % 5 == 2)
    assert [d["id"] for d in hist.broadcasts(speaker_ids=village)] == [
        b.id for b in newest_first if b.id in {"b02", "b07", "b12", "b17", "b22"}
    ]
    assert hist.broadcasts(speaker_ids=set()) == []
    assert {d["owner"] for d in hist.broadcasts(owner="op1")} == {"op1"}
    assert len(hist.broadcasts(owner="op1", speaker_ids=village)) == 2  # b07, b17
    light = hist.broadcasts(limit=3, speakers=False)
    assert [d["id"] for d in light] == pages[0][:3] and "speakers" not in light[0]
    with pytest.raises(NotFound):
        hist.broadcasts(before="no-such-broadcast")


def test_events_since_seq_kinds_and_speakers(hist):
    hist.save_broadcast(make_broadcast("b1", 1.0, ["a", "b"]).to_dict())
    bus = EventBus(clock=lambda: 7.0)
    bus.subscribe(lambda ev: hist.save_event(ev.to_dict()))
    bus.publish("online", speaker="a")  # 1
    bus.publish("online", speaker="c")  # 2
    bus.publish("broadcast_started", broadcast="b1", speakers=2)  # 3
    bus.publish("storage_fault", message="x")  # 4
    bus.publish("offline", speaker="b", reason="timeout")  # 5
    assert hist.flush(5)
    assert [e["seq"] for e in hist.events()] == [1, 2, 3, 4, 5]
    assert [e["seq"] for e in hist.events(limit=2)] == [4, 5]  # the last two, oldest first
    assert [e["seq"] for e in hist.events(limit=2, since_seq=1)] == [2, 3]
    assert hist.events(since_seq=5) == []
    assert [e["kind"] for e in hist.events(kinds={"online", "offline"})] == [
        "online",
        "online",
        "offline",
    ]
    assert [e["seq"] for e in hist.events(speaker_ids={"a"})] == [1, 3]
    assert [e["seq"] for e in hist.events(speaker_ids={"b"}, since_seq=3)] == [5]
    assert hist.events(speaker_ids={"zzz"}) == []
    assert hist.events()[4] == {
        "seq": 5,
        "at": 7.0,
        "kind": "offline",
        "speaker": "b",
        "reason": "timeout",
    }


# ---- faults -----------------------------------------------------------------------------------


def _pragma(store: Store, sql: str) -> None:
    store.run(lambda db: db.conn.execute(sql))


def test_full_disk_is_reported_and_writes_land_when_room_returns(store, hist, faults):
    hist.save_broadcast(make_broadcast("before", 1.0).to_dict())
    assert hist.flush(5)
    pages = store.run(lambda db: db.conn.execute("PRAGMA page_count").fetchone()[0])
    _pragma(store, f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk is full"
    b = make_broadcast("during", 2.0)
    for state in ("starting", "playing", "done"):
        b.state = state
        hist.save_broadcast(b.to_dict())  # never raises into the caller
        for i in range(50):
            hist.save_event({"kind": "tick", "at": 2.0, "broadcast": "during", "i": i})
    wait_until(lambda: not hist.health()["ok"])
    wait_until(lambda: bool(faults))  # told just after health shows it, from the writer's thread
    h = hist.health()
    assert "database or disk is full" in h["error"] and h["since"] and h["pending"] >= 1
    assert not hist.flush(0.2)
    assert len(faults) == 1 and "database or disk is full" in faults[0]
    assert hist.broadcast("during") is None
    _pragma(store, "PRAGMA max_page_count = 1073741823")
    assert hist.flush(5)
    assert hist.health() == {"ok": True, "error": None, "since": None, "pending": 0, "dropped": 0}
    assert len(faults) == 2 and "again" in faults[1]
    assert hist.broadcast("during") == b.to_dict()
    assert [e["i"] for e in hist.events(limit=1000)] == list(range(50)) * 3
    assert hist.broadcast("before")["id"] == "before"


def test_read_only_database_is_reported_once_and_recovers(store, hist, faults):
    _pragma(store, "PRAGMA query_only = ON")  # writes fail as on a read-only directory
    for i in range(20):
        hist.save_event({"kind": "tick", "at": float(i), "i": i})
        hist.save_broadcast(make_broadcast(f"b{i}", float(i), ["a"]).to_dict())
    wait_until(lambda: not hist.health()["ok"])
    wait_until(lambda: bool(faults))
    time.sleep(0.3)  # several retries fail meanwhile: still one report
    assert len(faults) == 1 and "readonly" in hist.health()["error"]
    assert hist.health()["pending"] == 40
    _pragma(store, "PRAGMA query_only = OFF")
    assert hist.flush(5)
    assert len(faults) == 2 and hist.health()["ok"]
    assert len(hist.broadcasts()) == 20 and len(hist.events()) == 20


def test_bounded_queue_keeps_newest_while_failing(store, faults):
    h = History(store, on_fault=faults.append, retry_interval=0.02, retry_max=0.05, limit=100)
    _pragma(store, "PRAGMA query_only = ON")
    h.start()
    h.save_broadcast(make_broadcast("b1", 1.0, ["a"]).to_dict())
    for i in range(150):
        h.save_event({"kind": "tick", "at": 1.0, "i": i})
    assert h.health()["pending"] == 100 and h.health()["dropped"] == 51  # b1 is kept
    _pragma(store, "PRAGMA query_only = OFF")
    assert h.flush(5)
    assert [e["i"] for e in h.events(limit=1000)] == list(range(51, 150))
    assert h.broadcast("b1") is not None
    h.close()


def test_locked_database_never_blocks_the_caller(store, hist, faults):
    _pragma(store, "PRAGMA busy_timeout = 2000")
    other = sqlite3.connect(str(store.path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        hist.save_event({"kind": "first", "at": 0.0})
        wait_until(lambda: hist._writing)  # the writer is inside a write, waiting on the lock
        for i in range(1000):  # ... and the caller's saves still return
            hist.save_broadcast(make_broadcast(f"b{i % 10}", float(i), ["a"]).to_dict())
            hist.save_event({"kind": "tick", "at": float(i)})
        assert hist._writing and hist.health()["pending"] == 1 + 10 + 1000
        wait_until(lambda: not hist.health()["ok"])
        wait_until(lambda: bool(faults))  # told just after health shows it
        assert "locked" in hist.health()["error"] and faults == [faults[0]]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert hist.flush(10)
    assert len(hist.events(limit=5000)) == 1001 and len(hist.broadcasts()) == 10
    assert len(faults) == 2


def test_a_record_that_cannot_be_written_does_not_hold_up_the_rest(hist, monkeypatch):
    real = hmod.event_row

    def picky(e: dict) -> dict:
        if e.get("kind") == "poison":
            raise ValueError("cannot convert this event")
        return real(e)

    monkeypatch.setattr(hmod, "event_row", picky)
    for kind in ("a", "poison", "b"):
        hist.save_event({"kind": kind, "at": 1.0})
    assert hist.flush(5)
    assert [e["kind"] for e in hist.events()] == ["a", "b"]
    assert hist.health()["ok"] and hist.health()["dropped"] == 1


def test_on_fault_errors_do_not_stop_the_writer(store):
    def bad(message: str) -> None:
        raise RuntimeError("subscriber broke")

    h = History(store, on_fault=bad, retry_interval=0.02, retry_max=0.05)
    _pragma(store, "PRAGMA query_only = ON")
    h.start()
    h.save_event({"kind": "x", "at": 1.0})
    wait_until(lambda: not h.health()["ok"])
    _pragma(store, "PRAGMA query_only = OFF")
    assert h.flush(5) and len(h.events()) == 1
    assert h.close()


def test_saves_from_many_threads(hist):
    def work(n: int) -> None:
        for i in range(500):
            hist.save_event({"kind": "t", "at": 0.0, "thread": n, "i": i})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert hist.flush(10)
    evs = hist.events(limit=5000)
    assert len(evs) == 2000
    for n in range(4):
        assert [e["i"] for e in evs if e["thread"] == n] == list(range(500))


# ---- kill -9 ---------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    from pathlib import Path
    from broadcaster.core.broadcast import Broadcast, SpeakerResult
    from broadcaster.storage.db import Store
    from broadcaster.storage.history import History

    speakers = [f"spk-{i:03d}" for i in range(113)]
    h = History(Store(Path(sys.argv[1])))
    h.start()

    def make(bid, at, state):
        b = Broadcast(bid, speakers, {"kind": "file", "name": "x.wav"}, "pcmu", created_at=at,
                      requested_at=at)
        b.results = {s: SpeakerResult(s) for s in speakers}
        b.state = state
        return b

    done = []
    for i in range(3):
        b = make(f"done-{i}", 100.0 + i, "playing")
        b.started_at = 100.5 + i
        h.save_broadcast(b.to_dict())
        b.state, b.ended_at, b.frames = "done", 110.0 + i, 500
        for r in b.results.values():
            r.state, r.packets, r.lost = "played", 500, 0
        h.save_broadcast(b.to_dict())
        done.append(b.to_dict())
    live = []
    for i in range(2):
        b = make(f"live-{i}", 200.0 + i, "playing")
        b.started_at = 200.5 + i
        for s in speakers[:40]:
            b.results[s].state, b.results[s].packets = "played", 10
        for s in speakers[40:80]:
            b.results[s].state = "playing"
        b.results[speakers[80]].state = "unreachable"
        h.save_broadcast(b.to_dict())
        live.append(b.id)
    h.save_broadcast(make("live-starting", 300.0, "starting").to_dict())
    live.append("live-starting")
    assert h.flush(10)
    print(json.dumps({"done": done, "live": live}), flush=True)
    for i in range(5000):  # mid-way through a burst of writes
        h.save_event({"kind": "tick", "at": 1.0, "i": i})
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill_9_mid_broadcast_leaves_a_truthful_history(tmp_path):
    db = tmp_path / "data" / "broadcaster.sqlite3"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(db)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    told = json.loads(proc.stdout.strip().splitlines()[-1])

    store = Store(db)  # quick_check passes: the file is whole
    h = History(store)
    assert sorted(h.mark_interrupted(now=500.0)) == sorted(told["live"])
    assert h.mark_interrupted(now=501.0) == []  # already marked
    listed = h.broadcasts()
    assert [d["id"] for d in listed] == [
        "live-starting",
        "live-1",
        "live-0",
        "done-2",
        "done-1",
        "done-0",
    ]
    for d in told["done"]:
        assert h.broadcast(d["id"]) == d
    for bid in ("live-0", "live-1"):
        d = h.broadcast(bid)
        assert d["state"] == "interrupted" and d["ended_at"] is None
        assert d["error"] == INTERRUPTED_ERROR and d["started_at"] is not None
        states = [s["state"] for s in d["speakers"]]
        assert (
            states
            == ["played"] * 40 + ["interrupted"] * 40 + ["unreachable"] + ["interrupted"] * 32
        )
        assert [s["packets"] for s in d["speakers"][:40]] == [10] * 40
    assert {s["state"] for s in h.broadcast("live-starting")["speakers"]} == {"interrupted"}
    rows = store.run(
        lambda db: list(
            db.query(
                "SELECT state, count(*) AS n FROM broadcast_speakers GROUP BY state ORDER BY state"
            )
        )
    )
    assert {r["state"]: r["n"] for r in rows} == {
        "interrupted": 113 + 72 * 2,
        "played": 3 * 113 + 80,
        "unreachable": 2,
    }
    evs = h.events(limit=10_000, since_seq=0)  # whatever landed is a prefix, with no holes
    assert [e["i"] for e in evs] == list(range(len(evs)))
    store.close()
