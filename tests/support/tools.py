"""Tools the tests need from the machine (installed by scripts/setup)."""

from __future__ import annotations

import shutil

import pytest


def need(tool: str) -> None:
    """Fail (not skip) when a tool scripts/setup installs is missing."""
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is not installed: run scripts/setup")
