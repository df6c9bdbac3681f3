"""The paging tests' ear: `track` and `breaks` count what a listener hears as broken, no more."""

from __future__ import annotations

from tests.paging.signals import breaks, talk, track

RATE = 8000
STEP = RATE // 50  # one 20 ms frame
B = 2  # bytes per sample


def test_an_intact_recording_has_no_breaks():
    pcm, _ = talk(RATE, 10.0, seed=5)
    where = track(b"\0" * 1000 * B + pcm, pcm, RATE)
    assert where and breaks(where) == 0 and set(where.values()) == {1000}


def test_a_stall_that_moves_the_voice_is_a_few_breaks_not_all_that_follows():
    # a stall mid-word puts 200 ms of silence in (10 frames later from there on); later 200 ms of
    # voice are cut (back to the first lag): two places a listener hears, ~10 frames missing
    pcm, _ = talk(RATE, 40.0, seed=5)
    a, b = 600 * STEP * B, 1200 * STEP * B
    rec = pcm[:a] + b"\0" * 10 * STEP * B + pcm[a:b] + pcm[b + 10 * STEP * B :]
    where = track(rec, pcm, RATE)
    assert 2 <= breaks(where) <= 12, breaks(where)  # was every voiced frame in between (~480)
    assert where[max(k for k in where if k < 600 and where[k] is not None)] == 0
    assert where[min(k for k in where if k >= 600 and where[k] is not None)] == 10 * STEP
    assert where[max(where)] == 0


def test_noise_where_the_voice_should_be_is_all_breaks():
    pcm, _ = talk(RATE, 10.0, seed=5)
    other, _ = talk(RATE, 10.0, seed=6)  # somebody else's words
    half = len(pcm) // 2
    where = track(pcm[:half] + other[half:], pcm, RATE)
    voiced_after = [k for k in where if k * STEP * B >= half + 3 * STEP * B]
    assert voiced_after and all(where[k] is None for k in voiced_after)
