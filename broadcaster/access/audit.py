"""The audit log: one row per action, append-only, each row's hash chained to the one before it.

A row's hash is SHA-256 over a canonical JSON of all its fields and the previous row's hash (the
first row chains to 64 zeros), so editing, removing or reordering a row breaks the chain at that row
and `verify()` names it. Someone who rewrites the file can recompute every later hash; publishing
`head()` somewhere else (a printout, another machine) anchors the chain against that too.
There is deliberately no update or delete here, and triggers refuse both in SQL.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from broadcaster.access import policy
from broadcaster.access.principal import Principal
from broadcaster.errors import UnknownTarget
from broadcaster.site import Site
from broadcaster.storage.db import Store

GENESIS = "0" * 64
_FIELDS = (
    "seq",
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
)
_COLUMNS = (*_FIELDS, "hash")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM audit"
_PAGE = 1000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, actor_scope TEXT NOT NULL,
    origin TEXT NOT NULL, action TEXT NOT NULL, targets TEXT NOT NULL, what TEXT NOT NULL,
    outcome TEXT NOT NULL, broadcast TEXT, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking the chain: ok, rows checked, and the first bad row if any."""

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    problem: str = ""
    kind: str = ""  # changed | removed | reordered

    def to_dict(self) -> dict:
        """JSON form."""
        return {
            "ok": self.ok,
            "rows": self.rows,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
            "kind": self.kind,
        }


