"""audio_library: ingest, normalize, transcode and catalogue broadcast audio. Never imports broadcaster."""

from .decode import DecodeError, decode_file

__all__ = ["DecodeError", "decode_file"]
