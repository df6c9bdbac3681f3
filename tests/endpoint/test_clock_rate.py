"""A simulated speaker's clock can run fast or slow, as a real horn's quartz does, and its true
instants are still known exactly (what the benchmarks measure skew against)."""

from __future__ import annotations

from broadcaster.endpoint.clocks import LocalClock


def test_a_fast_clock_gains_at_its_rate_and_maps_back_to_true_time():
    t = [1000.0]
    clock = LocalClock(offset=0.25, wall=lambda: 1.7e9, mono=lambda: t[0], rate_ppm=50.0)
    start = clock.now()
    assert start == 1.7e9 + 0.25
    t[0] += 1000.0  # a thousand true seconds
    assert abs((clock.now() - start) - 1000.05) < 1e-6  # 50 ppm: 50 ms gained
    assert abs(clock.to_true(clock.now()) - (1.7e9 + 1000.0)) < 1e-6
    slow = LocalClock(offset=-0.1, wall=lambda: 1.7e9, mono=lambda: t[0], rate_ppm=-20.0)
    t0 = slow.now()
    t[0] += 500.0
    assert abs((slow.now() - t0) - 499.99) < 1e-6
    assert abs(slow.to_true(slow.now()) - (1.7e9 + 500.0)) < 1e-6
