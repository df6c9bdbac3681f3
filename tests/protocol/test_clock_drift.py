"""The clock estimate with drift: spaced exchanges still keep a speaker on the controller's time.

Pure: a speaker clock that runs `ppm` fast, paths with seeded random queueing, the exchange
schedule the endpoint uses (`exchange_interval`), and the estimate's error read at many instants.
"""

from __future__ import annotations

import random

import pytest

import broadcaster.protocol.clock as clk
from broadcaster.endpoint.clocks import (
    CLOCK_FAST,
    CLOCK_SETTLE,
    CLOCK_SPACED,
    CLOCK_SPACED_JITTERY,
    exchange_interval,
)

EPOCH = 1.7e9


def lan(rng: random.Random) -> float:
    return rng.expovariate(1 / 0.0001)  # 0.1 ms mean queueing, one way


def cellular(rng: random.Random) -> float:
    return rng.uniform(0.0, 0.050)  # up to 50 ms of jitter, one way


def follow(ppm: float, jitter, base: float, seconds: float, seed: int = 1) -> tuple[list, object]:
    """Run the exchanges for `seconds`; return [(t, error s, interval s)] and the estimator."""
    rng = random.Random(seed)
    rate = 1 + ppm * 1e-6

    def local(t: float) -> float:  # the speaker's clock: 1.234 s off and `ppm` fast
        return EPOCH + 1.234 + t * rate

    est = clk.OffsetEstimator()
    t, out = 0.0, []
    while t < seconds:
        there, back = base / 2 + jitter(rng), base / 2 + jitter(rng)
        est.add(local(t), EPOCH + t + there, EPOCH + t + there, local(t + there + back))
        step = exchange_interval(est)
        for k in range(4):  # the estimate is used all the time, not only at exchanges
            at = t + there + back + step * k / 4
            out.append((at, est.controller_time(local(at)) - (EPOCH + at), step))
        t += step
    return out, est


def test_a_drifting_speaker_spaces_its_exchanges_and_stays_within_50us():
    out, est = follow(ppm=100, jitter=lan, base=0.0002, seconds=300)
    assert est.drift == pytest.approx(-100e-6, abs=2e-6)  # controller slower, seen from the speaker
    late = [(t, e, step) for t, e, step in out if t > 30]
    assert {step for _, _, step in late} == {CLOCK_SPACED}
    assert max(abs(e) for _, e, _ in late) < 50e-6
    exchanges = sum(1 for _, _, _ in out) / 4
    assert exchanges / 300 < 1.0  # ~0.5 a second instead of 4


def test_without_the_drift_the_same_schedule_would_be_milliseconds_off(monkeypatch):
    monkeypatch.setattr(clk, "DRIFT_MIN_SPAN", 1e9)  # never fit: the old constant-offset filter
    monkeypatch.setattr(clk, "WINDOW_MIN_SPAN", 1e9)
    monkeypatch.setattr(clk, "SPAN_UNKNOWN", 1e9)  # and its window as long as the old one
    est = clk.OffsetEstimator()
    rng, rate = random.Random(1), 1 + 100e-6
    errors = []
    for i in range(64):  # a window of exchanges 2 s apart, as if spaced
        t = 2.0 * i
        there, back = 0.0001 + lan(rng), 0.0001 + lan(rng)
        local = EPOCH + t * rate
        est.add(local, EPOCH + t + there, EPOCH + t + there, EPOCH + (t + there + back) * rate)
        errors.append(abs(est.controller_time(local) - (EPOCH + t)))
    assert max(errors[-10:]) > 1e-3


def test_a_jittery_path_waits_longer_for_its_drift_and_keeps_exchanging_more_often():
    out, est = follow(ppm=20, jitter=cellular, base=0.06, seconds=400)
    steps = [step for _, _, step in out]
    assert steps[0] == CLOCK_FAST
    first_spaced = next(t for t, _, step in out if step != CLOCK_FAST and step != CLOCK_SETTLE)
    assert first_spaced > 60  # a LAN gets there in about 15 s
    assert steps[-1] == CLOCK_SPACED_JITTERY
    assert est.drift == pytest.approx(-20e-6, abs=10e-6)


def test_the_lan_schedule_is_fast_then_settling_then_spaced():
    out, _ = follow(ppm=0, jitter=lan, base=0.0002, seconds=60)
    seen = []
    for _, _, step in out:
        if not seen or seen[-1] != step:
            seen.append(step)
    assert seen == [CLOCK_FAST, CLOCK_SETTLE, CLOCK_SPACED]


def test_a_controller_restart_restarts_the_drift_too():
    est = clk.OffsetEstimator()
    for i in range(40):
        t = float(i)
        est.add(EPOCH + t, EPOCH + t + 0.0001, EPOCH + t + 0.0001, EPOCH + t + 0.0002)
    assert est.drift_known
    t = 40.0  # the controller's play clock re-anchored 3 s later
    est.add(EPOCH + t, EPOCH + t + 3.0001, EPOCH + t + 3.0001, EPOCH + t + 0.0002)
    assert est.steps == 1 and not est.drift_known
    assert est.offset == pytest.approx(3.0, abs=1e-3)
