"""Durable history: broadcasts, their per-speaker outcomes and events, written as they happen.

Callers on the event loop only queue: `save_broadcast` and `save_event` serialise the dict and
return, and `track_broadcast` does not even that (the writer builds the dict); one writer thread
drains the queue into SQLite in batches, one transaction per batch, so a `kill -9` leaves every
broadcast as it was last written. Saves of the same broadcast coalesce (the newest is enough).
A write that fails (disk full, read-only, locked) is kept and retried with a backoff; the fault
is visible in `health()` and reported once to `on_fault`, as is the recovery.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlite_utils

from broadcaster import jsonio
from broadcaster.errors import NotFound, StorageError
from broadcaster.storage.db import Store

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
BATCH_BROADCASTS = 100
BATCH_EVENTS = 2_000
LIVE_STATES = ("queued", "starting", "playing")
LIVE_SPEAKER_STATES = ("pending", "playing")
# a queued broadcast: its JSON text, or a function building its dict on the writer's thread
Saved = str | Callable[[], dict]
INTERRUPTED_ERROR = "the controller stopped during this broadcast; its end is not known"
# errors a retry cannot cure: the item itself is bad (the rest of the batch is written without it)
PERMANENT = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
    TypeError,
    ValueError,
    KeyError,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS broadcasts (
    id TEXT PRIMARY KEY, created_at REAL, state TEXT, owner TEXT, priority TEXT,
    started_at REAL, ended_at REAL, json TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS broadcast_speakers (
    broadcast TEXT NOT NULL, speaker TEXT NOT NULL, state TEXT, json TEXT NOT NULL,
    PRIMARY KEY (broadcast, speaker));
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL, kind TEXT, speaker TEXT, broadcast TEXT,
    json TEXT NOT NULL);
"""
INDEXES = {
    "broadcasts": [
        ["created_at", "id"],
        ["state"],
        ["owner"],
        ["priority"],
        ["started_at"],
        ["ended_at"],
    ],
    "broadcast_speakers": [["speaker"]],
    "events": [["kind"], ["speaker"], ["broadcast"]],
}


# ---- pure helpers: dicts <-> rows -------------------------------------------------------------


def _json_text(v: Any) -> str:
    """JSON for a TEXT column (what JSON has no type for is written as its str)."""
    return jsonio.dumps(v, default=str).decode()


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


