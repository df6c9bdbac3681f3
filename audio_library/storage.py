"""The catalogue: clip metadata in SQLite through sqlite-utils, safe to call from any thread."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from .errors import ClipNotFoundError, InvalidRequestError, StorageError

TABLE = "clips"
MIN_PREFIX = 4


@dataclass(frozen=True)
class Clip:
    """One catalogued clip: its id is the start of the SHA-256 of its normalized 48 kHz PCM."""

    id: str
    title: str
    kind: str  # "upload", "tts" or "chime"
    duration: float
    loudness_before: float
    true_peak_before: float
    loudness_after: float
    true_peak_after: float
    target_lufs: float
    sha256: str
    source_sha256: str
    added_at: str
    tags: tuple[str, ...] = ()
    category: str = ""
    original_name: str = ""
    source_format: str = ""
    source_codec: str = ""
    added_by: str = ""
    text: str | None = None
    engine: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        out = asdict(self)
        out["tags"] = list(self.tags)
        out.pop("extra")
        return out

    def to_row(self) -> dict[str, Any]:
        """The SQLite row for this clip."""
        row = self.to_dict()
        row["tags"] = json.dumps(list(self.tags), ensure_ascii=False)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Clip:
        """Rebuild a clip from its SQLite row."""
        row = dict(row)
        row["tags"] = tuple(json.loads(row.get("tags") or "[]"))
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in row.items() if k in known and k != "extra"})


class Catalogue:
    """Clip rows in `path`; one connection shared by all threads, serialized by a lock."""

    def __init__(self, path: Path) -> None:
        # A sqlite-utils Database belongs to the thread that opened it unless the connection says
        # otherwise: the controller calls from asyncio.to_thread workers, so share one guarded link.
        conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._db = sqlite_utils.Database(conn)
        self._lock = threading.RLock()
        with self._lock:
            self._db.enable_wal()
            self._create()

    def _create(self) -> None:
        table = self._db.table(TABLE)
        if table.exists():
            return
        columns = {
            name: _sql_type(f.type)
            for name, f in Clip.__dataclass_fields__.items()
            if name != "extra"
        }
        table.create(columns, pk="id", not_null={"title", "sha256", "added_at"})
        table.create_index(["source_sha256"])
        table.create_index(["title"])
        table.create_index(["category"])

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.conn.close()

    def insert(self, clip: Clip) -> None:
        """Insert a new clip row in one transaction; sqlite3.IntegrityError on a duplicate id."""
        with self._lock:
            try:
                self._db.table(TABLE).insert(clip.to_row())
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise StorageError(f"catalogue write failed ({exc})") from None

    def get(self, clip_id: str) -> Clip:
        """The clip with this id or unique id prefix."""
        clip_id = clip_id.strip().lower()
        with self._lock:
            rows = list(self._db.table(TABLE).rows_where("id = ?", [clip_id]))
            if not rows and len(clip_id) >= MIN_PREFIX and clip_id.isalnum():
                rows = list(self._db.table(TABLE).rows_where("id LIKE ?", [clip_id + "%"], limit=2))
        if len(rows) == 1:
            return Clip.from_row(rows[0])
        if rows:
            raise ClipNotFoundError(f"clip id prefix {clip_id!r} matches more than one clip")
        raise ClipNotFoundError(f"no clip with id {clip_id!r}")

    def find_source(self, source_sha256: str, target_lufs: float) -> Clip | None:
        """A clip made from exactly these original bytes at this loudness target, if any."""
        with self._lock:
            rows = list(
                self._db.table(TABLE).rows_where(
                    "source_sha256 = ? AND target_lufs = ?", [source_sha256, target_lufs], limit=1
                )
            )
        return Clip.from_row(rows[0]) if rows else None

    def exists(self, clip_id: str) -> bool:
        """Whether a row with exactly this id exists."""
        with self._lock:
            return bool(list(self._db.table(TABLE).rows_where("id = ?", [clip_id], limit=1)))

    def search(
        self,
        query: str | None = None,
        tag: str | None = None,
        category: str | None = None,
        kind: str | None = None,
    ) -> list[Clip]:
        """Clips whose title, text, tags or category contain `query`, filtered by tag/category."""
        where, args = [], []
        if query:
            like = f"%{_escape_like(query)}%"
            where.append(
                "(title LIKE ? ESCAPE '\\' OR text LIKE ? ESCAPE '\\' "
                "OR category LIKE ? ESCAPE '\\' OR tags LIKE ? ESCAPE '\\' "
                "OR original_name LIKE ? ESCAPE '\\')"
            )
            args += [like] * 5
        if tag:
            where.append("EXISTS (SELECT 1 FROM json_each(clips.tags) WHERE value = ?)")
            args.append(tag)
        if category:
            where.append("category = ?")
            args.append(category)
        if kind:
            where.append("kind = ?")
            args.append(kind)
        with self._lock:
            rows = self._db.table(TABLE).rows_where(
                " AND ".join(where) or None, args, order_by="added_at, id"
            )
            return [Clip.from_row(r) for r in rows]

    def update(self, clip_id: str, **changes: Any) -> Clip:
        """Change title, tags or category of a clip; returns the updated clip."""
        allowed = {"title", "tags", "category"}
        if not changes or set(changes) - allowed:
            raise InvalidRequestError(f"only {', '.join(sorted(allowed))} can be changed")
        if "tags" in changes:
            changes["tags"] = json.dumps(list(changes["tags"]), ensure_ascii=False)
        clip = self.get(clip_id)
        with self._lock:
            try:
                self._db.table(TABLE).update(clip.id, changes)
            except sqlite3.Error as exc:
                raise StorageError(f"catalogue write failed ({exc})") from None
        return self.get(clip.id)

    def delete(self, clip_id: str) -> None:
        """Delete a clip row (one transaction)."""
        with self._lock:
            try:
                self._db.table(TABLE).delete(clip_id)
            except sqlite_utils.db.NotFoundError:
                raise ClipNotFoundError(f"no clip with id {clip_id!r}") from None
            except sqlite3.Error as exc:
                raise StorageError(f"catalogue write failed ({exc})") from None

    def ids(self) -> set[str]:
        """Every clip id in the catalogue."""
        with self._lock:
            return {row["id"] for row in self._db.query(f"SELECT id FROM {TABLE}")}

    def rows(self) -> Iterator[dict[str, Any]]:
        """Raw rows, for tests and diagnostics."""
        with self._lock:
            return iter(list(self._db.table(TABLE).rows_where(order_by="id")))


def _sql_type(annotation: Any) -> type:
    text = str(annotation)
    if text.startswith("float"):
        return float
    return str


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
