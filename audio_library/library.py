"""The library facade the controller and the CLI use: add, speak, find, play and remove clips."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from . import chimes, transcoder
from .errors import (
    EmptyAudioError,
    InvalidRequestError,
    TooLargeError,
)
from .filestore import ClipFiles
from .mastering import MASTER_RATE, TRANSPORT_RATES, Master, Settings, master
from .speech import EspeakEngine, SpeechEngine, clean_text, default_title
from .storage import Catalogue, Clip

ORPHAN_GRACE_SECONDS = 3600.0
MAX_NAME_CHARS = 200
EXTRA_RATE_CACHE = 16


class Library:
    """A catalogue of broadcast-ready clips stored under `data_dir/library/`."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        settings: Settings | None = None,
        speech: SpeechEngine | None = None,
        orphan_grace_seconds: float = ORPHAN_GRACE_SECONDS,
    ) -> None:
        self.root = Path(data_dir) / "library"
        self.settings = settings or Settings()
        self.speech: SpeechEngine = speech or EspeakEngine()
        self.files = ClipFiles(self.root)
        self.catalogue = Catalogue(self.root / "catalogue.db")
        # Whatever a crash left half-written (staging folders, files with no row) goes now.
        self.files.sweep(self.catalogue.ids(), orphan_grace_seconds)
        self._lock = threading.Lock()
        self._chimes: dict[str, Master] = {}
        self._resampled: OrderedDict[tuple[str, int], bytes] = OrderedDict()

    def close(self) -> None:
        """Release the catalogue connection."""
        self.catalogue.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- adding -----------------------------------------------------------------------------

    def add(
        self,
        path: str | Path,
        *,
        title: str | None = None,
        tags: Iterable[str] = (),
        category: str = "",
        added_by: str = "",
        original_name: str | None = None,
    ) -> Clip:
        """Ingest an audio file; returns its clip (the existing one if this audio is already in)."""
        return self.ingest(
            path,
            title=title,
            tags=tags,
            category=category,
            added_by=added_by,
            original_name=original_name,
        )[0]

    def ingest(
        self,
        path: str | Path,
        *,
        title: str | None = None,
        tags: Iterable[str] = (),
        category: str = "",
        added_by: str = "",
        original_name: str | None = None,
        kind: str = "upload",
        text: str | None = None,
        engine: str = "",
    ) -> tuple[Clip, bool]:
        """Ingest an audio file; returns (clip, True if new, False if it was a duplicate)."""
        path = Path(path)
        name = safe_name(original_name if original_name is not None else path.name)
        size = _file_size(path, name)
        limits = self.settings
        if size == 0:
            raise EmptyAudioError("is empty (0 bytes)", file=name)
        if size > limits.max_bytes:
            raise TooLargeError(
                f"is {_mb(size)}, more than the {_mb(limits.max_bytes)} limit", file=name
            )
        source_sha = _sha256_file(path, name)
        existing = self.catalogue.find_source(source_sha, limits.target_lufs)
        if existing is not None:
            return existing, False
        decoded = transcoder.decode(path, MASTER_RATE, name=name, max_seconds=limits.max_seconds)
        made = master(decoded.pcm, decoded.rate, limits, name=name)
        digest = hashlib.sha256(made.pcm).hexdigest()
        clip = Clip(
            id=digest[:16],
            sha256=digest,
            source_sha256=source_sha,
            kind=kind,
            title=clean_title(title if title is not None else default_title_for(name, text)),
            tags=clean_tags(tags),
            category=category.strip(),
            original_name=name if kind == "upload" else "",
            source_format=decoded.container,
            source_codec=decoded.codec,
            duration=round(made.seconds, 3),
            target_lufs=limits.target_lufs,
            loudness_before=made.before.integrated,
            true_peak_before=made.before.true_peak,
            loudness_after=made.after.integrated,
            true_peak_after=made.after.true_peak,
            added_by=added_by.strip(),
            added_at=_now(),
            text=text,
            engine=engine,
        )
        return self._store(clip, made.pcm)

    def _store(self, clip: Clip, pcm48: bytes) -> tuple[Clip, bool]:
        if self.catalogue.exists(clip.id):
            return self.catalogue.get(clip.id), False
        staging = self.files.new_staging()
        published = False
        try:
            for rate in TRANSPORT_RATES:
                pcm = (
                    pcm48 if rate == MASTER_RATE else transcoder.resample(pcm48, MASTER_RATE, rate)
                )
                self.files.write_wav(staging / f"{rate}.wav", pcm, rate)
            with self._lock:
                if self.catalogue.exists(clip.id):
                    return self.catalogue.get(clip.id), False
                if not self.files.publish(staging, clip.id):
                    # A folder with no row: left by a crash inside the grace period. Same content
                    # (the id is its hash), but it may be incomplete, so replace it.
                    self.files.discard(clip.id)
                    if not self.files.publish(staging, clip.id):
                        raise InvalidRequestError(f"clip {clip.id} is being added elsewhere")
                published = True
                # Files first, then the row: a crash in between leaves only files with no row,
                # which the next start sweeps; a row never points at missing files.
                self.catalogue.insert(clip)
            return clip, True
        except sqlite3.IntegrityError:
            return self.catalogue.get(clip.id), False
        except BaseException:
            if published:
                self.files.discard(clip.id)
            raise
        finally:
            self.files.discard(staging)

    def tts(
        self,
        text: str,
        *,
        title: str | None = None,
        tags: Iterable[str] = (),
        category: str = "tts",
        added_by: str = "",
    ) -> Clip:
        """Speak Mandarin `text` with the speech engine and catalogue it, keeping the text."""
        text = clean_text(text)
        work = self.files.new_staging()
        try:
            spoken = work / "speech.wav"
            self.speech.synthesize(text, spoken)
            clip, _ = self.ingest(
                spoken,
                title=title or default_title(text),
                tags=tags,
                category=category,
                added_by=added_by,
                original_name="text-to-speech",
                kind="tts",
                text=text,
                engine=self.speech.name,
            )
            return clip
        finally:
            self.files.discard(work)

    def add_chime(self, name: str) -> Clip:
        """Catalogue a built-in chime as a clip (idempotent); returns it."""
        chime = chimes.lookup(name)
        work = self.files.new_staging()
        try:
            wav = work / f"{name}.wav"
            self.files.write_wav(wav, chimes.synthesize(name, MASTER_RATE), MASTER_RATE)
            clip, _ = self.ingest(
                wav,
                title=f"Chime: {name}",
                category="chime",
                tags=("chime",),
                added_by="system",
                kind="chime",
                text=chime.description,
                engine="audio_library.chimes",
            )
            return clip
        finally:
            self.files.discard(work)

    # -- reading ----------------------------------------------------------------------------

    def get(self, clip_id: str) -> Clip:
        """The clip with this id (or a unique prefix of at least 4 characters)."""
        return self.catalogue.get(clip_id)

    def search(
        self, query: str | None = None, *, tag: str | None = None, category: str | None = None
    ) -> list[Clip]:
        """All clips, or those matching a text query, a tag and/or a category."""
        return self.catalogue.search(query, tag=tag, category=category)

    def pcm(self, clip_id: str, rate: int) -> bytes:
        """The clip's audio as mono s16le at `rate` (8000, 16000, 48000 are stored; others made)."""
        clip = self.get(clip_id)
        if rate in TRANSPORT_RATES:
            return self.files.read_pcm(clip.id, rate)
        _check_rate(rate)
        key = (clip.id, rate)
        with self._lock:
            if key in self._resampled:
                self._resampled.move_to_end(key)
                return self._resampled[key]
        pcm = transcoder.resample(self.files.read_pcm(clip.id, MASTER_RATE), MASTER_RATE, rate)
        with self._lock:
            self._resampled[key] = pcm
            while len(self._resampled) > EXTRA_RATE_CACHE:
                self._resampled.popitem(last=False)
        return pcm

    def chime(self, name: str, rate: int) -> bytes:
        """A built-in chime as mono s16le at `rate`, at the same loudness target as every clip."""
        _check_rate(rate)
        with self._lock:
            made = self._chimes.get(name)
        if made is None:
            made = master(
                chimes.synthesize(name, MASTER_RATE),
                MASTER_RATE,
                self.settings,
                name=f"chime {name}",
            )
            with self._lock:
                self._chimes[name] = made
        return transcoder.resample(made.pcm, MASTER_RATE, rate)

    def export(self, clip_id: str, out: str | Path, *, rate: int = 8000, fmt: str = "wav") -> Path:
        """Write the clip at `rate` as WAV or raw G.711 µ-law to `out`, atomically."""
        out = Path(out)
        pcm = self.pcm(clip_id, rate)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            transcoder.encode(pcm, rate, fmt, tmp)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return out

    # -- changing ---------------------------------------------------------------------------

    def rename(self, clip_id: str, title: str) -> Clip:
        """Give a clip a new title."""
        return self.catalogue.update(clip_id, title=clean_title(title))

    def retag(self, clip_id: str, tags: Iterable[str]) -> Clip:
        """Replace a clip's tags."""
        return self.catalogue.update(clip_id, tags=clean_tags(tags))

    def set_category(self, clip_id: str, category: str) -> Clip:
        """Change a clip's category."""
        return self.catalogue.update(clip_id, category=category.strip())

    def remove(self, clip_id: str) -> Clip:
        """Delete a clip: its row first, then its files (a crash between leaves files to sweep)."""
        clip = self.get(clip_id)
        with self._lock:
            self.catalogue.delete(clip.id)
            self.files.discard(clip.id)
            for key in [k for k in self._resampled if k[0] == clip.id]:
                del self._resampled[key]
        return clip


