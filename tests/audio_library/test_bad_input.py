"""Every kind of bad input gets its own error code, a message naming the file, and no trace left."""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from audio_fixtures import tone_pcm, wav_with_format_tag, write_wav

from audio_library import (
    ClipNotFoundError,
    CorruptAudioError,
    DecodeError,
    EmptyAudioError,
    InvalidRequestError,
    Library,
    LibraryError,
    NotAudioError,
    Settings,
    TooLargeError,
    TooLongError,
    UnsupportedCodecError,
    decode_file,
)


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True
    )


def truncated(src: Path, out: Path) -> Path:
    data = src.read_bytes()
    out.write_bytes(data[: len(data) // 3])
    return out


def damaged(src: Path, out: Path) -> Path:
    data = bytearray(src.read_bytes())
    rnd = random.Random(3)
    for i in range(len(data) // 3, 2 * len(data) // 3):
        data[i] = rnd.randrange(256)
    out.write_bytes(bytes(data))
    return out


@pytest.fixture(scope="module")
def longer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """3 s sources whose truncated or damaged copies are the bad inputs."""
    root = tmp_path_factory.mktemp("longer")
    wav = write_wav(root / "s.wav", tone_pcm((300.0, 470.0), 3.0, 44100), 44100)
    out = {"wav": wav}
    for ext, codec in (
        ("mp3", "libmp3lame"),
        ("flac", "flac"),
        ("m4a", "aac"),
        ("opus", "libopus"),
    ):
        ffmpeg("-i", str(wav), "-c:a", codec, str(root / f"s.{ext}"))
        out[ext] = root / f"s.{ext}"
    return out


def bad_inputs(tmp: Path, longer: dict[str, Path]) -> list[tuple[Path, type[DecodeError], str]]:
    """(file, expected error class, expected code) for every bad-input case."""
    (tmp / "notes.txt").write_text("请注意 this is text, not audio\n" * 50)
    (tmp / "fake.mp3").write_bytes(bytes(random.Random(1).randrange(256) for _ in range(5000)))
    (tmp / "empty.wav").write_bytes(b"")
    ffmpeg("-f", "lavfi", "-i", "color=red:s=32x32:d=1", "-frames:v", "1", str(tmp / "photo.png"))
    silent = write_wav(tmp / "silent.wav", b"\x00\x00" * 16000, 16000)
    return [
        (tmp / "notes.txt", NotAudioError, "not_audio"),
        (tmp / "fake.mp3", NotAudioError, "not_audio"),
        (tmp / "photo.png", NotAudioError, "not_audio"),
        (tmp / "empty.wav", EmptyAudioError, "empty"),
        (silent, EmptyAudioError, "empty"),
        (truncated(longer["wav"], tmp / "cut.wav"), CorruptAudioError, "corrupt"),
        (truncated(longer["mp3"], tmp / "cut.mp3"), CorruptAudioError, "corrupt"),
        (truncated(longer["flac"], tmp / "cut.flac"), CorruptAudioError, "corrupt"),
        (truncated(longer["m4a"], tmp / "cut.m4a"), CorruptAudioError, "corrupt"),
        (truncated(longer["opus"], tmp / "cut.opus"), CorruptAudioError, "corrupt"),
        (damaged(longer["mp3"], tmp / "damaged.mp3"), CorruptAudioError, "corrupt"),
        (damaged(longer["m4a"], tmp / "damaged.m4a"), CorruptAudioError, "corrupt"),
        (damaged(longer["flac"], tmp / "damaged.flac"), CorruptAudioError, "corrupt"),
        (
            wav_with_format_tag(tmp / "odd-codec.wav", 0x9999),
            UnsupportedCodecError,
            "unsupported_codec",
        ),
    ]


def test_every_bad_input_is_refused_and_leaves_nothing(
    lib: Library,
    formats: dict[str, Path],
    longer: dict[str, Path],
    tmp_path: Path,
    snapshot: Callable[[Library], tuple],
) -> None:
    lib.add(formats["flac"], title="already here")
    before = snapshot(lib)
    for path, error, code in bad_inputs(tmp_path, longer):
        with pytest.raises(error) as caught:
            lib.add(path)
        assert caught.value.code == code, path.name
        assert path.name in str(caught.value), str(caught.value)
        assert isinstance(caught.value, DecodeError)
        assert snapshot(lib) == before, path.name
    assert [c.title for c in lib.search()] == ["already here"]


def test_decode_file_raises_decode_errors(longer: dict[str, Path], tmp_path: Path) -> None:
    for path, _error, _code in bad_inputs(tmp_path, longer):
        if path.name == "silent.wav":
            continue  # decoding silence is fine; only the library refuses it
        with pytest.raises(DecodeError):
            decode_file(path, 8000)


def test_too_large(data_dir: Path, formats: dict[str, Path], snapshot) -> None:
    with Library(data_dir, settings=Settings(max_bytes=1000)) as lib:
        before = snapshot(lib)
        with pytest.raises(TooLargeError) as caught:
            lib.add(formats["wav"])
        assert caught.value.code == "too_large" and "stereo.wav" in caught.value.message
        assert "limit" in caught.value.message
        assert snapshot(lib) == before


def test_too_long(data_dir: Path, longer: dict[str, Path], snapshot) -> None:
    with Library(data_dir, settings=Settings(max_seconds=2)) as lib:
        before = snapshot(lib)
        for ext in ("wav", "mp3", "opus"):
            with pytest.raises(TooLongError) as caught:
                lib.add(longer[ext])
            assert caught.value.code == "too_long" and f"s.{ext}" in caught.value.message
        assert snapshot(lib) == before


def test_missing_file_is_named(lib: Library, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="nothere.wav: no such file"):
        lib.add(tmp_path / "nothere.wav")


def test_unknown_clip(lib: Library) -> None:
    for bad in ("0123456789abcdef", "zz", "../../etc/passwd"):
        with pytest.raises(ClipNotFoundError) as caught:
            lib.pcm(bad, 8000)
        assert caught.value.code == "not_found"


def test_bad_arguments(lib: Library, formats: dict[str, Path]) -> None:
    clip = lib.add(formats["wav"])
    for call in (
        lambda: lib.pcm(clip.id, 100),
        lambda: lib.rename(clip.id, "   "),
        lambda: lib.chime("siren", 8000),
        lambda: lib.tts("   "),
        lambda: lib.export(clip.id, "/tmp/x", fmt="mp3"),
    ):
        with pytest.raises(InvalidRequestError) as caught:
            call()
        assert caught.value.code == "invalid"
    with pytest.raises(InvalidRequestError):
        Settings(target_lufs=3)


def test_errors_share_one_hierarchy() -> None:
    codes = set()
    for cls in (
        NotAudioError,
        CorruptAudioError,
        EmptyAudioError,
        UnsupportedCodecError,
        TooLargeError,
        TooLongError,
        ClipNotFoundError,
        InvalidRequestError,
    ):
        assert issubclass(cls, LibraryError)
        codes.add(cls.code)
        error = cls("went wrong", file="x.wav")
        assert error.to_dict() == {
            "error": cls.code,
            "message": "x.wav: went wrong",
            "file": "x.wav",
        }
    assert len(codes) == 8
