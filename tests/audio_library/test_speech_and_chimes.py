"""Text-to-speech through a pluggable engine, and synthesized chimes as PCM or clips."""

from __future__ import annotations

import array
import math
from pathlib import Path

import pytest
from audio_fixtures import tone_pcm, write_wav

from audio_library import Library, SpeechEngine, SpeechError, chime_names, transcoder
from audio_library.chimes import synthesize

NOTICE = "各位村民请注意，今天下午三点在村委会召开防火禁烧会议。"


def test_tts_with_espeak(lib: Library) -> None:
    clip = lib.tts(NOTICE, tags=["会议"])
    assert clip.kind == "tts" and clip.text == NOTICE
    assert clip.engine == "espeak-ng:cmn-latn-pinyin"
    assert clip.title.startswith("各位村民请注意")
    assert clip.category == "tts" and clip.tags == ("会议",)
    assert clip.duration > 2.0
    assert abs(clip.loudness_after + 16) <= 1.0
    assert lib.search("防火禁烧")[0].id == clip.id  # the spoken text is searchable
    assert lib.tts(NOTICE).id == clip.id  # the same text is the same clip


class ToneEngine:
    """A stand-in engine: speaks every text as a tone whose pitch depends on the text."""

    name = "tone"

    def __init__(self) -> None:
        self.heard: list[str] = []

    def synthesize(self, text: str, out: Path) -> None:
        self.heard.append(text)
        write_wav(out, tone_pcm((300.0 + len(text),), 1.0, 16000), 16000)


def test_engine_is_pluggable(data_dir: Path) -> None:
    engine = ToneEngine()
    assert isinstance(engine, SpeechEngine)
    with Library(data_dir, speech=engine) as lib:
        clip = lib.tts("  开会  通知 ", title="会议")
        assert engine.heard == ["开会 通知"]
        assert (clip.title, clip.text, clip.engine) == ("会议", "开会 通知", "tone")
        assert lib.files.tmp.exists() and not any(lib.files.tmp.iterdir())


class BrokenEngine:
    name = "broken"

    def synthesize(self, text: str, out: Path) -> None:
        raise SpeechError("broken engine failed: no voice")


def test_engine_failure_leaves_nothing(data_dir: Path, snapshot) -> None:
    with Library(data_dir, speech=BrokenEngine()) as lib:
        before = snapshot(lib)
        with pytest.raises(SpeechError) as caught:
            lib.tts("你好")
        assert caught.value.code == "tts_failed"
        assert snapshot(lib) == before


def dominant_hz(pcm: bytes, rate: int, candidates: list[float]) -> float:
    data = array.array("h", pcm)[: rate // 4]

    def power(freq: float) -> float:
        coeff = 2 * math.cos(2 * math.pi * freq / rate)
        s1 = s2 = 0.0
        for x in data:
            s1, s2 = x + coeff * s1 - s2, s1
        return s1 * s1 + s2 * s2 - coeff * s1 * s2

    return max(candidates, key=power)


def test_chimes_are_synthesized_at_every_rate(lib: Library) -> None:
    assert {"two-tone", "four-tone"} <= set(chime_names())
    for rate in (8000, 16000, 48000):
        for name in ("two-tone", "four-tone"):
            pcm = lib.chime(name, rate)
            seconds = len(pcm) / 2 / rate
            assert 1.5 < seconds < 3.0
            loud = transcoder.measure(pcm, rate)
            assert abs(loud.integrated + 16) <= 1.0 and loud.true_peak <= -0.8
    # The two-tone chime starts on E5, the four-tone on G4.
    assert dominant_hz(lib.chime("two-tone", 16000), 16000, [392.0, 523.25, 659.26]) == 659.26
    assert dominant_hz(lib.chime("four-tone", 16000), 16000, [392.0, 523.25, 659.26]) == 392.0


def test_raw_synthesis_is_deterministic() -> None:
    assert synthesize("four-tone", 8000) == synthesize.__wrapped__("four-tone", 8000)


def test_chimes_as_clips(lib: Library) -> None:
    clip = lib.add_chime("two-tone")
    assert clip.kind == "chime" and clip.category == "chime" and clip.added_by == "system"
    assert lib.add_chime("two-tone").id == clip.id
    assert len(lib.search(category="chime")) == 1
    assert len(lib.pcm(clip.id, 8000)) > 8000
