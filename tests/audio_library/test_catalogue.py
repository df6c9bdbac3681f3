"""The catalogue: duplicates collapse, search by title/tag/category, rename, re-tag, remove."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from audio_library import ClipNotFoundError, Library


def test_same_file_twice_is_one_clip(
    lib: Library, formats: dict[str, Path], tmp_path: Path, snapshot
) -> None:
    first, new1 = lib.ingest(formats["mp3"], title="first")
    after_first = snapshot(lib)
    copy = tmp_path / "renamed copy.mp3"
    shutil.copy(formats["mp3"], copy)
    second, new2 = lib.ingest(copy, title="second")
    assert (new1, new2) == (True, False)
    assert second == first and second.title == "first"
    assert snapshot(lib) == after_first


def test_same_audio_in_another_container_is_one_clip(
    lib: Library, formats: dict[str, Path], tmp_path: Path
) -> None:
    # WAV -> FLAC is lossless: the normalized audio, hence its hash, is identical.
    wav, flac = tmp_path / "x.wav", tmp_path / "x.flac"
    for src, out, codec in ((formats["mp3"], wav, "pcm_s16le"), (wav, flac, "flac")):
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", str(src), "-c:a", codec, str(out)],
            check=True,
        )
    a = lib.add(flac)
    b, new = lib.ingest(wav)
    assert not new and b.id == a.id
    assert len(lib.search()) == 1


def test_different_audio_is_different_clips(lib: Library, formats: dict[str, Path]) -> None:
    ids = {lib.add(formats[f]).id for f in ("wav", "mp3", "amr_nb")}
    assert len(ids) == 3


@pytest.fixture
def stocked(lib: Library, formats: dict[str, Path]) -> dict[str, str]:
    return {
        "fire": lib.add(
            formats["mp3"], title="防火禁烧通知", tags=["防火", "通知"], category="campaign"
        ).id,
        "flood": lib.add(
            formats["ogg"], title="防汛 flood warning", tags=["防汛"], category="campaign"
        ).id,
        "fraud": lib.add(
            formats["m4a"], title="Anti-fraud 50% notice", tags=["反诈"], category="daily"
        ).id,
    }


def test_search(lib: Library, stocked: dict[str, str]) -> None:
    def ids(clips):
        return {c.id for c in clips}

    assert ids(lib.search()) == set(stocked.values())
    assert ids(lib.search("防火")) == {stocked["fire"]}
    assert ids(lib.search("FLOOD")) == {stocked["flood"]}  # ASCII is case-insensitive
    assert ids(lib.search("50%")) == {stocked["fraud"]}  # LIKE wildcards are literal
    assert ids(lib.search("%")) == {stocked["fraud"]}
    assert ids(lib.search(tag="防汛")) == {stocked["flood"]}
    assert ids(lib.search(tag="防")) == set()  # tags match whole
    assert ids(lib.search(category="campaign")) == {stocked["fire"], stocked["flood"]}
    assert ids(lib.search("通知", category="daily")) == set()
    assert ids(lib.search(tag="通知", category="campaign")) == {stocked["fire"]}


def test_rename_retag_and_recategorize(lib: Library, stocked: dict[str, str]) -> None:
    clip_id = stocked["fraud"]
    assert lib.rename(clip_id, "  反诈  提醒 ").title == "反诈 提醒"
    assert lib.retag(clip_id, ["a", " b ", "", "a"]).tags == ("a", "b")
    assert lib.retag(clip_id, []).tags == ()
    assert lib.set_category(clip_id, "weekly").category == "weekly"
    assert lib.get(clip_id).title == "反诈 提醒"


def test_id_prefix_lookup(lib: Library, stocked: dict[str, str]) -> None:
    clip_id = stocked["fire"]
    assert lib.get(clip_id[:6]).id == clip_id
    assert lib.get(clip_id.upper()).id == clip_id
    with pytest.raises(ClipNotFoundError):
        lib.get(clip_id[:3])  # too short to be a prefix


def test_remove(lib: Library, stocked: dict[str, str]) -> None:
    lib.remove(stocked["flood"])
    assert {c.id for c in lib.search()} == {stocked["fire"], stocked["fraud"]}
    with pytest.raises(ClipNotFoundError):
        lib.get(stocked["flood"])
    with pytest.raises(ClipNotFoundError):
        lib.remove(stocked["flood"])


def test_removed_clip_can_be_added_again(lib: Library, formats: dict[str, Path]) -> None:
    clip = lib.add(formats["wav"])
    lib.remove(clip.id)
    again, new = lib.ingest(formats["wav"])
    assert new and again.id == clip.id
    assert len(lib.pcm(again.id, 16000)) > 0
