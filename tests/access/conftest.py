"""Fixtures for the access tests: the real site, an injected clock, a fresh Store per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from broadcaster.site import load
from broadcaster.storage.db import Store

ZONES = Path(__file__).resolve().parents[2] / "zones.yaml"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1_780_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def site():
    return load(ZONES)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path):
    s = Store.in_data_dir(tmp_path)
    yield s
    s.close()
