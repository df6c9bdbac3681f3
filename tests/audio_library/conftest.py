"""pytest fixtures for audio_library tests: shared source files, a library, a snapshot helper."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from audio_fixtures import encode_with_pyav, run, tone_pcm, write_amr_wb, write_wav

from audio_library import Library


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of short source WAVs shared by the session (speech-like tones, 1.5 s)."""
    root = tmp_path_factory.mktemp("sources")
    # Two partials with a slow tremolo: varied enough to exercise the loudness gate.
    run(
        "sox",
        "-n",
        "-r",
        "44100",
        "-c",
        "2",
        str(root / "stereo.wav"),
        "synth",
        "1.5",
        "sine",
        "300",
        "sine",
        "450",
        "tremolo",
        "3",
        "60",
        "gain",
        "-6",
    )
    write_wav(root / "mono8k.wav", tone_pcm((440.0, 950.0), 1.5, 8000), 8000)
    return root


@pytest.fixture(scope="session")
def formats(sources: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One file per supported input format, all made from the same short source."""
    root = tmp_path_factory.mktemp("formats")
    src = str(sources / "stereo.wav")
    made = {"wav": sources / "stereo.wav"}
    ff = ("ffmpeg", "-nostdin", "-v", "error", "-y", "-i", src)
    run(*ff, "-c:a", "libmp3lame", "-b:a", "64k", str(root / "a.mp3"))
    run(*ff, "-c:a", "libopus", "-b:a", "32k", str(root / "a.opus"))
    run(*ff, "-c:a", "libvorbis", str(root / "a.ogg"))
    run(*ff, "-c:a", "aac", "-b:a", "64k", str(root / "a.m4a"))
    run(*ff, "-c:a", "flac", str(root / "a.flac"))
    made.update(
        mp3=root / "a.mp3",
        opus=root / "a.opus",
        ogg=root / "a.ogg",
        m4a=root / "a.m4a",
        flac=root / "a.flac",
    )
    pcm8k = (sources / "mono8k.wav").read_bytes()[44:]
    made["amr_nb"] = encode_with_pyav(
        root / "a.amr", "amr", "libopencore_amrnb", 8000, pcm8k, bit_rate=12200
    )
    made["amr_wb"] = write_amr_wb(root / "a.awb")
    return made


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data directory, as the controller's --data would give."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def lib(data_dir: Path) -> Iterator[Library]:
    """A library over an empty data directory."""
    library = Library(data_dir)
    yield library
    library.close()


@pytest.fixture
def snapshot() -> Callable[[Library], tuple]:
    """A function capturing every catalogue row and every file of a library."""

    def take(library: Library) -> tuple:
        rows = tuple(tuple(sorted(r.items())) for r in library.catalogue.rows())
        files = tuple(
            str(p) for p in library.files.files() if not p.name.startswith("catalogue.db")
        )
        return rows, files

    return take
