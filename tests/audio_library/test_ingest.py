"""Every common format ingests into a mono, loudness-normalized clip with all transport rates."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from audio_library import TRANSPORT_RATES, Library, decode_file, transcoder

FORMATS = ["wav", "mp3", "opus", "ogg", "m4a", "flac", "amr_nb", "amr_wb"]
EXPECTED_CODEC = {
    "wav": "pcm_s",
    "mp3": "mp3",
    "opus": "opus",
    "ogg": "vorbis",
    "m4a": "aac",
    "flac": "flac",
    "amr_nb": "amrnb",
    "amr_wb": "amrwb",
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_ingests(lib: Library, formats: dict[str, Path], fmt: str) -> None:
    clip = lib.add(formats[fmt], title=f"test {fmt}", tags=["test"], added_by="tester")
    assert clip.source_codec.startswith(EXPECTED_CODEC[fmt])
    assert 1.0 < clip.duration < 1.8
    assert abs(clip.loudness_after - lib.settings.target_lufs) <= 1.0
    assert clip.true_peak_after <= lib.settings.true_peak_dbtp + 0.1
    for rate in TRANSPORT_RATES:
        pcm = lib.pcm(clip.id, rate)
        assert abs(len(pcm) / 2 / rate - clip.duration) < 0.01
    # Measured independently on what the controller will actually send.
    heard = transcoder.measure(lib.pcm(clip.id, 48000), 48000)
    assert abs(heard.integrated - lib.settings.target_lufs) <= 1.0
    assert lib.get(clip.id) == clip


def test_metadata_is_kept(lib: Library, formats: dict[str, Path]) -> None:
    clip = lib.add(
        formats["mp3"],
        title="防火禁烧通知",
        tags=["防火", "通知", "防火"],
        category="campaign",
        added_by="宣传办",
        original_name="notice 1.mp3",
    )
    assert (clip.title, clip.tags, clip.category) == ("防火禁烧通知", ("防火", "通知"), "campaign")
    assert (clip.added_by, clip.original_name, clip.kind) == ("宣传办", "notice 1.mp3", "upload")
    assert -25 < clip.loudness_before < -10 and abs(clip.loudness_after + 16) <= 1
    assert clip.added_at.endswith("+00:00")


def test_default_title_is_file_stem(lib: Library, formats: dict[str, Path]) -> None:
    assert lib.add(formats["flac"]).title == "a"


def test_original_name_is_never_a_path(
    lib: Library, data_dir: Path, formats: dict[str, Path], tmp_path: Path
) -> None:
    before = sorted(p for p in tmp_path.rglob("*"))
    clip = lib.add(formats["wav"], original_name="../../../etc/passwd.wav")
    assert clip.original_name == "passwd.wav"
    clip2 = lib.add(formats["ogg"], original_name="..\\..\\windows\\x.ogg")
    assert clip2.original_name == "x.ogg"
    created = sorted(set(tmp_path.rglob("*")) - set(before))
    assert all(data_dir in p.parents for p in created)
    assert not (tmp_path / "etc").exists()


def test_stereo_is_mixed_to_mono(lib: Library, formats: dict[str, Path]) -> None:
    clip = lib.add(formats["wav"])  # the source is 44.1 kHz stereo
    path = lib.files.clip_dir(clip.id) / "16000.wav"
    import wave

    with wave.open(str(path)) as src:
        assert (src.getnchannels(), src.getframerate(), src.getsampwidth()) == (1, 16000, 2)


def test_library_survives_reopen(data_dir: Path, formats: dict[str, Path]) -> None:
    with Library(data_dir) as first:
        clip = first.add(formats["flac"], title="kept")
    with Library(data_dir) as second:
        assert second.get(clip.id).title == "kept"
        assert second.pcm(clip.id, 8000)


def test_usable_from_other_threads(lib: Library, formats: dict[str, Path]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        clips = list(pool.map(lambda f: lib.add(formats[f]), ["wav", "flac"]))
        found = list(pool.map(lambda c: lib.get(c.id), clips))
    assert found == clips


def test_decode_file_keeps_working(formats: dict[str, Path]) -> None:
    pcm = decode_file(formats["amr_nb"], 16000)
    assert abs(len(pcm) / 2 / 16000 - 1.5) < 0.1


def test_pcm_at_other_rates_is_made_on_demand(lib: Library, formats: dict[str, Path]) -> None:
    clip = lib.add(formats["wav"])
    pcm = lib.pcm(clip.id, 22050)
    assert abs(len(pcm) / 2 / 22050 - clip.duration) < 0.01
    assert lib.pcm(clip.id, 22050) is pcm  # cached


def test_sources_are_untouched(lib: Library, formats: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "upload.m4a"
    shutil.copy(formats["m4a"], copy)
    before = copy.read_bytes()
    lib.add(copy)
    assert copy.read_bytes() == before
