"""Decode any audio file FFmpeg reads into mono signed 16-bit PCM at a chosen rate."""

from __future__ import annotations

from pathlib import Path

from . import transcoder
from .errors import DecodeError, InvalidRequestError

__all__ = ["DecodeError", "decode_file"]


def decode_file(path: str | Path, rate: int, max_seconds: float | None = None) -> bytes:
    """Return the file's audio as mono s16le PCM at `rate` Hz, resampled with an anti-alias filter.

    Raises a DecodeError subclass (NotAudioError, CorruptAudioError, EmptyAudioError,
    UnsupportedCodecError) whose message names the file; TooLongError past `max_seconds`, found
    while decoding (memory stays bounded even when the header lies).
    """
    path = Path(path)
    if not path.is_file():
        raise DecodeError("no such file", file=path.name)
    if not isinstance(rate, int) or not 8000 <= rate <= 192000:
        raise InvalidRequestError(f"sample rate {rate!r} is outside 8000..192000 Hz")
    if path.stat().st_size == 0:
        raise DecodeError("is empty (0 bytes)", file=path.name)
    return transcoder.decode(path, rate, name=path.name, max_seconds=max_seconds).pcm
