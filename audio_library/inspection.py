"""Container checks FFmpeg does not make: what a file claims to be, and whether it was cut short."""

from __future__ import annotations

import struct
from pathlib import Path

# Leading bytes of the containers people upload, to tell "broken audio" from "not audio at all".
SIGNATURES = (
    (0, b"RIFF", "a WAV file"),
    (0, b"ID3", "an MP3 file"),
    (0, b"\xff\xfb", "an MP3 file"),
    (0, b"\xff\xf3", "an MP3 file"),
    (0, b"\xff\xf2", "an MP3 file"),
    (0, b"OggS", "an Ogg file"),
    (0, b"fLaC", "a FLAC file"),
    (4, b"ftyp", "an MP4/M4A file"),
    (0, b"#!AMR", "an AMR file"),
    (0, b"\xff\xf1", "an AAC file"),
    (0, b"\xff\xf9", "an AAC file"),
    (0, b"FORM", "an AIFF file"),
)
OGG_TAIL = 128 * 1024


def _head(path: Path, size: int = 16) -> bytes:
    try:
        with open(path, "rb") as src:
            return src.read(size)
    except OSError:
        return b""


def sniff(path: Path) -> str | None:
    """What kind of audio file the first bytes announce, if any."""
    head = _head(path)
    for offset, magic, kind in SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return kind
    return None


def truncation(path: Path) -> str | None:
    """Why a WAV or Ogg file looks cut short, or None.

    FFmpeg sizes a WAV by what is on disk and an Ogg stream by its last page, so a file cut in
    half decodes "successfully" as a shorter file; the container's own bookkeeping says otherwise.
    """
    head = _head(path, 12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _wav_truncation(path)
    if head[:4] == b"OggS":
        return _ogg_truncation(path)
    return None


def _wav_truncation(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as src:
        src.seek(12)
        while True:
            header = src.read(8)
            if len(header) < 8:
                return None
            chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"data":
                # 0 and 0xFFFFFFFF mean "unknown length" (streamed WAVs); nothing to check.
                if length in (0, 0xFFFFFFFF):
                    return None
                have = size - src.tell()
                if have < length * 0.98:
                    return f"the header promises {length} bytes of audio but only {have} are there"
                return None
            src.seek(length + (length & 1), 1)


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def _ogg_page_ok(page: bytes) -> bool:
    """Whether a complete Ogg page's checksum (computed with its CRC field zeroed) matches."""
    crc = 0
    for byte in page[:22] + b"\0\0\0\0" + page[26:]:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
    return crc == struct.unpack("<I", page[22:26])[0]


def _ogg_truncation(path: Path) -> str | None:
    size = path.stat().st_size
    with open(path, "rb") as src:
        src.seek(max(0, size - OGG_TAIL))
        tail = src.read()
    # Walk back to the last page whose checksum holds ("OggS" can also occur inside audio data).
    at = len(tail)
    while True:
        at = tail.rfind(b"OggS", 0, at)
        if at < 0:
            return "no complete Ogg page at the end of the file"
        segments = tail[at + 26] if at + 27 <= len(tail) else 0
        table = tail[at + 27 : at + 27 + segments]
        end = at + 27 + segments + sum(table)
        if (
            at + 27 <= len(tail)
            and len(table) == segments
            and end <= len(tail)
            and tail[at + 4] == 0
            and _ogg_page_ok(tail[at:end])
        ):
            break
    if end != len(tail):
        return "the last Ogg page is incomplete"
    if not tail[at + 5] & 0x04:
        return "the stream has no end page"
    return None
