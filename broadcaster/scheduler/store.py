"""Schedules and their occurrences in the controller's SQLite store: the source of truth.

APScheduler keeps nothing: its jobs are rebuilt from these tables at start-up and on every edit.
An occurrence's identity is (schedule, instant in whole Unix seconds); `claim` inserts it under
that unique key *before* any audio starts, so a restart can never play it a second time.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from broadcaster.errors import NotFound
from broadcaster.storage.db import Store

STATES = (
    "fired",
    "played",
    "partial",
    "cut",
    "stopped",
    "refused",
    "failed",
    "missed",
    "interrupted",
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY, title TEXT NOT NULL, owner TEXT NOT NULL, owner_scope TEXT NOT NULL,
    owner_role TEXT NOT NULL, what TEXT NOT NULL, targets TEXT NOT NULL, priority TEXT NOT NULL,
    volume INTEGER, rule TEXT NOT NULL, paused INTEGER NOT NULL DEFAULT 0,
    armed_from REAL NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS schedule_occurrences (
    schedule_id TEXT NOT NULL, at INTEGER NOT NULL, state TEXT NOT NULL, fired_at REAL,
    late REAL, broadcast TEXT, speakers TEXT NOT NULL DEFAULT '{}', why TEXT,
    updated_at REAL NOT NULL, PRIMARY KEY (schedule_id, at));
CREATE INDEX IF NOT EXISTS schedule_occurrences_state ON schedule_occurrences (state);
"""
_SCHEDULE_COLUMNS = (
    "id",
    "title",
    "owner",
    "owner_scope",
    "owner_role",
    "what",
    "targets",
    "priority",
    "volume",
    "rule",
    "paused",
    "armed_from",
    "created_at",
    "updated_at",
)
_OCC_COLUMNS = (
    "schedule_id",
    "at",
    "state",
    "fired_at",
    "late",
    "broadcast",
    "speakers",
    "why",
    "updated_at",
)
_JSON = ("what", "targets", "rule", "speakers")


@dataclass
class Schedule:
    """One stored schedule (what, where, when, whose)."""

    id: str
    title: str
    owner: str
    owner_scope: str
    owner_role: str
    what: dict[str, Any]  # clip, chime, repeat, tts (the text it was rendered from), duration
    targets: list[str]
    priority: str
    volume: int | None
    rule: dict[str, Any]
    paused: bool = False
    armed_from: float = 0.0  # occurrences before this instant are not owed (created, resumed)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {k: getattr(self, k) for k in _SCHEDULE_COLUMNS}


def new_schedule_id() -> str:
    """A short unique id."""
    return "s-" + secrets.token_hex(4)


