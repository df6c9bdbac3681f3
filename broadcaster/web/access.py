"""Who is asking, for every HTTP request: a session cookie or an API token, checked here.

No open door: every route except the public ones (health, login, the console's static files)
needs a valid session or token. A browser page on another origin cannot make the controller act:
a request whose Origin is not this controller's is refused, sessions travel in a SameSite=Strict,
HttpOnly cookie, and a cookie-borne request that changes anything must carry the session's CSRF
token in X-CSRF-Token. Revocation takes effect at the next request (nothing is cached).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from broadcaster.access.principal import Principal
from broadcaster.errors import BroadcasterError, Forbidden, Unauthorized

COOKIE = "bc_session"
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
# /api/dial-in: speakers prove their pairing key on the channel itself (docs/security.md)
PUBLIC_PATHS = frozenset({"/api/health", "/api/login", "/api/openapi.json", "/api/dial-in"})


def same_origin(request: web.Request, origin: str, allowed: frozenset[str]) -> bool:
    """True if the Origin header names this controller (scheme and host) or an allowed origin."""
    if origin in allowed:
        return True
    return origin in (
        f"{request.scheme}://{request.host}",
        f"http://{request.host}",
        f"https://{request.host}",
    )


def make_middleware(services: Any, allowed_origins: frozenset[str] = frozenset()) -> Any:
    """The access middleware for an app over `services` (accounts may be None: no accounts)."""
    from broadcaster.web.api import PRINCIPAL

    @web.middleware
    async def access(request: web.Request, handler: Any) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin and origin != "null" and not same_origin(request, origin, allowed_origins):
            raise Forbidden(f"cross-origin request from {origin} refused", code="cross_origin")
        if origin == "null":
            raise Forbidden(
                "cross-origin request from an opaque origin refused", code="cross_origin"
            )
        path = request.path
        if not path.startswith("/api/") or path in PUBLIC_PATHS:
            return await handler(request)
        accounts = services.accounts
        if accounts is None:  # a controller run without accounts (tests of other parts)
            return await handler(request)
        request[PRINCIPAL] = await authenticate(request, accounts)
        return await handler(request)

    return access


async def authenticate(request: web.Request, accounts: Any) -> Principal:
    """The principal behind a Bearer token or a session cookie, or Unauthorized."""
    origin = request.remote or ""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return await asyncio.to_thread(accounts.authenticate_token, auth[7:].strip(), origin)
    cookie = request.cookies.get(COOKIE)
    if cookie:
        who = await asyncio.to_thread(accounts.authenticate_token, cookie, origin)
        if request.method not in SAFE:
            try:
                await asyncio.to_thread(
                    accounts.check_csrf, cookie, request.headers.get("X-CSRF-Token", "")
                )
            except BroadcasterError:
                raise Forbidden(
                    "missing or wrong CSRF token (X-CSRF-Token)", code="csrf_failed"
                ) from None
        return who
    raise Unauthorized(
        "log in first: send a session cookie or an API token (Authorization: Bearer …)",
        code="unauthorized",
    )


def set_session(resp: web.StreamResponse, secret: str, secure: bool) -> None:
    """Put a session in a cookie scripts cannot read and other sites cannot send."""
    resp.set_cookie(COOKIE, secret, httponly=True, samesite="Strict", secure=secure, path="/")


def clear_session(resp: web.StreamResponse) -> None:
    """Forget the session cookie."""
    resp.del_cookie(COOKIE, path="/")
