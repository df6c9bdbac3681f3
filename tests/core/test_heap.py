"""HeapGuard: full collections are measured, and what survives them leaves the collector's walk."""

from __future__ import annotations

import gc

import pytest

import broadcaster.core.heap as heap
from tests.support.net import may_realtime


@pytest.fixture
def guard(monkeypatch):
    monkeypatch.setattr(heap, "EARLY", 0.0)  # the young-controller rule has a test of its own
    now = [1000.0]
    g = heap.HeapGuard(clock=lambda: now[0])
    g.now = now  # type: ignore[attr-defined]
    yield g
    g.remove()
    gc.unfreeze()  # give the test process its objects back


def test_install_freezes_what_exists_and_counts_full_collections(guard):
    gc.unfreeze()
    kept = [[i] for i in range(20_000)]  # long-lived, tracked objects
    guard.install()
    assert gc.get_freeze_count() >= len(kept)
    before = guard.snapshot()["count"]
    gc.collect()
    snap = guard.snapshot()
    assert snap["count"] == before + 1
    assert snap["last_ms"] is not None and snap["worst_ms"] >= snap["last_ms"] >= 0
    assert snap["freezes"] == 1 and snap["frozen"] == gc.get_freeze_count()


def test_survivors_of_a_slow_full_collection_are_frozen_at_most_once_per_gap(guard, monkeypatch):
    monkeypatch.setattr(heap, "PAUSE_LIMIT", 0.0)  # every full collection counts as slow
    gc.unfreeze()
    guard.install()
    frozen0 = gc.get_freeze_count()
    grown = [[i] for i in range(10_000)]  # built after start-up, still alive
    gc.collect()
    assert gc.get_freeze_count() >= frozen0 + len(grown)
    assert guard.freezes == 2
    more = [[i] for i in range(10_000)]
    gc.collect()  # within the gap: measured, not frozen
    assert guard.freezes == 2 and gc.get_freeze_count() < frozen0 + len(grown) + len(more)
    guard.now[0] += heap.FREEZE_GAP
    gc.collect()  # a gap later: frozen again
    assert guard.freezes == 3 and gc.get_freeze_count() >= frozen0 + len(grown) + len(more)
    assert guard.snapshot()["count"] >= 3 and guard.snapshot()["frozen"] == gc.get_freeze_count()


def test_a_young_controller_freezes_survivors_of_young_collections(guard, monkeypatch):
    """In its first minutes what a young collection leaves is frozen (no full walk needed), at
    most every EARLY_EVERY; after EARLY, only slow full collections do it."""
    monkeypatch.setattr(heap, "EARLY", 600.0)
    gc.unfreeze()
    guard.install()
    n0 = guard.freezes
    kept = [[i] for i in range(5_000)]  # made after start-up (discovery, say)
    gc.collect(1)  # install has just frozen: not yet
    assert guard.freezes == n0
    guard.now[0] += heap.EARLY_EVERY
    gc.collect(1)  # a young collection
    assert guard.freezes == n0 + 1 and gc.get_freeze_count() >= len(kept) + guard.frozen
    gc.collect(1)  # too soon for another
    assert guard.freezes == n0 + 1
    guard.now[0] += heap.EARLY_EVERY
    gc.collect(1)
    assert guard.freezes == n0 + 2
    guard.now[0] += heap.EARLY  # no longer young
    gc.collect(1)
    assert guard.freezes == n0 + 2


def test_remove_stops_measuring(guard):
    guard.install()
    guard.remove()
    n = guard.snapshot()["count"]
    gc.collect()
    assert guard.snapshot()["count"] == n


def test_a_serving_controller_has_frozen_its_start_up(tmp_path):
    """`broadcaster serve` as a real process: /api/health shows the freeze and the collections."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    from tests.support.net import free_port
    from tests.support.sites import small_site

    zones = small_site(tmp_path / "zones.yaml", villages=1, horns=1, columns=1)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "broadcaster.cli.main", "--data", str(tmp_path / "data")]
        + ["serve", "--zones", str(zones), "--listen", f"127.0.0.1:{port}", "--no-mdns"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline(), proc.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=30) as r:
            health = json.load(r)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    full = health["gc_full"]
    assert full["freezes"] >= 1 and full["frozen"] > 10_000, full  # modules, site, state
    assert "own_p99_ms" in health["loop_lag"]
    # and its media thread runs at real-time priority where the process may ask for it
    assert health["media_realtime"] is may_realtime()
