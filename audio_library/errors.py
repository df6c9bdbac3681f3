"""One flat hierarchy of library errors; each has a stable `code` and a message naming the file."""

from __future__ import annotations


class LibraryError(Exception):
    """Base of every error the audio library raises to its callers."""

    code = "library_error"
    status = 400

    def __init__(self, message: str, *, file: str | None = None) -> None:
        # The message leads with the file (its name only, never a directory) when one is known.
        self.file = file
        self.message = f"{file}: {message}" if file else message
        super().__init__(self.message)

    def to_dict(self) -> dict:
        """The JSON form any client can rebuild the error from."""
        out: dict = {"error": self.code, "message": self.message}
        if self.file:
            out["file"] = self.file
        return out


class DecodeError(LibraryError):
    """The file cannot be turned into audio; subclasses say why."""

    code = "not_decodable"
    status = 422


class NotAudioError(DecodeError):
    """The file is not an audio file at all (no recognisable format, or no audio stream in it)."""

    code = "not_audio"


class CorruptAudioError(DecodeError):
    """The file is audio but truncated or damaged."""

    code = "corrupt"


class EmptyAudioError(DecodeError):
    """The file is zero bytes long, or holds no samples, or only silence."""

    code = "empty"


class UnsupportedCodecError(DecodeError):
    """The file's audio is in a codec this machine cannot decode."""

    code = "unsupported_codec"
    status = 415


class TooLargeError(LibraryError):
    """The file is bigger than the configured byte limit."""

    code = "too_large"
    status = 413


class TooLongError(LibraryError):
    """The audio lasts longer than the configured limit."""

    code = "too_long"
    status = 413


class ClipNotFoundError(LibraryError):
    """No clip has the given id (or the id prefix is ambiguous)."""

    code = "not_found"
    status = 404


class InvalidRequestError(LibraryError):
    """An argument is out of range: an unknown rate, chime, format, or an empty title or text."""

    code = "invalid"


class SpeechError(LibraryError):
    """The text-to-speech engine failed or is not installed."""

    code = "tts_failed"
    status = 500


class StorageError(LibraryError):
    """The catalogue or its files could not be written (disk full, permissions); nothing kept."""

    code = "storage_failed"
    status = 507


class ToolMissingError(LibraryError):
    """A required program (ffmpeg, espeak-ng) is not installed."""

    code = "tool_missing"
    status = 500
