"""Account commands on the command surface: log in and out, who am I, passwords, users, tokens.

Argon2 is slow on purpose (tens of ms), so every accounts call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from broadcaster.core.commands import Call, command
from broadcaster.errors import Forbidden, InvalidInput


def _acc(c: Call) -> Any:
    if c.services.accounts is None:
        raise InvalidInput("accounts are not enabled on this controller", code="no_accounts")
    return c.services.accounts


@dataclass
class LoginIn:
    """A name and password."""

    name: str
    password: str


@command("auth/login", "POST", "/api/login", LoginIn, public=True)
async def login(c: Call, q: LoginIn) -> dict:
    """Log in: opens a session (a cookie in browsers) and returns its CSRF token."""
    acc = _acc(c)
    who = await asyncio.to_thread(acc.login, q.name, q.password, c.principal.origin)
    issued = await asyncio.to_thread(acc.issue_token, who.name, None, "session")
    return {
        "user": who.to_dict(),
        "csrf": issued.csrf,
        "session": issued.secret,
        "session_id": issued.id,
    }


@command("auth/logout", "POST", "/api/logout")
async def logout(c: Call) -> dict:
    """End the session this request came with."""
    token_id = c.extra.get("token_id")
    if token_id:
        await asyncio.to_thread(_acc(c).revoke_token, token_id, c.principal)
    return {"ok": True}


@command("auth/me", "GET", "/api/me")
async def me(c: Call) -> dict:
    """Who is asking: name, scope (with its name), role."""
    site = c.services.controller.site
    out = c.principal.to_dict()
    zone = site.zones.get(c.principal.scope)
    out["scope_name"] = zone.name if zone else c.principal.scope
    out["scope_kind"] = zone.kind if zone else None
    return out


@dataclass
class PasswordIn:
    """The current password and the new one."""

    old: str
    new: str


@command("auth/password", "POST", "/api/me/password", PasswordIn)
async def change_password(c: Call, q: PasswordIn) -> dict:
    """Change one's own password (the old one must be right)."""
    acc = _acc(c)
    await asyncio.to_thread(acc.login, c.principal.name, q.old, c.principal.origin)
    await asyncio.to_thread(acc.set_password, c.principal.name, q.new, c.principal)
    return {"ok": True}


@command("users/list", "GET", "/api/users")
async def users_list(c: Call) -> dict:
    """Users inside the caller's scope (admins only)."""
    if not c.principal.is_admin:
        raise Forbidden("only an admin manages users", code="forbidden")
    return {"users": await asyncio.to_thread(_acc(c).list_users, c.principal)}


@dataclass
class UserIn:
    """A new user."""

    name: str
    password: str
    scope: str
    role: str = "operator"


@command("users/add", "POST", "/api/users", UserIn, status=201)
async def users_add(c: Call, q: UserIn) -> dict:
    """Create a user at or below the caller's scope (admins only)."""
    if not c.principal.is_admin:
        raise Forbidden("only an admin manages users", code="forbidden")
    return dict(
        await asyncio.to_thread(_acc(c).add_user, q.name, q.password, q.scope, q.role, c.principal)
    )


@dataclass
class NameIn:
    """A user by name."""

    name: str


@command("users/remove", "DELETE", "/api/users/{name}", NameIn)
async def users_remove(c: Call, q: NameIn) -> dict:
    """Delete a user inside the caller's scope; their sessions and tokens end at once."""
    acc = _acc(c)
    user = await asyncio.to_thread(acc.get_user, q.name)
    from broadcaster.access import policy

    policy.can_manage(c.services.controller.site, c.principal, user["scope"], user["role"])
    await asyncio.to_thread(acc.remove_user, q.name, c.principal)
    return {"ok": True, "removed": q.name}


@dataclass
class AuditIn:
    """Filters for the audit log."""

    since: float | None = None
    until: float | None = None
    user: str | None = None
    zone: str | None = None
    limit: int = 200


@command("audit/list", "GET", "/api/audit", AuditIn)
async def audit_list(c: Call, q: AuditIn) -> dict:
    """Audit rows touching the caller's scope, newest first."""
    audit = c.services.audit
    if audit is None:
        return {"rows": []}
    rows = await asyncio.to_thread(
        audit.rows,
        since=q.since,
        until=q.until,
        actor=q.user,
        zone=q.zone,
        site=c.services.controller.site,
        scope=c.principal.scope,
        limit=max(1, min(q.limit, 1000)),
    )
    return {"rows": rows}