class ScheduleStore:
    """The schedules and schedule_occurrences tables."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.run(lambda db: db.conn.executescript(_SCHEMA))

    # --- schedules -------------------------------------------------------------------------------

    def add(self, s: Schedule) -> Schedule:
        """Insert a new schedule."""
        row = _encode(s.to_dict())
        marks = ", ".join("?" * len(_SCHEDULE_COLUMNS))
        self._write(
            f"INSERT INTO schedules ({', '.join(_SCHEDULE_COLUMNS)}) VALUES ({marks})",
            [row[c] for c in _SCHEDULE_COLUMNS],
        )
        return s

    def get(self, sid: str) -> Schedule:
        """One schedule; NotFound if there is none."""
        row = self.store.run(
            lambda db: db.conn.execute(
                f"SELECT {', '.join(_SCHEDULE_COLUMNS)} FROM schedules WHERE id = ?", (sid,)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"no schedule with id {sid!r}", detail={"schedule": sid})
        return _schedule(row)

    def all(self) -> list[Schedule]:
        """Every schedule, oldest first."""
        rows = self.store.run(
            lambda db: db.conn.execute(
                f"SELECT {', '.join(_SCHEDULE_COLUMNS)} FROM schedules ORDER BY created_at, id"
            ).fetchall()
        )
        return [_schedule(r) for r in rows]

    def update(self, sid: str, **changes: Any) -> Schedule:
        """Change some fields of a schedule; returns it."""
        self.get(sid)
        row = _encode(changes)
        sets = ", ".join(f"{k} = ?" for k in row)
        self._write(f"UPDATE schedules SET {sets} WHERE id = ?", [*row.values(), sid])
        return self.get(sid)

    def remove(self, sid: str) -> None:
        """Delete a schedule (its occurrences stay, as history)."""
        self.get(sid)
        self._write("DELETE FROM schedules WHERE id = ?", [sid])

    # --- occurrences -----------------------------------------------------------------------------

    def claim(
        self,
        sid: str,
        at: int,
        state: str,
        now: float,
        *,
        late: float | None = None,
        why: str | None = None,
    ) -> bool:
        """Record an occurrence under its unique key; False if it was already recorded."""

        def insert(db: Any) -> bool:
            cur = db.conn.execute(
                "INSERT OR IGNORE INTO schedule_occurrences (schedule_id, at, state, fired_at, "
                "late, why, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sid, at, state, now, late, why, now),
            )
            db.conn.commit()
            return cur.rowcount == 1

        return self.store.run(insert)

    def finish(
        self,
        sid: str,
        at: int,
        state: str,
        now: float,
        *,
        why: str | None = None,
        broadcast: str | None = None,
        speakers: dict[str, str] | None = None,
    ) -> None:
        """Set an occurrence's outcome."""
        self._write(
            "UPDATE schedule_occurrences SET state = ?, why = ?, broadcast = "
            "COALESCE(?, broadcast), speakers = ?, updated_at = ? WHERE schedule_id = ? "
            "AND at = ?",
            [state, why, broadcast, json.dumps(speakers or {}), now, sid, at],
        )

    def set_broadcast(self, sid: str, at: int, broadcast: str) -> None:
        """Note the broadcast an occurrence started."""
        self._write(
            "UPDATE schedule_occurrences SET broadcast = ? WHERE schedule_id = ? AND at = ?",
            [broadcast, sid, at],
        )

    def recorded(self, sid: str, since: int, until: int) -> set[int]:
        """Instants of a schedule already recorded in [since, until]."""
        rows = self.store.run(
            lambda db: db.conn.execute(
                "SELECT at FROM schedule_occurrences WHERE schedule_id = ? AND at BETWEEN ? AND ?",
                (sid, since, until),
            ).fetchall()
        )
        return {r[0] for r in rows}

    def occurrences(
        self, sid: str | None = None, limit: int = 100, state: str | None = None
    ) -> list[dict[str, Any]]:
        """Recorded occurrences, newest first."""
        where, params = [], []
        if sid is not None:
            where.append("schedule_id = ?")
            params.append(sid)
        if state is not None:
            where.append("state = ?")
            params.append(state)
        sql = (
            f"SELECT {', '.join(_OCC_COLUMNS)} FROM schedule_occurrences"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY at DESC LIMIT {int(limit)}"
        )
        rows = self.store.run(lambda db: db.conn.execute(sql, params).fetchall())
        return [_decode(dict(zip(_OCC_COLUMNS, r, strict=True))) for r in rows]

    def _write(self, sql: str, params: list) -> None:
        def go(db: Any) -> None:
            db.conn.execute(sql, params)
            db.conn.commit()

        self.store.run(go)


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for k in _JSON:
        if k in out:
            out[k] = json.dumps(out[k], ensure_ascii=False, sort_keys=True)
    if "paused" in out:
        out["paused"] = int(bool(out["paused"]))
    return out


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for k in _JSON:
        if k in row and isinstance(row[k], str):
            row[k] = json.loads(row[k])
    return row


def _schedule(row: tuple) -> Schedule:
    data = _decode(dict(zip(_SCHEDULE_COLUMNS, row, strict=True)))
    data["paused"] = bool(data["paused"])
    return Schedule(**data)
