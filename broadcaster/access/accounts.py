"""Users, API tokens, browser sessions and login throttling in the controller's Store.

Passwords are hashed with argon2id (argon2-cffi; the only module that imports it). Tokens are
`bct_` + 32 random bytes; only their SHA-256 is stored, so a copy of the database opens nothing.
Every check reads the database, so a revocation or a removed user takes effect at the next call.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from typing import NamedTuple

import argon2

from broadcaster.access import policy
from broadcaster.access.audit import AuditLog
from broadcaster.access.principal import Principal
from broadcaster.errors import BroadcasterError, InvalidInput, NotFound, Unauthorized
from broadcaster.site import Site
from broadcaster.storage.db import Store

NAME_RE = re.compile(r"[a-z0-9_.-]{1,32}")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
TOKEN_PREFIX = "bct_"
SESSION_TTL = 12 * 3600.0  # a browser session with no explicit expiry lasts one working day
THROTTLE_AFTER = 5  # failures inside the window before attempts are refused
THROTTLE_WINDOW = 15 * 60.0
THROTTLE_MAX = 15 * 60.0
LOGIN_FAILED = "login failed: wrong name or password"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, pw_hash TEXT NOT NULL, scope TEXT NOT NULL, role TEXT NOT NULL,
    created_at REAL NOT NULL, created_by TEXT NOT NULL, changed_at REAL NOT NULL,
    last_login_at REAL);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, user TEXT NOT NULL, kind TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
    csrf_hash TEXT, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user);
CREATE TABLE IF NOT EXISTS login_failures (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, name_key TEXT NOT NULL, origin TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS login_failures_name ON login_failures (name_key, at);
CREATE INDEX IF NOT EXISTS login_failures_origin ON login_failures (origin, at);
"""


class LoginThrottled(BroadcasterError):
    """Too many failed logins for this name or from this address: wait, then try again."""

    code = "login_throttled"
    status = 429


class Issued(NamedTuple):
    """A new token or session: its id (for listings and revocation), the secret, a CSRF token."""

    id: str
    secret: str
    csrf: str | None = None  # sessions only: the value the browser echoes in a header


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lockout(failures: int) -> float:
    """Seconds a name or address stays refused after this many failures inside the window."""
    if failures < THROTTLE_AFTER:
        return 0.0
    return min(2.0 ** (failures - THROTTLE_AFTER), THROTTLE_MAX)


