"""audio_library: ingest, normalize, transcode and catalogue broadcast audio.

It never imports broadcaster.
"""

from .chimes import chime_names
from .decode import decode_file
from .errors import (
    ClipNotFoundError,
    CorruptAudioError,
    DecodeError,
    EmptyAudioError,
    InvalidRequestError,
    LibraryError,
    NotAudioError,
    SpeechError,
    StorageError,
    TooLargeError,
    ToolMissingError,
    TooLongError,
    UnsupportedCodecError,
)
from .library import Library
from .mastering import TRANSPORT_RATES, Settings
from .speech import EspeakEngine, SpeechEngine
from .storage import Clip

__all__ = [
    "TRANSPORT_RATES",
    "Clip",
    "ClipNotFoundError",
    "CorruptAudioError",
    "DecodeError",
    "EmptyAudioError",
    "EspeakEngine",
    "InvalidRequestError",
    "Library",
    "LibraryError",
    "NotAudioError",
    "Settings",
    "SpeechEngine",
    "SpeechError",
    "StorageError",
    "ToolMissingError",
    "TooLargeError",
    "TooLongError",
    "UnsupportedCodecError",
    "chime_names",
    "decode_file",
]
