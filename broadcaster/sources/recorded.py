"""Recorded sources: an uploaded file, a library clip, TTS text, and sequences of them.

Decoding and library look-ups run in a worker thread (never on the event loop) and happen in
`prepare`, before a broadcast's start instant is fixed, so a long decode never eats its opening.
The audio library is the only way in: this module speaks its API, never ffmpeg or PyAV directly.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from audio_library import (
    ClipNotFoundError,
    DecodeError,
    Library,
    LibraryError,
    TooLongError,
    chime_names,
    decode_file,
)
from broadcaster.errors import AudioInputError, BroadcasterError, NotFound
from broadcaster.sources.base import PcmSource

DEFAULT_MAX_SECONDS = 30 * 60  # uploads longer than this are refused while decoding


def library_error(exc: LibraryError) -> BroadcasterError:
    """The audio library's error as ours, keeping its code (404 for a missing clip, else 422)."""
    if isinstance(exc, ClipNotFoundError):
        return NotFound(exc.message, code=exc.code)
    return AudioInputError(
        exc.message, code=exc.code, status=413 if isinstance(exc, TooLongError) else 422
    )


class FileSource(PcmSource):
    """An audio file in any format ffmpeg reads (an upload), decoded with a duration limit."""

    kind = "file"

    def __init__(self, path: Path, name: str, max_seconds: float = DEFAULT_MAX_SECONDS) -> None:
        super().__init__(label=name)
        self.path = Path(path)
        self.name = name
        self.max_seconds = max_seconds
        self.sha256 = ""

    async def render(self, rate: int) -> bytes:
        """Decode the file at `rate`."""

        def work() -> bytes:
            self.sha256 = _sha256(self.path)
            return decode_file(self.path, rate, max_seconds=self.max_seconds)

        try:
            return await asyncio.to_thread(work)
        except DecodeError as exc:
            msg = exc.message.replace(str(self.path), self.name).replace(self.path.name, self.name)
            raise AudioInputError(msg, code="bad_audio") from None
        except LibraryError as exc:
            err = library_error(exc)
            # the library names the spooled temporary file; the caller knows the upload's name
            err.message = exc.message.replace(str(self.path), self.name).replace(
                self.path.name, self.name
            )
            raise err from None

    def describe(self) -> dict[str, Any]:
        """File name and content hash."""
        return {"kind": "file", "name": self.name, "sha256": self.sha256}


class ClipSource(PcmSource):
    """A clip of the audio library, by id."""

    kind = "clip"

    def __init__(self, library: Library, clip_id: str) -> None:
        super().__init__(label=clip_id)
        self.library = library
        self.clip_id = clip_id
        self.title = ""

    async def render(self, rate: int) -> bytes:
        """The clip's PCM at `rate`."""

        def work() -> bytes:
            self.title = self.library.get(self.clip_id).title
            return self.library.pcm(self.clip_id, rate)

        try:
            return await asyncio.to_thread(work)
        except LibraryError as exc:
            raise library_error(exc) from None

    def describe(self) -> dict[str, Any]:
        """Clip id and title."""
        return {"kind": "clip", "clip": self.clip_id, "title": self.title}


class TtsSource(PcmSource):
    """Text read aloud (Mandarin, the library's speech engine), kept as a clip."""

    kind = "tts"

    def __init__(self, library: Library, text: str) -> None:
        super().__init__(label=text[:40])
        if not text.strip():
            raise AudioInputError("the text to read is empty", code="empty_text")
        if len(text) > 5000:
            raise AudioInputError(
                "the text to read is longer than 5000 characters", code="text_too_long"
            )
        self.library = library
        self.text = text
        self.clip_id = ""

    async def render(self, rate: int) -> bytes:
        """Synthesize (or reuse) the speech and return it at `rate`."""

        def work() -> bytes:
            clip = self.library.tts(self.text, tags=["tts"])
            self.clip_id = clip.id
            return self.library.pcm(clip.id, rate)

        try:
            return await asyncio.to_thread(work)
        except LibraryError as exc:
            raise library_error(exc) from None

    def describe(self) -> dict[str, Any]:
        """The text and the clip it became."""
        return {"kind": "tts", "text": self.text, "clip": self.clip_id}


class ChimeSource(PcmSource):
    """One of the library's built-in chimes."""

    kind = "chime"

    def __init__(self, library: Library, name: str) -> None:
        super().__init__(label=name)
        if name not in chime_names():
            raise NotFound(
                f"unknown chime {name!r}; choose one of {', '.join(chime_names())}",
                code="unknown_chime",
            )
        self.library = library
        self.name = name

    async def render(self, rate: int) -> bytes:
        """The chime at `rate`."""
        return await asyncio.to_thread(self.library.chime, self.name, rate)

    def describe(self) -> dict[str, Any]:
        """The chime's name."""
        return {"kind": "chime", "name": self.name}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
