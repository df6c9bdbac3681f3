"""The hash-chained audit log: appends, filters, and verify() against real tampering."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from broadcaster.access.audit import GENESIS, AuditLog, row_hash
from broadcaster.access.principal import Principal
from broadcaster.storage.db import Store
from tests.access.conftest import Clock

ZONES = Path(__file__).resolve().parents[2] / "zones.yaml"
COLUMNS = (
    "at",
    "actor",
    "actor_scope",
    "origin",
    "action",
    "targets",
    "what",
    "outcome",
    "broadcast",
    "prev_hash",
    "hash",
)


@pytest.fixture
def log(store, clock):
    return AuditLog(store, clock=clock)


def fill(log: AuditLog, clock: Clock, n: int = 8) -> None:
    office = Principal("office", "subdistrict", "admin", "10.0.0.5")
    village = Principal("v1", "v-01-01", "operator", "10.0.0.9")
    for i in range(n):
        clock.t += 60
        who = office if i % 2 else village
        mine = who is village
        log.append(
            "broadcast_started",
            who,
            targets=["v-01-01"] if mine else ["area-02"],
            what={"clip": f"clip-{i}", "sha256": "ab" * 32},
            outcome={"horn-01-01-1" if mine else "horn-02-02-1": "played"},
            broadcast=f"b{i}",
        )


def tamper(store: Store, *sql: tuple[str, tuple]) -> None:
    """Edit the file as an intruder would: another connection, triggers dropped first."""
    conn = sqlite3.connect(store.path)
    conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
    conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    for statement, params in sql:
        conn.execute(statement, params)
    conn.commit()
    conn.close()


def stored(store: Store, seq: int) -> tuple:
    conn = sqlite3.connect(store.path)
    row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM audit WHERE seq = ?", (seq,)).fetchone()
    conn.close()
    return row


def test_rows_chain_and_carry_every_field(log, clock):
    first = log.append("login", Principal("a", "v-01-01", origin="1.2.3.4"))
    assert first["seq"] == 1 and first["prev_hash"] == GENESIS
    assert first["actor"] == "a" and first["actor_scope"] == "v-01-01"
    assert first["origin"] == "1.2.3.4" and first["at"] == clock.t
    second = log.append(
        "broadcast_requested",
        Principal("a", "v-01-01"),
        origin="x",
        targets=["v-01-01"],
        what={"tts": "明天停水"},
        outcome={"horn-01-01-1": "played"},
        broadcast="b1",
    )
    assert second["seq"] == 2 and second["prev_hash"] == first["hash"]
    assert second["hash"] == row_hash(
        second
        | {
            "targets": '["v-01-01"]',
            "what": '{"tts":"明天停水"}',
            "outcome": '{"horn-01-01-1":"played"}',
        }
    )
    assert log.rows()[0]["what"] == {"tts": "明天停水"}
    assert log.head() == (2, second["hash"])
    assert log.verify().ok and log.verify().rows == 2


def test_sql_refuses_update_and_delete(log, clock, store):
    fill(log, clock, 2)
    for sql in ("UPDATE audit SET actor = 'x'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            store.run(lambda db, q=sql: db.conn.execute(q))
        store.run(lambda db: db.conn.rollback())
    assert log.verify().ok
    assert not hasattr(log, "update") and not hasattr(log, "delete")


def test_edited_field_is_found(log, clock, store):
    fill(log, clock)
    tamper(store, ("UPDATE audit SET what = ? WHERE seq = 4", ('{"clip":"innocent"}',)))
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 4 and result.kind == "changed"
    assert result.problem.startswith("row 4 was changed")


def test_edited_actor_with_recomputed_hash_is_found(log, clock, store):
    fill(log, clock)
    row = dict(zip(COLUMNS, stored(store, 4), strict=True)) | {"seq": 4, "actor": "nobody"}
    tamper(store, ("UPDATE audit SET actor = ?, hash = ? WHERE seq = 4", ("nobody", row_hash(row))))
    result = log.verify()
    assert (result.ok, result.first_bad_seq, result.kind) == (False, 4, "changed")


def test_deleted_row_is_found(log, clock, store):
    fill(log, clock)
    tamper(store, ("DELETE FROM audit WHERE seq = 5", ()))
    result = log.verify()
    assert (result.ok, result.first_bad_seq, result.kind) == (False, 5, "removed")
    assert result.problem.startswith("row 5 was removed")


def test_deleted_first_row_is_found(log, clock, store):
    fill(log, clock)
    tamper(store, ("DELETE FROM audit WHERE seq = 1", ()))
    assert (log.verify().first_bad_seq, log.verify().kind) == (1, "removed")


def test_deleted_and_renumbered_is_found(log, clock, store):
    fill(log, clock)
    tamper(
        store,
        ("DELETE FROM audit WHERE seq = 3", ()),
        ("UPDATE audit SET seq = seq - 1 WHERE seq > 3", ()),
    )
    result = log.verify()
    assert (result.ok, result.first_bad_seq, result.kind) == (False, 3, "removed")


def test_swapped_pair_is_found(log, clock, store):
    fill(log, clock)
    a, b = stored(store, 3), stored(store, 4)
    sets = ", ".join(f"{c} = ?" for c in COLUMNS)
    tamper(
        store,
        (f"UPDATE audit SET {sets} WHERE seq = 3", b),
        (f"UPDATE audit SET {sets} WHERE seq = 4", a),
    )
    result = log.verify()
    assert (result.ok, result.first_bad_seq, result.kind) == (False, 3, "reordered")
    assert result.problem.startswith("row 3 was reordered")


def test_truncated_tail_needs_the_anchor(log, clock, store):
    fill(log, clock)
    anchor = log.head()
    assert log.verify(anchor).ok
    tamper(store, ("DELETE FROM audit WHERE seq >= 7", ()))
    assert log.verify().ok  # undetectable from the file alone
    result = log.verify(anchor)
    assert (result.ok, result.first_bad_seq, result.kind) == (False, 8, "removed")


def test_concurrent_appenders_get_consecutive_seqs(tmp_path, clock):
    """Threads sharing one Store, and a second Store on the same file (another process)."""
    first = Store.in_data_dir(tmp_path)
    second = Store.in_data_dir(tmp_path)
    logs = [AuditLog(first, clock=clock), AuditLog(first, clock=clock), AuditLog(second, clock)]

    def work(log: AuditLog, k: int) -> None:
        for i in range(40):
            log.append("schedule_fired", None, origin=f"t{k}", what={"i": i})

    threads = [threading.Thread(target=work, args=(lg, k)) for k, lg in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = logs[0].verify()
    assert result.ok and result.rows == 120
    assert [r["seq"] for r in logs[2].rows(limit=1000)] == list(range(120, 0, -1))
    first.close()
    second.close()


def test_filters_and_scope(log, clock, site):
    t0 = clock.t
    fill(log, clock)  # at t0+60 ... t0+480; village rows (v-01-01) at even i
    log.append("login", Principal("v2admin", "v-02-01", "admin"), origin="1.1.1.1")
    log.append(
        "broadcast_started",
        Principal("office", "subdistrict", "admin"),
        targets=["road-1"],
        broadcast="road",
    )
    rows = log.rows()
    assert [r["seq"] for r in rows] == list(range(10, 0, -1))
    assert len(log.rows(limit=3)) == 3
    assert {r["seq"] for r in log.rows(since=t0 + 120, until=t0 + 240)} == {2, 3}
    assert {r["actor"] for r in log.rows(actor="office")} == {"office"}
    assert {r["seq"] for r in log.rows(zone="area-02", site=site)} == {2, 4, 6, 8}
    # A village reader sees rows that reach their horns (the village's own) and nothing else.
    v1 = {r["seq"] for r in log.rows(scope="v-01-01", site=site)}
    assert v1 == {1, 3, 5, 7}
    v2 = {r["seq"] for r in log.rows(scope="v-02-01", site=site)}
    assert v2 == {2, 4, 6, 8, 9}  # area-02 broadcasts, and their own admin's login
    assert {r["seq"] for r in log.rows(scope="v-03-02", site=site)} == {10}  # road-1 reaches it
    assert {r["seq"] for r in log.rows(scope="area-02", site=site)} == {2, 4, 6, 8, 9}
    assert len(log.rows(scope="subdistrict", site=site)) == 10
    with pytest.raises(ValueError):
        log.rows(scope="v-01-01")
