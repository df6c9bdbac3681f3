"""One flat hierarchy of errors; each carries a stable code, an HTTP status and a plain message."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class BroadcasterError(Exception):
    """Base of every error the controller reports to a user or a client."""

    code = "error"
    status = 400

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        detail: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.detail = detail or {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form any client can rebuild the error from."""
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True)
class Problem:
    """One fault in a zones file, located by file, line and key path (ZonesError lists them)."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the problem."""
        return {"file": self.file, "line": self.line, "key": self.key, "message": self.message}


class ZonesError(BroadcasterError):
    """zones.yaml is unreadable or invalid; `problems` lists every fault with file, line and key."""

    code = "zones_invalid"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        text = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(
            f"{len(problems)} problem(s) in zones file: {text}{more}",
            detail={"problems": [p.to_dict() for p in problems]},
        )


class UnknownTarget(BroadcasterError):
    """A target names no zone, group or speaker in the site."""

    code = "unknown_target"
    status = 404


class NotFound(BroadcasterError):
    """A broadcast, clip or other object does not exist."""

    code = "not_found"
    status = 404


class NoSpeakers(BroadcasterError):
    """The targets resolve to no online speaker."""

    code = "no_speakers"
    status = 409


class AudioInputError(BroadcasterError):
    """The audio given to play cannot be decoded."""

    code = "bad_audio"
    status = 422


class SpeakerError(BroadcasterError):
    """A speaker refused or failed a request."""

    code = "speaker_error"
    status = 502


class AuthError(BroadcasterError):
    """A request to a speaker was not authenticated, stale or replayed."""

    code = "unauthenticated"
    status = 401


class Forbidden(BroadcasterError):
    """The caller's scope or role does not allow this; the message names what is outside it."""

    code = "forbidden"
    status = 403


class Unauthorized(BroadcasterError):
    """No valid session or token came with the request."""

    code = "unauthorized"
    status = 401


class Busy(BroadcasterError):
    """A speaker is held by a broadcast this request does not outrank (arbitration)."""

    code = "busy"
    status = 409


class Overloaded(BroadcasterError):
    """The controller or its speakers cannot take another broadcast now."""

    code = "overloaded"
    status = 503


class StorageError(BroadcasterError):
    """A file under the data directory is damaged or cannot be written."""

    code = "storage"
    status = 500


class InvalidInput(BroadcasterError):
    """A request's fields are missing, of the wrong type, or unknown."""

    code = "invalid_input"
    status = 400
