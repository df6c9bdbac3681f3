"""Loudness lands on the target whatever the input level; silence is trimmed; resampling filters."""

from __future__ import annotations

import array
import math
import subprocess
from pathlib import Path

import pytest
from audio_fixtures import tone_pcm, write_wav

from audio_library import Library, Settings, decode_file, transcoder
from audio_library.mastering import trim_silence


def sox(*args: str) -> None:
    subprocess.run(["sox", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def speechlike(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of espeak-ng Mandarin: real speech, with its high crest factor."""
    root = tmp_path_factory.mktemp("speech")
    out = root / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-v", "cmn-latn-pinyin", "-w", str(out), "请注意，现在开会。"],
        check=True,
        capture_output=True,
    )
    return out


@pytest.mark.parametrize("gain_db", [-45, -20, 0])
def test_loudness_reaches_target_at_any_input_level(
    lib: Library, speechlike: Path, tmp_path: Path, gain_db: int
) -> None:
    src = tmp_path / f"level{gain_db}.wav"
    # gain 0 after normalizing the peak to 0 dBFS, then compand: a loud, squashed input.
    if gain_db == 0:
        sox(
            str(speechlike),
            str(src),
            "compand",
            "0.01,0.1",
            "-60,-60,-30,-6,0,-1",
            "gain",
            "-n",
            "0",
        )
    else:
        sox(str(speechlike), str(src), "gain", "-n", str(gain_db))
    clip = lib.add(src)
    before = transcoder.measure(decode_file(src, 48000), 48000)
    assert abs(clip.loudness_before - before.integrated) < 1.5
    after = transcoder.measure(lib.pcm(clip.id, 48000), 48000)
    assert abs(after.integrated - (-16.0)) <= 1.0, (gain_db, after)
    assert after.true_peak <= -1.0 + 0.2
    assert abs(clip.loudness_after - after.integrated) < 0.2


def test_target_is_configurable(data_dir: Path, speechlike: Path) -> None:
    with Library(data_dir, settings=Settings(target_lufs=-23.0, true_peak_dbtp=-2.0)) as lib:
        clip = lib.add(speechlike)
        after = transcoder.measure(lib.pcm(clip.id, 48000), 48000)
    assert abs(after.integrated + 23.0) <= 1.0
    assert after.true_peak <= -2.0 + 0.2
    assert clip.target_lufs == -23.0


def test_leading_and_trailing_silence_is_trimmed(lib: Library, tmp_path: Path) -> None:
    silence = b"\x00\x00" * 48000
    pcm = silence + tone_pcm((500.0,), 1.0, 48000) + silence * 2
    clip = lib.add(write_wav(tmp_path / "padded.wav", pcm, 48000))
    assert 1.0 <= clip.duration <= 1.25  # the tone plus at most 0.1 s of pad each side


def test_trim_keeps_quiet_recordings() -> None:
    quiet = array.array("h", (int(30 * math.sin(i / 7)) for i in range(4800))).tobytes()
    assert trim_silence(quiet, 48000, 45.0, 0.1) == quiet
    assert trim_silence(b"\x00\x00" * 4800, 48000, 45.0, 0.1) == b""


def goertzel_power(samples: array.array, freq: float, rate: int) -> float:
    """Power of one frequency in `samples` (no numpy needed)."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


def rms(pcm: bytes) -> float:
    data = array.array("h", pcm)
    return math.sqrt(sum(x * x for x in data) / max(1, len(data)))


def test_6khz_tone_is_removed_at_8khz(tmp_path: Path) -> None:
    src = write_wav(tmp_path / "6k.wav", tone_pcm((6000.0,), 1.0, 48000, amp=0.9), 48000)
    original = rms(decode_file(src, 48000))
    at8k = rms(decode_file(src, 8000))
    assert 20 * math.log10(original / max(at8k, 1e-9)) >= 40.0
    resampled = transcoder.resample(decode_file(src, 48000), 48000, 8000)
    assert 20 * math.log10(original / max(rms(resampled), 1e-9)) >= 40.0


def test_library_8khz_audio_has_no_alias(lib: Library, tmp_path: Path) -> None:
    # 1 kHz and 6 kHz at equal level: at 8 kHz the 6 kHz would fold to 2 kHz.
    pcm = tone_pcm((1000.0, 6000.0), 1.5, 48000, amp=0.8)
    clip = lib.add(write_wav(tmp_path / "mix.wav", pcm, 48000))
    out = array.array("h", lib.pcm(clip.id, 8000))
    wanted = goertzel_power(out, 1000.0, 8000)
    alias = goertzel_power(out, 2000.0, 8000)
    assert 10 * math.log10(wanted / max(alias, 1e-9)) >= 40.0
