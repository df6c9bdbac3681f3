"""The one HTTP client of the controller's API, used by the CLI and the demo.

It sends the API token from $BROADCASTER_TOKEN (or the one given) as a Bearer token; an error
answer becomes a ClientError carrying the server's code and plain message.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8600"


class ClientError(Exception):
    """The controller refused, or could not be reached; `message` is fit to print."""

    def __init__(self, message: str, code: str = "error", status: int = 0) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


class Client:
    """Calls the controller's HTTP API."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 60.0
    ) -> None:
        self.url = (url or os.environ.get("BROADCASTER_URL") or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get("BROADCASTER_TOKEN")
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        params: Iterable[tuple[str, Any]] = (),
        json_body: dict | None = None,
        data: bytes | Iterable[bytes] | None = None,
        content_type: str = "application/octet-stream",
    ) -> Any:
        """One request; returns the decoded JSON answer or raises ClientError."""
        query = urllib.parse.urlencode([(k, v) for k, v in params if v is not None])
        url = f"{self.url}{path}" + (f"?{query}" if query else "")
        headers = {}
        body: Any = data
        if json_body is not None:
            body, content_type = json.dumps(json_body).encode(), "application/json"
        if body is not None:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())
                raise ClientError(
                    err.get("message", str(exc)), err.get("error", "error"), exc.code
                ) from None
            except ValueError:
                raise ClientError(f"{exc.code} {exc.reason}", "http", exc.code) from None
        except urllib.error.URLError as exc:
            raise ClientError(
                f"cannot reach the controller at {self.url} ({exc.reason}); "
                "is `broadcaster serve` running?",
                "unreachable",
            ) from None

    def get(self, path: str, **params: Any) -> Any:
        """GET with query parameters."""
        return self.call("GET", path, params.items())

    def post(self, path: str, params: Iterable[tuple[str, Any]] = (), **kw: Any) -> Any:
        """POST with query parameters and a JSON or raw body."""
        return self.call("POST", path, params, **kw)
