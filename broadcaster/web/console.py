"""The web console: its static files served at `/` and `/console/…` by the controller itself.

Nothing is fetched from elsewhere at run time (a site may have no internet): the page, its
scripts, styles and translations all come from `web/console/`, read once when the app is made.
Caching: the page itself is always revalidated (`no-cache`), and it names every asset with a
`?v=<content hash>`, so an asset asked for with its current hash may be cached for a year and a
new release is picked up at the next page load. Every console response carries a strict
Content-Security-Policy (scripts, styles, sockets only from this origin; no inline script), so
an injected string can never run as code.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

CONSOLE_DIR = Path(__file__).with_name("console")
PREFIX = "/console/"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; worker-src 'self'; font-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
}
_REF = re.compile(
    r"""(?P<attr>(?:src|href)=["']|import\(["']|from ["']|addModule\(["'])"""
    r"""(?P<path>(?:/console/|\./)[\w./-]+)(?P<end>["'])"""
)
ASSETS = web.AppKey("console_assets", dict)


@dataclass(frozen=True)
class Asset:
    """One file of the console, held in memory with its validator."""

    body: bytes
    content_type: str
    etag: str
    version: str


def _read(directory: Path) -> dict[str, bytes]:
    return {
        f.relative_to(directory).as_posix(): f.read_bytes()
        for f in sorted(directory.rglob("*"))
        if f.is_file() and not f.name.startswith(".")
    }


def versioned(text: str, names: set[str], version: str) -> str:
    """Give each reference to a console file (`/console/x`, or `./x` between modules) `?v=`."""

    def sub(m: re.Match) -> str:
        path = m["path"]
        name = path[len(PREFIX) :] if path.startswith(PREFIX) else path[2:]
        if name not in names:
            return m[0]
        return f"{m['attr']}{path}?v={version}{m['end']}"

    return _REF.sub(sub, text)


def load_assets(directory: Path = CONSOLE_DIR) -> dict[str, Asset]:
    """The console's files, each reference between them versioned by the release's content.

    One version for the whole release (a hash over every file): a module cached as immutable
    then never names an older copy of another module.
    """
    raw = _read(directory)
    release = hashlib.sha256()
    for name, body in raw.items():
        release.update(name.encode() + b"\0" + body)
    version = release.hexdigest()[:12]
    out: dict[str, Asset] = {}
    for name, body in raw.items():
        ctype = (
            TYPES.get(Path(name).suffix)
            or mimetypes.guess_type(name)[0]
            or "application/octet-stream"
        )
        if ctype in ("text/html", "text/javascript", "text/css"):
            body = versioned(body.decode("utf-8"), set(raw), version).encode("utf-8")
        etag = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
        out[name] = Asset(body, ctype, etag, version)
    return out


def _respond(request: web.Request, asset: Asset, cache: str) -> web.Response:
    headers = {**HEADERS, "ETag": asset.etag, "Cache-Control": cache}
    if asset.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if asset.content_type.startswith(("text/", "application/json")) else None
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset=charset, headers=headers
    )


async def index(request: web.Request) -> web.StreamResponse:
    """GET /: the console's page (always revalidated, so a new release shows at once)."""
    assets = request.app[ASSETS]
    if "index.html" not in assets:
        raise web.HTTPNotFound(reason="the console is not installed")
    return _respond(request, assets["index.html"], REVALIDATE)


async def asset(request: web.Request) -> web.StreamResponse:
    """GET /console/<file>: one asset; cached for a year when asked for by its content hash."""
    name = request.match_info["name"]
    found = request.app[ASSETS].get(name)
    if found is None:
        raise web.HTTPNotFound(reason=f"no console file {name!r}")
    cache = IMMUTABLE if request.query.get("v") == found.version else REVALIDATE
    return _respond(request, found, cache)


def add_routes(app: web.Application, directory: Path = CONSOLE_DIR) -> None:
    """Serve the console at / and its files under /console/."""
    app[ASSETS] = load_assets(directory)
    app.router.add_get("/", index)
    app.router.add_get(PREFIX + "{name:[\\w./-]+}", asset)
