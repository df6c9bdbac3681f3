"""The controller's SQLite file (sqlite-utils, WAL): the only module that opens it.

A `sqlite_utils.Database` belongs to the thread that made it, so one connection is opened with
`check_same_thread=False` and every use goes through one lock: safe from the event loop (short
reads), from `asyncio.to_thread`, and from the history writer thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from broadcaster.errors import StorageError

T = TypeVar("T")
DB_NAME = "broadcaster.sqlite3"


class Store:
    """One SQLite database under the data directory, shared by threads under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=10)
            ok = conn.execute("PRAGMA quick_check").fetchone()
            if not ok or ok[0] != "ok":
                raise sqlite3.DatabaseError(str(ok[0] if ok else "quick_check failed"))
            self.db = sqlite_utils.Database(conn)
            self.db.enable_wal()
            # WAL with synchronous=NORMAL: a commit no longer waits for fsync (a power cut may
            # lose the last few commits, never corrupt the file or break the audit chain)
            conn.execute("PRAGMA synchronous=NORMAL")
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StorageError(
                f"{self.path}: the database cannot be opened ({exc}); restore it from a backup, "
                "or move it aside to start with an empty history",
                detail={"file": str(self.path)},
            ) from None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Store:
        """The controller's database file in a data directory."""
        return cls(Path(data_dir) / DB_NAME)

    def run(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run fn(db) under the lock (from any thread)."""
        with self.lock:
            return fn(self.db)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of one query (a tuple), or None, under the lock."""
        return self.run(lambda db: db.conn.execute(sql, params).fetchone())

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Every row of one query (tuples), under the lock."""
        return self.run(lambda db: db.conn.execute(sql, params).fetchall())

    async def arun(self, fn: Callable[[sqlite_utils.Database], T]) -> T:
        """Run fn(db) in a worker thread, so the event loop never waits on the disk."""
        return await asyncio.to_thread(self.run, fn)

    def close(self) -> None:
        """Close the connection."""
        with self.lock:
            self.db.conn.close()
