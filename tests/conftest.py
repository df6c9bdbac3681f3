"""Shared fixtures: the 113-speaker site as files, fresh data dirs and mDNS tags per test."""

from __future__ import annotations

from pathlib import Path

import pytest

import broadcaster.site as zones
from tests.support.harness import make_zones, site_tag

# The suite runs in two workers (scripts/test: pytest -n 2 --dist loadgroup): most tests wait on
# real time (audio plays at its pace), so two at once halve the wall time on 2 cores. Each module
# stays in one worker (its module fixtures are set up once). The modules that run all 113
# simulated speakers share one group, so two of them never run at once; the network-namespace
# tests share another (they add and clean namespaces, links and routes on the host).
SITE_113 = {
    "tests/core/test_streaming.py",
    "tests/web/test_permissions.py",
    "tests/e2e/test_demo.py",
    "tests/console/test_console.py",
    "tests/console/test_serving.py",
}
NETNS = {
    "tests/net/test_netns.py",
    "tests/drivers/test_dialin.py",
    "tests/drivers/test_dialin_clock.py",
    "tests/drivers/test_dialin_keyfile.py",
    "tests/drivers/test_bad_links.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put every test in its xdist group (see above); without xdist the marks do nothing."""
    for item in items:
        module = item.nodeid.split("::")[0]
        group = "site-113" if module in SITE_113 else "netns" if module in NETNS else module
        item.add_marker(pytest.mark.xdist_group(group))


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
