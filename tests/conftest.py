"""Shared fixtures: the 113-speaker site as files, fresh data dirs and mDNS tags per test."""

from __future__ import annotations

from pathlib import Path

import pytest

import broadcaster.site as zones
from tests.support.harness import make_zones, site_tag


@pytest.fixture(scope="session")
def zones_unicast(tmp_path_factory) -> Path:
    """The standard site without multicast groups."""
    return make_zones(tmp_path_factory.mktemp("zones") / "zones.yaml")


@pytest.fixture(scope="session")
def site_unicast(zones_unicast):
    """The loaded standard site without multicast groups."""
    return zones.load(zones_unicast)


@pytest.fixture
def tag() -> str:
    """A fresh mDNS site tag."""
    return site_tag()


@pytest.fixture
def data(tmp_path) -> Path:
    """A fresh data directory."""
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def record(tmp_path) -> Path:
    """A fresh recordings directory."""
    d = tmp_path / "rec"
    d.mkdir()
    return d