def _num(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def broadcast_rows(d: dict) -> tuple[dict, list[dict]]:
    """The broadcast row (the dict without its speakers) and one row per speaker."""
    bid = str(d["id"])
    head = {k: v for k, v in d.items() if k != "speakers"}
    row = {
        "id": bid,
        "created_at": _num(d.get("created_at")),
        "state": _text(d.get("state")),
        "owner": _text(d.get("owner")),
        "priority": _text(d.get("priority")),
        "started_at": _num(d.get("started_at")),
        "ended_at": _num(d.get("ended_at")),
        "json": _json_text(head),
    }
    speakers = {
        str(s["speaker"]): {
            "broadcast": bid,
            "speaker": str(s["speaker"]),
            "state": _text(s.get("state")),
            "json": _json_text(s),
        }
        for s in d.get("speakers") or ()
        if isinstance(s, dict) and "speaker" in s
    }
    return row, list(speakers.values())  # a speaker listed twice: the last entry holds


def broadcast_from_rows(row: dict, speakers: Iterable[dict]) -> dict:
    """The whole broadcast dict from its row and its speakers' rows (in speaker order)."""
    d = jsonio.loads(row["json"])
    d["speakers"] = [jsonio.loads(s["json"]) for s in sorted(speakers, key=lambda s: s["speaker"])]
    return d


def event_row(e: dict) -> dict:
    """The events row of an event dict (`Event.to_dict()`); seq is the table's own."""
    return {
        "at": _num(e.get("at")),
        "kind": _text(e.get("kind")),
        "speaker": _text(e.get("speaker")),
        "broadcast": _text(e.get("broadcast")),
        "json": _json_text(e),
    }


def event_from_row(row: dict) -> dict:
    """The event dict of a row; its "seq" is the durable one (the bus numbers from 1 each run)."""
    e = jsonio.loads(row["json"])
    e["seq"] = row["seq"]
    return e


def interrupted(d: dict) -> dict:
    """A broadcast (dict) the controller died during: state interrupted, end unknown."""
    out = dict(d, state="interrupted", ended_at=None, error=INTERRUPTED_ERROR)
    summary = dict(d["summary"]) if isinstance(d.get("summary"), dict) else None
    out["speakers"] = []
    for s in d.get("speakers") or ():
        if s.get("state") in LIVE_SPEAKER_STATES:
            if summary is not None:  # per-state counts follow the speakers
                if summary.get(s["state"], 0) > 0:
                    summary[s["state"]] -= 1
                    if not summary[s["state"]]:
                        del summary[s["state"]]
                summary["interrupted"] = summary.get("interrupted", 0) + 1
            s = dict(s, state="interrupted")
        out["speakers"].append(s)
    if summary is not None:
        out["summary"] = summary
    return out


class Pending:
    """The writer's queue (no I/O): broadcasts coalesced by id, events in order, bounded.

    Values are opaque (the serialised dicts, or for a broadcast the function that builds it).
    When full, the oldest event goes first, then the oldest broadcast; `dropped` counts what was
    lost that way.
    """

    def __init__(self, limit: int = MAX_PENDING) -> None:
        self.limit = limit
        self.broadcasts: OrderedDict[str, Saved] = OrderedDict()
        self.events: OrderedDict[int, str] = OrderedDict()
        self.dropped = 0
        self._n = 0

    def __len__(self) -> int:
        return len(self.broadcasts) + len(self.events)

    def add_broadcast(self, bid: str, value: Saved) -> None:
        """Queue a broadcast; replaces a queued older save of the same one."""
        if bid not in self.broadcasts:
            self._make_room()
        self.broadcasts[bid] = value

    def add_event(self, value: str) -> None:
        """Queue an event."""
        self._make_room()
        self._n += 1
        self.events[self._n] = value

    def _make_room(self) -> None:
        while len(self) >= self.limit:
            (self.events or self.broadcasts).popitem(last=False)
            self.dropped += 1

    def batch(
        self, n_broadcasts: int = BATCH_BROADCASTS, n_events: int = BATCH_EVENTS
    ) -> tuple[list[tuple[str, Saved]], list[tuple[int, str]]]:
        """The oldest queued items, left in the queue until `done`."""
        bs = [kv for _, kv in zip(range(n_broadcasts), self.broadcasts.items())]
        es = [kv for _, kv in zip(range(n_events), self.events.items())]
        return bs, es

    def done(self, bs: Iterable[tuple[str, Saved]], es: Iterable[tuple[int, str]]) -> None:
        """Forget written items, unless a newer save of that broadcast arrived meanwhile."""
        for bid, value in bs:
            if self.broadcasts.get(bid) is value:
                del self.broadcasts[bid]
        for n, _ in es:
            self.events.pop(n, None)


# ---- the store ------------------------------------------------------------------------------


def _where_in(column: str, values: Iterable[Any]) -> tuple[str, list]:
    vals = sorted(values)
    return f"{column} IN ({', '.join('?' * len(vals))})", vals


@contextlib.contextmanager
def _immediate(db: sqlite_utils.Database) -> Iterator[None]:
    """A write transaction taken up front (BEGIN IMMEDIATE), so a busy database is waited for
    with the busy timeout rather than failing at once when a read would upgrade to a write."""
    if db.conn.in_transaction:  # someone else's transaction: join it as a savepoint
        with db.atomic():
            yield
        return
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        with db.atomic():
            yield
        db.conn.execute("COMMIT")
    except BaseException:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
        raise


class History:
    """Broadcasts, per-speaker outcomes and events in the controller's SQLite database.

    Saves may be called from the event loop (they only queue). Reads take the store's lock and
    touch the disk: from the loop, call them through `asyncio.to_thread`. `on_fault` is called
    from the writer thread (use `loop.call_soon_threadsafe` to publish from it).
    """

    def __init__(
        self,
        store: Store,
        *,
        on_fault: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        retry_interval: float = 1.0,
        retry_max: float = 10.0,
        limit: int = MAX_PENDING,
    ) -> None:
        self.store = store
        self.on_fault = on_fault
        self._clock = clock
        self._retry = (retry_interval, retry_max)
        self._pending = Pending(limit)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False
        self._nudged = False
        self._writing = False
        self._error: str | None = None
        self._since: float | None = None
        self._failures = 0
        try:
            store.run(self._create)
        except sqlite3.Error as exc:
            raise StorageError(
                f"{store.path}: cannot create the history tables ({exc})",
                detail={"file": str(store.path)},
            ) from None

    @staticmethod
    def _create(db: sqlite_utils.Database) -> None:
        db.conn.executescript(SCHEMA)
        for table, indexes in INDEXES.items():
            for cols in indexes:
                db.table(table).create_index(cols, if_not_exists=True)

    # -- writing (any thread; never touches the disk) --

    def start(self) -> None:
        """Start the writer thread."""
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 5.0) -> bool:
        """Write what is queued (for up to timeout seconds), then stop; False if some was lost."""
        ok = self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if not ok:
            log.error(
                "history: %d writes could not be made before closing (%s)",
                len(self._pending),
                self._error,
            )
        return ok

    def save_broadcast(self, d: dict) -> None:
        """Queue an upsert of a broadcast (`Broadcast.to_dict()`) and its speakers' rows."""
        try:
            bid, value = str(d["id"]), _json_text(d)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("history: broadcast not saved, not a broadcast dict (%s)", exc)
            return
        with self._cond:
            self._pending.add_broadcast(bid, value)
            self._cond.notify_all()

    def track_broadcast(self, bid: str, snapshot: Callable[[], dict]) -> None:
        """Queue a save of a broadcast still changing, by its id and a function giving its dict
        (`Broadcast.to_dict`). The writer thread builds the dict when it writes: the rows of a
        broadcast to a thousand speakers, built at each change of its state, held the event loop
        5–10 ms each time (docs/scale.md). The state written is the newest at that moment, and
        each change queues another save, so the last one written is the final state."""
        with self._cond:
            # a new object each time: `Pending.done` keeps a save queued meanwhile by identity
            self._pending.add_broadcast(bid, functools.partial(snapshot))
            self._cond.notify_all()

    def save_event(self, e: dict) -> None:
        """Queue an event (`Event.to_dict()`)."""
        try:
            value = _json_text(e)
        except (TypeError, ValueError) as exc:
            log.error("history: event not saved (%s)", exc)
            return
        with self._cond:
            self._pending.add_event(value)
            self._cond.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued is written (retrying now if failing); False on timeout."""
        with self._cond:
            self._nudged = True
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: not len(self._pending) and not self._writing, timeout
            )

    def health(self) -> dict:
        """{"ok", "error", "since" (Unix time the fault began), "pending", "dropped"}."""
        with self._cond:
            return {
                "ok": self._error is None,
                "error": self._error,
                "since": self._since,
                "pending": len(self._pending),
                "dropped": self._pending.dropped,
            }

    def _run(self) -> None:
        retry_at: float | None = None
        while True:
            with self._cond:
                while True:
                    if self._stop:
                        return
                    ready = len(self._pending) and (
                        retry_at is None or self._nudged or time.monotonic() >= retry_at
                    )
                    if ready:
                        break
                    wait = (
                        None
                        if retry_at is None or not len(self._pending)
                        else max(0.0, retry_at - time.monotonic())
                    )
                    self._cond.wait(wait)
                self._nudged = False
                bs, es = self._pending.batch()
                self._writing = True
            try:
                lost = self._write_batch(bs, es)
            except Exception as exc:  # noqa: BLE001 - any disk or database fault: keep, retry
                first, most = self._retry
                with self._cond:
                    self._failures += 1
                    retry_at = time.monotonic() + min(first * 2 ** (self._failures - 1), most)
                self._fault(f"{type(exc).__name__}: {exc}")
            else:
                with self._cond:
                    self._pending.done(bs, es)
                    self._pending.dropped += lost
                    self._failures = 0
                    retry_at = None
                self._recovered()
            # only now may flush() return: health() and on_fault already tell the outcome
            with self._cond:
                self._writing = False
                self._cond.notify_all()

    def _write_batch(self, bs: list[tuple[str, Saved]], es: list[tuple[int, str]]) -> int:
        """Write a batch in one transaction; a bad item is written alone and, failing, dropped."""
        try:
            self.store.run(lambda db: self._write(db, bs, es))
            return 0
        except PERMANENT:
            pass
        lost = 0
        singles: list[tuple[list[tuple[str, Saved]], list[tuple[int, str]]]] = [
            ([b], []) for b in bs
        ]
        singles += [([], [e]) for e in es]
        for one_b, one_e in singles:
            try:
                self.store.run(functools.partial(self._write, bs=one_b, es=one_e))
            except PERMANENT as exc:
                log.error("history: dropped a record that cannot be written (%s)", exc)
                lost += 1
            # forget each as it is settled, so a later transient fault never writes it twice
            with self._cond:
                self._pending.done(one_b, one_e)
        return lost

    @staticmethod
    def _write(
        db: sqlite_utils.Database, bs: list[tuple[str, Saved]], es: list[tuple[int, str]]
    ) -> None:
        rows, speakers = [], []
        for _, value in bs:
            row, sp = broadcast_rows(value() if callable(value) else jsonio.loads(value))
            rows.append(row)
            speakers.extend(sp)
        events = [event_row(jsonio.loads(value)) for _, value in es]
        with _immediate(db):
            if rows:
                where, ids = _where_in("broadcast", [r["id"] for r in rows])
                db.execute(f"DELETE FROM broadcast_speakers WHERE {where}", ids)
                db.table("broadcasts").upsert_all(rows, pk="id")
            if speakers:
                db.table("broadcast_speakers").insert_all(speakers)
            if events:
                db.table("events").insert_all(events)

    def _fault(self, message: str) -> None:
        with self._cond:
            first = self._error is None
            self._error = message
            if first:
                self._since = self._clock()
        if first:
            log.error("history: cannot write (%s); keeping writes to retry", message)
            self._notify(f"history cannot be written: {message}")

    def _recovered(self) -> None:
        with self._cond:
            was, since = self._error, self._since
            self._error = self._since = None
        if was is not None:
            log.warning("history: writing again after %.1f s", self._clock() - (since or 0))
            self._notify("history is written again")

    def _notify(self, message: str) -> None:
        if self.on_fault is None:
            return
        try:
            self.on_fault(message)
        except Exception:  # the callback's fault must not stop the writer
            log.exception("history: on_fault callback failed")

    # -- reading (any thread, short; or through store.arun) --

    def broadcast(self, bid: str) -> dict | None:
        """One broadcast with its speakers, as last written; None if unknown."""

        def read(db: sqlite_utils.Database) -> dict | None:
            rows = list(db.query("SELECT json FROM broadcasts WHERE id = ?", [bid]))
            if not rows:
                return None
            sp = db.query("SELECT speaker, json FROM broadcast_speakers WHERE broadcast = ?", [bid])
            return broadcast_from_rows(rows[0], list(sp))

        return self.store.run(read)

    def broadcasts(
        self,
        limit: int = 100,
        before: str | None = None,
        owner: str | None = None,
        speaker_ids: set[str] | None = None,
        *,
        speakers: bool = True,
    ) -> list[dict]:
        """Broadcasts newest first: those created before the broadcast `before` (a page cursor),
        of `owner`, touching one of `speaker_ids`; without their speakers if speakers=False."""

        def read(db: sqlite_utils.Database) -> list[dict]:
            where, params = ["1"], []
            if before is not None:
                cur = list(db.query("SELECT created_at, id FROM broadcasts WHERE id = ?", [before]))
                if not cur:
                    raise NotFound(f"no broadcast {before!r} to page before")
                where.append("(created_at < ? OR (created_at = ? AND id < ?))")
                params += [cur[0]["created_at"], cur[0]["created_at"], before]
            if owner is not None:
                where.append("owner = ?")
                params.append(owner)
            if speaker_ids is not None:
                cond, ids = _where_in("s.speaker", speaker_ids)
                where.append(
                    "EXISTS (SELECT 1 FROM broadcast_speakers s "
                    f"WHERE s.broadcast = b.id AND {cond})"
                )
                params += ids
            rows = list(
                db.query(
                    f"SELECT id, json FROM broadcasts b WHERE {' AND '.join(where)} "
                    "ORDER BY created_at DESC, id DESC LIMIT ?",
                    [*params, max(0, int(limit))],
                )
            )
            by_id: dict[str, list[dict]] = {r["id"]: [] for r in rows}
            if speakers and rows:
                cond, ids = _where_in("broadcast", by_id)
                for s in db.query(
                    f"SELECT broadcast, speaker, json FROM broadcast_speakers WHERE {cond}", ids
                ):
                    by_id[s["broadcast"]].append(s)
            out = [broadcast_from_rows(r, by_id[r["id"]]) for r in rows]
            if not speakers:
                for d in out:
                    del d["speakers"]
            return out

        return self.store.run(read)

    def events(
        self,
        limit: int = 200,
        since_seq: int | None = None,
        kinds: Iterable[str] | None = None,
        speaker_ids: set[str] | None = None,
    ) -> list[dict]:
        """Events in order of seq: the first `limit` after since_seq, or else the last `limit`.

        With speaker_ids, only events naming one of those speakers or a broadcast that touched
        one (site-wide events, naming neither, are left out).
        """

        def read(db: sqlite_utils.Database) -> list[dict]:
            where, params = ["1"], []
            if since_seq is not None:
                where.append("seq > ?")
                params.append(int(since_seq))
            if kinds is not None:
                cond, ks = _where_in("kind", set(kinds))
                where.append(cond)
                params += ks
            if speaker_ids is not None:
                c1, ids = _where_in("speaker", speaker_ids)
                c2, _ = _where_in("s.speaker", speaker_ids)
                where.append(
                    f"({c1} OR broadcast IN "
                    f"(SELECT s.broadcast FROM broadcast_speakers s WHERE {c2}))"
                )
                params += ids + ids
            order = "ASC" if since_seq is not None else "DESC"
            rows = list(
                db.query(
                    f"SELECT seq, json FROM events WHERE {' AND '.join(where)} "
                    f"ORDER BY seq {order} LIMIT ?",
                    [*params, max(0, int(limit))],
                )
            )
            return [event_from_row(r) for r in sorted(rows, key=lambda r: r["seq"])]

        return self.store.run(read)

    def mark_interrupted(self, now: float) -> list[str]:
        """At start-up: broadcasts still starting/playing become interrupted; returns their ids.

        `now` is when the marking is done; the broadcast's end stays unknown (ended_at None).
        """

        def mark(db: sqlite_utils.Database) -> list[str]:
            cond, states = _where_in("state", LIVE_STATES)
            rows = list(db.query(f"SELECT id, json FROM broadcasts WHERE {cond}", states))
            if not rows:
                return []
            fixed: list[tuple[str, Saved]] = []
            for r in rows:
                sp = list(
                    db.query(
                        "SELECT speaker, json FROM broadcast_speakers WHERE broadcast = ?",
                        [r["id"]],
                    )
                )
                d = interrupted(broadcast_from_rows(r, sp))
                d["interrupted_at"] = now
                fixed.append((r["id"], _json_text(d)))
            self._write(db, fixed, [])
            return [bid for bid, _ in fixed]

        try:
            return self.store.run(mark)
        except sqlite3.Error as exc:
            raise StorageError(
                f"{self.store.path}: cannot mark interrupted broadcasts ({exc}); check that the "
                "data directory is writable and the disk has room",
                detail={"file": str(self.store.path)},
            ) from None
