"""The bodies of the control API's requests, checked before anything moves (docs/protocol.md §2).

Pure: a body in, a typed request out, or ValueError/TypeError naming the field (the speaker
answers 400 `bad_request`). The key is unwrapped by the speaker, which holds the pairing key.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

from broadcaster.protocol.codecs import Codec, codec_by_name


@dataclass(frozen=True)
class PlayRequest:
    """A checked `POST /play` body."""

    broadcast: str
    codec: Codec
    ssrc: int
    base_ts: int
    base_time: float | None  # set: the stream already runs (taken up again), join mid-way
    priority: int
    volume: int | None  # None: leave the speaker's volume as it is
    key: str  # sealed SRTP master key and salt, base64
    multicast: tuple[str, int] | None

    @classmethod
    def parse(cls, req: object) -> PlayRequest:
        """Check every field of a /play body; raises ValueError/TypeError naming a bad one."""
        if not isinstance(req, dict):
            raise TypeError("play request must be a JSON object")
        for name in ("broadcast", "codec", "ssrc", "base_ts", "key"):
            if req.get(name) is None:
                raise ValueError(f"{name} is required")
        volume = None if req.get("volume") is None else _int(req, "volume")
        if volume is not None and not 0 <= volume <= 100:
            raise ValueError(f"volume {volume} is outside 0-100")
        base_time = req.get("base_time")
        if base_time is not None and (
            isinstance(base_time, bool)
            or not isinstance(base_time, (int, float))
            or not math.isfinite(base_time)
        ):
            raise ValueError("base_time must be a number or null")
        if not isinstance(req["key"], str):
            raise TypeError("key must be a base64 string")
        return cls(
            str(req["broadcast"]),
            codec_by_name(str(req["codec"])),
            _int(req, "ssrc"),
            _int(req, "base_ts"),
            None if base_time is None else float(base_time),
            _int(req, "priority", 0),
            volume,
            req["key"],
            _group(req.get("multicast")),
        )


def volume_of(req: object) -> int:
    """The `volume` of a `POST /volume` body, 0-100."""
    if not isinstance(req, dict):
        raise TypeError("volume request must be a JSON object")
    vol = _int(req, "volume")
    if not 0 <= vol <= 100:
        raise ValueError(f"volume {vol} is outside 0-100")
    return vol


def broadcast_of(req: object) -> str | None:
    """The `broadcast` of a `POST /stop` body (null stops nothing)."""
    if not isinstance(req, dict) or "broadcast" not in req:
        raise TypeError("stop request must be a JSON object with broadcast")
    return None if req["broadcast"] is None else str(req["broadcast"])


def _int(req: dict, name: str, default: int | None = None) -> int:
    """An integer field of a request; ValueError (a 400) naming the field otherwise."""
    v = req.get(name, default)
    try:
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and v == int(v)
    except (OverflowError, ValueError):  # JSON's Infinity and NaN
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer, got {v!r}")
    return int(v)  # type: ignore[arg-type]


def _group(value: object) -> tuple[str, int] | None:
    """The `multicast` field, "GROUP:PORT", checked: a bad one is refused before anything moves."""
    if value is None or value == "":
        return None
    group, _, port = str(value).rpartition(":")
    try:
        ok = ipaddress.ip_address(group).is_multicast and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"multicast {value!r} is not GROUP:PORT with a multicast group")
    return group, int(port)