class Accounts:
    """Users with scopes and roles, their tokens and sessions, and login throttling."""

    def __init__(
        self,
        store: Store,
        site: Site,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
        *,
        kdf_params: dict | None = None,
    ) -> None:
        self.store = store
        self.site = site
        self.clock = clock
        self.audit = audit
        self._hasher = argon2.PasswordHasher(**(kdf_params or {}))
        self._decoy: str | None = None
        self.local = Principal("local-cli", site.root.id, "admin", "cli", "system")
        store.run(lambda db: db.conn.executescript(_SCHEMA))

    # --- users ----------------------------------------------------------------------------------

    def add_user(
        self, name: str, password: str, scope: str, role: str, by: Principal | None = None
    ) -> dict:
        """Create a user; `by` must be an admin at or above the scope (None: the local CLI)."""
        _check_name(name)
        if scope not in self.site.zones:
            raise InvalidInput(
                f"scope {scope!r} is not a zone of {self.site.source}: give the "
                "subdistrict, the seat, an area or a village id",
                code="unknown_scope",
                detail={"scope": scope},
            )
        policy.can_manage(self.site, by or self.local, scope, role)
        pw_hash = self._hash(password)
        now = self.clock()

        def insert(db) -> bool:
            cur = db.conn.execute(
                "INSERT OR IGNORE INTO users (name, pw_hash, scope, role, created_at, created_by, "
                "changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, pw_hash, scope, role, now, (by or self.local).name, now),
            )
            db.conn.commit()
            return cur.rowcount == 1

        if not self.store.run(insert):
            raise BroadcasterError(
                f"user {name!r} already exists",
                code="user_exists",
                status=409,
                detail={"user": name},
            )
        self._audit("user_added", by, targets=(scope,), what={"user": name, "role": role})
        return self.get_user(name)

    def get_user(self, name: str) -> dict:
        """One user's public record (never the hash); NotFound if there is none."""
        row = self._user_row(name)
        if row is None:
            raise NotFound(f"no user {name!r}", detail={"user": name})
        return self._public(row)

    def remove_user(self, name: str, by: Principal | None = None) -> None:
        """Delete a user and revoke all their tokens and sessions at once."""
        user = self.get_user(name)
        policy.can_manage(self.site, by or self.local, user["scope"], user["role"])
        now = self.clock()

        def delete(db) -> None:
            db.conn.execute("DELETE FROM users WHERE name = ?", (name,))
            db.conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE user = ? AND revoked_at IS NULL",
                (now, name),
            )
            db.conn.commit()

        self.store.run(delete)
        self._audit("user_removed", by, targets=(user["scope"],), what={"user": name})

    def set_password(self, name: str, password: str, by: Principal | None = None) -> None:
        """Change a password (oneself, or an admin over the user); open sessions are revoked."""
        user = self.get_user(name)
        if by is None or by.name != name:
            policy.can_manage(self.site, by or self.local, user["scope"], user["role"])
        pw_hash = self._hash(password)
        now = self.clock()

        def update(db) -> None:
            db.conn.execute(
                "UPDATE users SET pw_hash = ?, changed_at = ? WHERE name = ?", (pw_hash, now, name)
            )
            db.conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE user = ? AND kind = 'session' "
                "AND revoked_at IS NULL",
                (now, name),
            )
            db.conn.commit()

        self.store.run(update)
        self._audit("password_changed", by, targets=(user["scope"],), what={"user": name})

    def list_users(self, by: Principal | None = None) -> list[dict]:
        """Users at or below by's scope (all for the local CLI), sorted by name."""
        rows = self.store.run(
            lambda db: db.conn.execute(
                "SELECT name, scope, role, created_at, created_by, changed_at, last_login_at "
                "FROM users ORDER BY name"
            ).fetchall()
        )
        out = [self._public(r) for r in rows]
        if by is None or by.kind == "system" or by.scope == self.site.root.id:
            return out
        return [u for u in out if policy.covers(self.site, by.scope, u["scope"])]

    # --- tokens and sessions --------------------------------------------------------------------

    def issue_token(
        self, name: str, expires_s: float | None, kind: str = "token", by: Principal | None = None
    ) -> Issued:
        """A new API token or browser session for a user; expires_s None never expires a token."""
        if kind not in ("token", "session"):
            raise InvalidInput(f"kind {kind!r} is not token or session")
        user = self.get_user(name)
        if by is not None and by.name != name:
            policy.can_manage(self.site, by, user["scope"], user["role"])
        if expires_s is None and kind == "session":
            expires_s = SESSION_TTL
        if expires_s is not None and expires_s <= 0:
            raise InvalidInput("a token's lifetime must be positive (or none)")
        now = self.clock()
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24) if kind == "session" else None
        token_id = "tok_" + secrets.token_hex(6)
        expires_at = None if expires_s is None else now + expires_s
        self.store.run(
            lambda db: _commit(
                db,
                db.conn.execute(
                    "INSERT INTO tokens (id, user, kind, hash, csrf_hash, created_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        token_id,
                        name,
                        kind,
                        _sha(secret),
                        _sha(csrf) if csrf else None,
                        now,
                        expires_at,
                    ),
                ),
            )
        )
        self._audit(
            "token_issued",
            by,
            targets=(user["scope"],),
            what={"user": name, "token": token_id, "kind": kind, "expires_at": expires_at},
        )
        return Issued(token_id, secret, csrf)

    def token_id_of(self, secret: str) -> str | None:
        """The id of the token or session with this secret (for logging out), or None."""
        row = self.store.run(
            lambda db: db.conn.execute(
                "SELECT id FROM tokens WHERE hash = ?", (_sha(secret),)
            ).fetchone()
        )
        return row[0] if row else None

    def list_tokens(self, name: str | None = None) -> list[dict]:
        """Tokens and sessions (id, user, kind, times, state), never a secret or its hash."""
        sql = "SELECT id, user, kind, created_at, expires_at, revoked_at FROM tokens"
        params: tuple = ()
        if name:
            sql, params = sql + " WHERE user = ?", (name,)
        rows = self.store.run(
            lambda db: db.conn.execute(sql + " ORDER BY created_at", params).fetchall()
        )
        now = self.clock()
        keys = ("id", "user", "kind", "created_at", "expires_at", "revoked_at")
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for t in out:
            t["state"] = (
                "revoked"
                if t["revoked_at"] is not None
                else "expired"
                if t["expires_at"] is not None and now >= t["expires_at"]
                else "active"
            )
        return out

    def revoke_token(self, token_id: str, by: Principal | None = None) -> None:
        """Revoke one token or session by id; effective at its next use."""
        row = self.store.run(
            lambda db: db.conn.execute(
                "SELECT user FROM tokens WHERE id = ?", (token_id,)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"no token {token_id!r}", detail={"token": token_id})
        owner = self._user_row(row[0])
        if by is not None and by.name != row[0]:
            # A token of a removed user: only an admin of the whole site may touch it.
            scope, role = (owner[2], owner[3]) if owner else (self.site.root.id, "operator")
            policy.can_manage(self.site, by, scope, role)
        self.store.run(
            lambda db: _commit(
                db,
                db.conn.execute(
                    "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    (self.clock(), token_id),
                ),
            )
        )
        self._audit(
            "token_revoked",
            by,
            targets=(owner[2],) if owner else (),
            what={"user": row[0], "token": token_id},
        )

    def revoke_all(self, name: str, by: Principal | None = None) -> int:
        """Revoke every token and session of a user; returns how many were open."""
        user = self.get_user(name)
        if by is not None and by.name != name:
            policy.can_manage(self.site, by, user["scope"], user["role"])
        count = self.store.run(
            lambda db: _commit(
                db,
                db.conn.execute(
                    "UPDATE tokens SET revoked_at = ? WHERE user = ? AND revoked_at IS NULL",
                    (self.clock(), name),
                ).rowcount,
            )
        )
        self._audit(
            "token_revoked",
            by,
            targets=(user["scope"],),
            what={"user": name, "token": "*", "count": count},
        )
        return count

    def authenticate_token(self, secret: str, origin: str = "") -> Principal:
        """The principal a token or session secret stands for; Unauthorized if it is not valid."""
        row = self.store.run(
            lambda db: db.conn.execute(
                "SELECT t.expires_at, t.revoked_at, u.name, u.scope, u.role FROM tokens t "
                "LEFT JOIN users u ON u.name = t.user WHERE t.hash = ?",
                (_sha(secret or ""),),
            ).fetchone()
        )
        if row is None:
            raise Unauthorized("unknown token")
        expires_at, revoked_at, name, scope, role = row
        if revoked_at is not None or name is None:
            raise Unauthorized("token revoked")
        if expires_at is not None and self.clock() >= expires_at:
            raise Unauthorized("token expired")
        return Principal(name, scope, role, origin, "user")

    def check_csrf(self, session_secret: str, csrf: str) -> None:
        """Forbidden unless csrf is the CSRF token issued with this session."""
        row = self.store.fetchone(
            "SELECT csrf_hash FROM tokens WHERE hash = ?", (_sha(session_secret or ""),)
        )
        if row is None or row[0] is None or not secrets.compare_digest(row[0], _sha(csrf or "")):
            raise BroadcasterError("missing or wrong CSRF token", code="csrf_failed", status=403)

    # --- login ----------------------------------------------------------------------------------

    def login(self, name: str, password: str, origin: str = "") -> Principal:
        """Check a name and password; Unauthorized (generic) on failure, 429 while throttled."""
        now = self.clock()
        row = self._user_row(name) if NAME_RE.fullmatch(name or "") else None
        # The audit names an attempted user only if it exists: a password typed into the name
        # field must not end up in the log.
        who = (
            Principal(row[0], row[2], row[3], origin)
            if row
            else Principal("(unknown)", "", "operator", origin, "anonymous")
        )
        wait = self.throttled_for(name, origin)
        if wait > 0:
            self._audit("login_failed", who, origin=origin, outcome={"reason": "throttled"})
            raise LoginThrottled(
                f"too many failed logins: try again in {int(wait) + 1} s",
                detail={"retry_after": int(wait) + 1},
            )
        ok = self._verify(row[1] if row else self._decoy_hash(), password or "")
        if row is None or not ok:
            self.store.run(lambda db: _record_failure(db, now, _sha(name or ""), origin))
            self._audit("login_failed", who, origin=origin, outcome={"reason": "bad_credentials"})
            raise Unauthorized(LOGIN_FAILED, code="login_failed")
        if self._hasher.check_needs_rehash(row[1]):
            new_hash = self._hash(password)
            self.store.run(
                lambda db: _commit(
                    db,
                    db.conn.execute(
                        "UPDATE users SET pw_hash = ? WHERE name = ?", (new_hash, name)
                    ),
                )
            )
        self.store.run(
            lambda db: _commit(
                db,
                db.conn.execute("UPDATE users SET last_login_at = ? WHERE name = ?", (now, name)),
            )
        )
        self._audit("login", who, origin=origin)
        return who

    def throttled_for(self, name: str, origin: str = "") -> float:
        """Seconds until a login for this name (or from this address) is accepted again."""
        now = self.clock()
        since = now - THROTTLE_WINDOW
        row = self._user_row(name) if NAME_RE.fullmatch(name or "") else None
        name_since = max(since, row[7] or since) if row else since  # a success clears the name
        checks = [("name_key = ?", _sha(name or ""), name_since)]
        if origin:
            checks.append(("origin = ?", origin, since))
        wait = 0.0
        for clause, key, start in checks:
            count, last = self.store.fetchone(
                f"SELECT COUNT(*), MAX(at) FROM login_failures WHERE {clause} AND at > ?",
                (key, start),
            )
            if count:
                wait = max(wait, last + lockout(count) - now)
        return wait

    # --- helpers --------------------------------------------------------------------------------

    def _hash(self, password: str) -> str:
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise InvalidInput(
                f"password too short: at least {MIN_PASSWORD} characters", code="weak_password"
            )
        if len(password) > MAX_PASSWORD:
            raise InvalidInput(
                f"password too long: at most {MAX_PASSWORD} characters", code="weak_password"
            )
        return self._hasher.hash(password)

    def _decoy_hash(self) -> str:
        # A hash to verify against when the name is unknown, so timing does not reveal names.
        if self._decoy is None:
            self._decoy = self._hasher.hash(secrets.token_hex(16))
        return self._decoy

    def _verify(self, pw_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(pw_hash, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False

    def _user_row(self, name: str) -> tuple | None:
        return self.store.run(
            lambda db: db.conn.execute(
                "SELECT name, pw_hash, scope, role, created_at, created_by, changed_at, "
                "last_login_at FROM users WHERE name = ?",
                (name,),
            ).fetchone()
        )

    def _public(self, row: tuple) -> dict:
        if len(row) == 8:  # a full row: drop the hash
            row = row[:1] + row[2:]
        keys = ("name", "scope", "role", "created_at", "created_by", "changed_at", "last_login_at")
        user = dict(zip(keys, row, strict=True))
        user["scope_name"] = policy.scope_name(self.site, user["scope"])
        user["scope_exists"] = user["scope"] in self.site.zones
        return user

    def _audit(
        self,
        action: str,
        by: Principal | None,
        *,
        origin: str = "",
        targets: tuple = (),
        what: dict | None = None,
        outcome: dict | None = None,
    ) -> None:
        if self.audit is not None:
            self.audit.append(
                action, by or self.local, origin=origin, targets=targets, what=what, outcome=outcome
            )


def _commit(db, result):
    db.conn.commit()
    return result


def _record_failure(db, now: float, name_key: str, origin: str) -> None:
    # Rows older than a day no longer count for throttling; the audit log keeps the history.
    db.conn.execute("DELETE FROM login_failures WHERE at < ?", (now - 86400,))
    db.conn.execute(
        "INSERT INTO login_failures (at, name_key, origin) VALUES (?, ?, ?)",
        (now, name_key, origin),
    )
    db.conn.commit()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"user name {name!r} must be 1-32 of a-z, 0-9, '_', '.', '-'",
            code="bad_name",
            detail={"name": name},
        )
