"""Text-to-speech behind a small engine protocol; the default engine is offline espeak-ng."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import InvalidRequestError, SpeechError, ToolMissingError

MAX_TEXT_CHARS = 2000


@runtime_checkable
class SpeechEngine(Protocol):
    """Anything that can speak text into an audio file the library can ingest."""

    name: str

    def synthesize(self, text: str, out: Path) -> None:
        """Write `text` spoken aloud to the audio file `out` (any format ffmpeg decodes)."""
        ...


class EspeakEngine:
    """espeak-ng, offline. Voice cmn-latn-pinyin reads Chinese characters (plain cmn, zh do not)."""

    def __init__(
        self, voice: str = "cmn-latn-pinyin", speed_wpm: int = 150, program: str = "espeak-ng"
    ) -> None:
        self.voice = voice
        self.speed_wpm = speed_wpm
        self.program = program
        self.name = f"espeak-ng:{voice}"

    def synthesize(self, text: str, out: Path) -> None:
        """Speak `text` into the WAV file `out`."""
        exe = shutil.which(self.program)
        if exe is None:
            raise ToolMissingError(f"{self.program} is not installed (run scripts/setup)")
        # The text goes in on stdin, so text that starts with "-" is never read as an option.
        proc = subprocess.run(
            [exe, "-v", self.voice, "-s", str(self.speed_wpm), "-w", str(out), "--stdin"],
            input=text.encode("utf-8"),
            capture_output=True,
            check=False,
            timeout=120,
        )
        if proc.returncode != 0 or not out.exists() or out.stat().st_size <= 44:
            reason = proc.stderr.decode(errors="replace").strip() or "no audio produced"
            raise SpeechError(f"{self.name} failed: {reason}")


def clean_text(text: str) -> str:
    """The text to speak, stripped; rejects empty or over-long text."""
    text = " ".join(text.split())
    if not text:
        raise InvalidRequestError("there is no text to speak")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidRequestError(f"text is {len(text)} characters, more than {MAX_TEXT_CHARS}")
    return text


def default_title(text: str, limit: int = 40) -> str:
    """A title made from the start of the text."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