def _canon(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(row: dict, seq: int | None = None) -> str:
    """SHA-256 over the canonical JSON of a stored row's fields (seq replaced if given)."""
    fields = {k: row[k] for k in _FIELDS}
    if seq is not None:
        fields["seq"] = seq
    return hashlib.sha256(_canon(fields).encode("utf-8")).hexdigest()


class AuditLog:
    """The append-only, hash-chained audit table in the controller's Store."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        store.run(lambda db: db.conn.executescript(_SCHEMA))

    def append(
        self,
        action: str,
        principal: Principal | None,
        *,
        origin: str = "",
        targets: Iterable[str] = (),
        what: dict | None = None,
        outcome: dict | None = None,
        broadcast: str | None = None,
    ) -> dict:
        """Add one row, chained to the last; returns it (with seq and hash)."""
        if isinstance(targets, str):
            targets = (targets,)
        row = {
            "at": float(self.clock()),
            "actor": principal.name if principal else "",
            "actor_scope": principal.scope if principal else "",
            "origin": origin or (principal.origin if principal else ""),
            "action": action,
            "targets": _canon(list(targets)),
            "what": _canon(what or {}),
            "outcome": _canon(outcome or {}),
            "broadcast": broadcast,
        }
        return _parsed(self.store.run(lambda db: _insert(db.conn, row)))

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest row, (0, 64 zeros) when empty: publish it as an anchor."""
        last = self.store.run(
            lambda db: db.conn.execute(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
            ).fetchone()
        )
        return (last[0], last[1]) if last else (0, GENESIS)

    def rows(
        self,
        since: float | None = None,
        until: float | None = None,
        actor: str | None = None,
        zone: str | None = None,
        site: Site | None = None,
        scope: str | None = None,
        limit: int = 500,
    ) -> list[dict]:
        """Rows newest first, filtered by time, actor, zone touched, and the reader's scope."""
        if site is None:
            if zone or scope:
                raise ValueError("filtering by zone or scope needs the site")
        elif zone and zone not in site.zones:
            raise UnknownTarget(f"zone {zone!r} is not a zone of the site", detail={"zone": zone})
        clauses, params = [], []
        for clause, value in (("at >= ?", since), ("at < ?", until), ("actor = ?", actor)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        out: list[dict] = []
        before = None
        while len(out) < limit:
            page_clauses = clauses + (["seq < ?"] if before is not None else [])
            page_params = params + ([before] if before is not None else [])
            where = " WHERE " + " AND ".join(page_clauses) if page_clauses else ""
            sql = f"{_SELECT}{where} ORDER BY seq DESC LIMIT {_PAGE}"
            page = self.store.fetchall(sql, page_params)
            for raw in page:
                row = _parsed(_as_dict(raw))
                if site is not None and not _shown(site, zone, scope, row):
                    continue
                out.append(row)
                if len(out) >= limit:
                    break
            if len(page) < _PAGE:
                break
            before = page[-1][0]
        return out

    def verify(self, anchor: tuple[int, str] | None = None) -> VerifyResult:
        """Recompute the chain; name the first row changed, removed or reordered."""
        raws = self.store.run(lambda db: db.conn.execute(f"{_SELECT} ORDER BY seq").fetchall())
        rows = [_as_dict(r) for r in raws]
        result = _check_chain(rows)
        if result.ok and anchor is not None and anchor[0] > 0:
            seq, expected = anchor
            found = next((r for r in rows if r["seq"] == seq), None)
            if found is None:
                return _bad(len(rows), seq, "removed", "it is missing, but the anchor names it")
            if found["hash"] != expected:
                return _bad(len(rows), seq, "changed", "its hash differs from the anchor")
        return result


def _insert(conn, row: dict) -> dict:
    # BEGIN IMMEDIATE takes SQLite's write lock, so a CLI process and the controller appending at
    # once still get consecutive seqs; the Store's lock already serializes this process's threads.
    if conn.in_transaction:
        conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        row = dict(row, seq=(last[0] + 1) if last else 1, prev_hash=last[1] if last else GENESIS)
        row["hash"] = row_hash(row)
        marks = ", ".join("?" * len(_COLUMNS))
        conn.execute(
            f"INSERT INTO audit ({', '.join(_COLUMNS)}) VALUES ({marks})",
            [row[c] for c in _COLUMNS],
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return row


def _as_dict(raw: tuple) -> dict:
    return dict(zip(_COLUMNS, raw, strict=True))


def _parsed(row: dict) -> dict:
    out = dict(row)
    for key in ("targets", "what", "outcome"):
        out[key] = json.loads(row[key])
    return out


def _shown(site: Site, zone: str | None, scope: str | None, row: dict) -> bool:
    """The row touches the zone filtered on, and the reader's scope may see it."""
    if zone and not _touches(site, zone, row, by_actor=False):
        return False
    return not scope or _touches(site, scope, row, by_actor=True)


def _touches(site: Site, scope: str, row: dict, *, by_actor: bool) -> bool:
    if scope == site.root.id:
        return True
    if policy.touches(site, scope, row["targets"]):
        return True
    speakers = [s for s in row["outcome"] if s in site.speakers]
    if speakers and policy.visible(site, scope, speakers):
        return True
    return by_actor and policy.covers(site, scope, row["actor_scope"])


def _bad(count: int, seq: int, kind: str, why: str) -> VerifyResult:
    return VerifyResult(False, count, seq, f"row {seq} was {kind}: {why}", kind)


def _check_chain(rows: list[dict]) -> VerifyResult:
    hashes = {r["hash"] for r in rows}
    prev, expected = GENESIS, 1
    for row in rows:
        seq = row["seq"]
        if seq != expected:
            why = (
                f"the log starts at row {seq}"
                if expected == 1
                else f"the log jumps from row {expected - 1} to row {seq}"
            )
            return _bad(len(rows), expected, "removed", why)
        if row_hash(row) != row["hash"]:
            return _misplaced_or_changed(rows, row, hashes)
        if row["prev_hash"] != prev:
            if seq == 1:
                return _bad(len(rows), 1, "removed", "the first row does not start the chain")
            return _bad(
                len(rows),
                seq - 1,
                "changed",
                f"its hash was recomputed, and row {seq} does not chain to it",
            )
        prev, expected = row["hash"], seq + 1
    return VerifyResult(True, len(rows))


def _misplaced_or_changed(rows: list[dict], row: dict, hashes: set[str]) -> VerifyResult:
    """A row whose hash fails: intact contents from another position, or edited contents."""
    seq, count = row["seq"], len(rows)
    top = max(r["seq"] for r in rows) + count + 1
    home = next(
        (s for s in range(1, top + 1) if s != seq and row_hash(row, s) == row["hash"]), None
    )
    if home is None:
        return _bad(count, seq, "changed", "its contents do not match its hash")
    if row["prev_hash"] in hashes or row["prev_hash"] == GENESIS:
        return _bad(count, seq, "reordered", f"it holds the contents of row {home}")
    return _bad(
        count,
        seq,
        "removed",
        f"it holds the contents of row {home}; the rows before it were removed",
    )
