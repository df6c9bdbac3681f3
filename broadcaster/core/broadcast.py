"""Broadcasts as data: who asked for what, to which speakers, at what priority, and how it went."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

# The ladder every PA system uses; higher wins. Arbitration comes with the tiers issue.
PRIORITIES = {"background": 10, "announcement": 20, "paging": 30, "emergency": 40}


def new_broadcast_id() -> str:
    """A short unique id, sortable by creation time."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class SpeakerResult:
    """How one speaker fared in one broadcast."""

    speaker: str
    state: str = "pending"  # pending, playing, played, failed, unreachable, stopped, preempted
    route: str = "unicast"
    packets: int | None = None
    lost: int | None = None
    first_sample_at: float | None = None
    error: str | None = None

    @property
    def played(self) -> bool:
        """True if the speaker played some of the broadcast."""
        return bool(self.packets)

    def to_dict(self) -> dict:
        """JSON form."""
        return {"speaker": self.speaker, "state": self.state, "played": self.played,
                "route": self.route, "packets": self.packets, "lost": self.lost,
                "first_sample_at": self.first_sample_at, "error": self.error}


@dataclass
class Broadcast:
    """One broadcast and its per-speaker outcome."""

    id: str
    targets: list[str]
    source: str
    codec: str
    priority: str = "announcement"
    owner: str = "system"
    state: str = "starting"
    created_at: float = field(default_factory=time.time)
    requested_at: float = field(default_factory=time.time)
    started_at: float | None = None  # controller instant of the first sample
    ended_at: float | None = None
    frames: int = 0
    error: str | None = None
    results: dict[str, SpeakerResult] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON form, with a summary of the speakers."""
        res = list(self.results.values())
        return {
            "id": self.id, "state": self.state, "targets": self.targets, "source": self.source,
            "codec": self.codec, "priority": self.priority, "owner": self.owner,
            "created_at": self.created_at, "started_at": self.started_at,
            "ended_at": self.ended_at, "frames": self.frames, "error": self.error,
            "summary": {"speakers": len(res), "played": sum(r.played for r in res),
                        "failed": sum(not r.played for r in res) if self.state in
                        ("done", "stopped", "failed") else 0},
            "speakers": [r.to_dict() for r in sorted(res, key=lambda r: r.speaker)],
        }