def safe_name(name: str) -> str:
    """A file name reduced to its last component with control characters removed; never a path."""
    last = name.replace("\\", "/").rsplit("/", 1)[-1]
    last = "".join(ch for ch in last if ch.isprintable()).strip()
    if last in ("", ".", ".."):
        return "upload"
    return last[:MAX_NAME_CHARS]


def clean_title(title: str) -> str:
    """A stripped, non-empty, single-line title."""
    title = " ".join(str(title).split())
    if not title:
        raise InvalidRequestError("a clip's title cannot be empty")
    return title[:MAX_NAME_CHARS]


def clean_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags stripped, empties dropped, duplicates removed, order kept."""
    if isinstance(tags, str):
        tags = tags.split(",")
    seen: dict[str, None] = {}
    for tag in tags:
        tag = " ".join(str(tag).split())
        if tag:
            seen.setdefault(tag[:64], None)
    return tuple(seen)


def default_title_for(name: str, text: str | None) -> str:
    """The title used when none is given: the text for speech, else the file name's stem."""
    if text:
        return default_title(text)
    stem = name.rsplit(".", 1)[0] if "." in name.strip(".") else name
    return stem or "untitled"


def _check_rate(rate: int) -> None:
    if not isinstance(rate, int) or not 8000 <= rate <= 192000:
        raise InvalidRequestError(f"sample rate {rate!r} is outside 8000..192000 Hz")


def _file_size(path: Path, name: str) -> int:
    try:
        if not path.is_file():
            raise InvalidRequestError("no such file", file=name)
        return path.stat().st_size
    except OSError as exc:
        raise InvalidRequestError(f"cannot be read ({exc.strerror})", file=name) from None


def _sha256_file(path: Path, name: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InvalidRequestError(f"cannot be read ({exc.strerror})", file=name) from None
    return digest.hexdigest()


def _mb(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
