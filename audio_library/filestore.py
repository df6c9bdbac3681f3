"""Content-addressed clip files: staged in a temp folder, published by one atomic rename."""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
import uuid
import wave
from pathlib import Path

from .errors import ClipNotFoundError, StorageError

CLIP_ID = re.compile(r"^[0-9a-f]{16}$")


def is_clip_id(text: str) -> bool:
    """Whether `text` has the shape of a full clip id (16 lowercase hex digits)."""
    return bool(CLIP_ID.match(text))


class ClipFiles:
    """Files under `root`: clips/<id[:2]>/<id>/<rate>.wav for published clips, tmp/ for staging."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clips = root / "clips"
        self.tmp = root / "tmp"
        self.clips.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def clip_dir(self, clip_id: str) -> Path:
        """Folder of one clip; the id is checked so that it can never name another path."""
        if not is_clip_id(clip_id):
            raise ClipNotFoundError(f"{clip_id!r} is not a clip id")
        return self.clips / clip_id[:2] / clip_id

    def new_staging(self) -> Path:
        """A fresh private folder under tmp/ to build a clip's files in."""
        path = self.tmp / f"stage-{uuid.uuid4().hex}"
        try:
            path.mkdir()
        except OSError as exc:
            raise _storage_error(exc, "cannot create a staging folder") from None
        return path

    def write_wav(self, path: Path, pcm: bytes, rate: int) -> None:
        """Write mono s16le `pcm` as a WAV file and flush it to disk."""
        try:
            with open(path, "wb") as raw:
                with wave.open(raw, "wb") as out:
                    out.setnchannels(1)
                    out.setsampwidth(2)
                    out.setframerate(rate)
                    out.writeframes(pcm)
                raw.flush()
                os.fsync(raw.fileno())
        except OSError as exc:
            raise _storage_error(exc, f"cannot write {path.name}") from None

    def publish(self, staging: Path, clip_id: str) -> bool:
        """Move a staged folder into place in one rename; False if the clip's folder exists."""
        final = self.clip_dir(clip_id)
        try:
            final.parent.mkdir(exist_ok=True)
            _fsync_dir(staging)
            os.rename(staging, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or final.exists():
                return False
            raise _storage_error(exc, "cannot publish the clip's files") from None
        return True

    def discard(self, path_or_id: Path | str) -> None:
        """Remove a staged folder or a clip's folder: first renamed into tmp/, then deleted."""
        path = self.clip_dir(path_or_id) if isinstance(path_or_id, str) else path_or_id
        if not path.exists():
            return
        trash = self.tmp / f"trash-{uuid.uuid4().hex}"
        try:
            os.rename(path, trash)
        except OSError:
            trash = path
        shutil.rmtree(trash, ignore_errors=True)

    def read_pcm(self, clip_id: str, rate: int) -> bytes:
        """The stored PCM of a clip at one of its stored rates."""
        path = self.clip_dir(clip_id) / f"{rate}.wav"
        try:
            with wave.open(str(path), "rb") as src:
                return src.readframes(src.getnframes())
        except FileNotFoundError:
            raise ClipNotFoundError(f"clip {clip_id} has no audio at {rate} Hz on disk") from None

    def sweep(self, known_ids: set[str], grace_seconds: float) -> list[Path]:
        """Delete staging leftovers and clip folders with no catalogue row, older than the grace."""
        removed: list[Path] = []
        cutoff = time.time() - grace_seconds
        # Another process may be between its rename and its insert right now: the grace period
        # keeps a sweep from deleting that clip's files under it.
        candidates = list(self.tmp.iterdir())
        for shard in self.clips.iterdir():
            if shard.is_dir():
                candidates += [p for p in shard.iterdir() if p.name not in known_ids]
        for path in candidates:
            try:
                if path.lstat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    def files(self) -> list[Path]:
        """Every file under the store, relative to its root (for tests and checks)."""
        return sorted(p.relative_to(self.root) for p in self.root.rglob("*") if p.is_file())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(exc: OSError, what: str) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"{what}: the disk is full")
    return StorageError(f"{what}: {exc.strerror or exc}")
