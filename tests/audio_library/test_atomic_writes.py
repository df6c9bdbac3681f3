"""A failure at any step of adding or removing a clip leaves the whole clip or nothing at all."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlite_utils

from audio_library import Library, StorageError, filestore, transcoder
from audio_library.storage import Catalogue


def no_orphans(lib: Library) -> None:
    """Every file belongs to a catalogued clip, and every clip has all its files."""
    ids = lib.catalogue.ids()
    for rel in lib.files.files():
        if rel.name.startswith("catalogue.db"):
            continue
        assert rel.parts[0] == "clips", f"stray file {rel}"
        assert rel.parts[2] in ids, f"orphan file {rel}"
    for clip_id in ids:
        for rate in (8000, 16000, 48000):
            assert (lib.files.clip_dir(clip_id) / f"{rate}.wav").is_file()


@pytest.fixture
def seeded(lib: Library, formats: dict[str, Path]) -> Library:
    lib.add(formats["flac"], title="existing")
    return lib


def check_nothing_changed(lib: Library, before: tuple, snapshot) -> None:
    assert snapshot(lib) == before
    no_orphans(lib)


def test_rename_failure_leaves_nothing(seeded: Library, formats, monkeypatch, snapshot) -> None:
    before = snapshot(seeded)

    def broken_rename(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(filestore.os, "rename", broken_rename)
    with pytest.raises(StorageError):
        seeded.add(formats["mp3"])
    monkeypatch.undo()
    check_nothing_changed(seeded, before, snapshot)


def test_db_insert_failure_leaves_nothing(seeded: Library, formats, monkeypatch, snapshot) -> None:
    before = snapshot(seeded)

    def broken_insert(self, *args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sqlite_utils.db.Table, "insert", broken_insert)
    with pytest.raises(StorageError) as caught:
        seeded.add(formats["mp3"])
    assert "disk is full" in caught.value.message
    monkeypatch.undo()
    check_nothing_changed(seeded, before, snapshot)


def test_full_disk_while_writing_audio(seeded: Library, formats, monkeypatch, snapshot) -> None:
    before = snapshot(seeded)
    real_fsync = os.fsync
    calls = {"n": 0}

    def fsync_then_full(fd):
        calls["n"] += 1
        if calls["n"] == 2:  # the second of the three WAV files
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(filestore.os, "fsync", fsync_then_full)
    with pytest.raises(StorageError) as caught:
        seeded.add(formats["ogg"])
    assert caught.value.code == "storage_failed" and "disk is full" in caught.value.message
    monkeypatch.undo()
    check_nothing_changed(seeded, before, snapshot)


def test_interrupt_mid_transcode(seeded: Library, formats, monkeypatch, snapshot) -> None:
    before = snapshot(seeded)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(transcoder, "resample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        seeded.add(formats["m4a"])
    check_nothing_changed(seeded, before, snapshot)


CRASH = textwrap.dedent("""
    import os, sys
    from audio_library import Library
    from audio_library.storage import Catalogue
    def die(self, clip):
        os._exit(9)  # the process dies between publishing the files and the row
    Catalogue.insert = die
    Library(sys.argv[1]).add(sys.argv[2])
""")


def test_process_crash_between_files_and_row(data_dir: Path, formats, snapshot) -> None:
    with Library(data_dir) as lib:
        lib.add(formats["flac"], title="existing")
        before = snapshot(lib)
    proc = subprocess.run(
        [sys.executable, "-c", CRASH, str(data_dir), str(formats["wav"])], capture_output=True
    )
    assert proc.returncode == 9, proc.stderr.decode()
    # Another process may still be mid-add, so a young orphan survives a start-up...
    with Library(data_dir) as lib:
        assert len(lib.files.files()) > len(before[1]) + 1
        assert snapshot(lib)[0] == before[0]
    # ...but once past the grace period it is swept, and the catalogue never saw it.
    with Library(data_dir, orphan_grace_seconds=0) as lib:
        check_nothing_changed(lib, before, snapshot)
        clip = lib.add(formats["wav"])  # and the same audio can still be added afterwards
        no_orphans(lib)
        assert lib.pcm(clip.id, 8000)


def test_leftover_staging_is_swept(data_dir: Path) -> None:
    with Library(data_dir) as lib:
        stage = lib.files.new_staging()
        (stage / "48000.wav").write_bytes(b"partial")
    with Library(data_dir, orphan_grace_seconds=0) as lib:
        assert lib.files.files() == [p for p in lib.files.files() if p.name.startswith("catalogue")]


def test_remove_deletes_row_and_files(seeded: Library, formats: dict[str, Path]) -> None:
    clip = seeded.add(formats["opus"])
    seeded.remove(clip.id)
    assert not seeded.files.clip_dir(clip.id).exists()
    assert clip.id not in seeded.catalogue.ids()
    no_orphans(seeded)


def test_remove_with_failing_db_keeps_clip(
    seeded: Library, formats, monkeypatch, snapshot: Callable
) -> None:
    clip = seeded.add(formats["opus"])
    before = snapshot(seeded)

    def broken_delete(self, clip_id):
        raise StorageError("catalogue write failed (disk I/O error)")

    monkeypatch.setattr(Catalogue, "delete", broken_delete)
    with pytest.raises(StorageError):
        seeded.remove(clip.id)
    check_nothing_changed(seeded, before, snapshot)
    assert seeded.pcm(clip.id, 8000)
