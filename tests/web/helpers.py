"""Helpers for the web tests: users made the way the CLI makes them, and HTTP with tokens."""

from __future__ import annotations

import secrets

from aiohttp.test_utils import TestClient

from broadcaster.access.accounts import Accounts
from broadcaster.web.api import SERVICES


def accounts_of(client: TestClient) -> Accounts:
    """The controller's accounts (on the controller's Store, as `broadcaster users` opens it)."""
    app = client.app
    assert app is not None, "a client of a TestServer"
    acc = app[SERVICES].accounts
    assert acc is not None, "start the controller with accounts=True"
    return acc


def make_user(
    client: TestClient, name: str, scope: str, role: str = "operator", expires: float | None = None
) -> tuple[str, str]:
    """Create a user (as the local CLI does) and an API token; returns (password, token)."""
    acc = accounts_of(client)
    password = "pw-" + secrets.token_urlsafe(12)
    acc.add_user(name, password, scope, role)
    return password, acc.issue_token(name, expires).secret


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}
