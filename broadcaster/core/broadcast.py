"""Broadcasts as data: who asked for what, to which speakers, and what each speaker really played.

Outcomes are derived from what a speaker reports having played (frames heard against frames
sent), never assumed; `outcome()` is the one place that judges, pure and tested on its own.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from broadcaster.drivers.base import Report

PRIORITY_CLASSES = ("background", "announcement", "live", "emergency")
ACTIVE = ("queued", "starting", "playing")
FINAL = ("done", "stopped", "cut", "failed", "interrupted")
# per-speaker states; "sent" is for speakers that cannot report (plain RTP): sent, not confirmed
SPEAKER_STATES = (
    "pending",
    "playing",
    "played",
    "partial",
    "silent",
    "cut",
    "stopped",
    "offline",
    "unreachable",
    "refused",
    "sent",
    "interrupted",
)


def new_broadcast_id() -> str:
    """A short unique id, sortable by creation time."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class SpeakerResult:
    """How one speaker fared in one broadcast."""

    speaker: str
    driver: str = "bcspeaker"
    state: str = "pending"
    route: str | None = None
    frames_sent: int | None = None  # frames the controller sent toward this speaker
    packets: int | None = None  # frames it played from a packet it received
    lost: int | None = None  # frames it played as silence
    samples: int | None = None
    first_sample_at: float | None = None
    cut_by: str | None = None  # the broadcast that took this speaker over
    error: str | None = None

    @property
    def played(self) -> bool:
        """True if the speaker played some of the broadcast (by its own report)."""
        return bool(self.packets)

    def to_dict(self) -> dict:
        """JSON form."""
        return {
            "speaker": self.speaker,
            "driver": self.driver,
            "state": self.state,
            "played": self.played,
            "route": self.route,
            "frames_sent": self.frames_sent,
            "packets": self.packets,
            "lost": self.lost,
            "samples": self.samples,
            "first_sample_at": self.first_sample_at,
            "cut_by": self.cut_by,
            "error": self.error,
        }


def outcome(res: SpeakerResult, report: Report | None, frames_sent: int, stopped: bool) -> None:
    """Judge one speaker from its report: played, partial, silent, cut, stopped or unreachable."""
    res.frames_sent = frames_sent
    if report is None:
        res.state = "unreachable"
        res.error = res.error or "the speaker never reported what it played"
        return
    res.packets, res.lost, res.samples = report.packets, report.lost, report.samples
    res.first_sample_at = report.first_sample_at
    if report.ended == "preempted" or (res.cut_by and report.packets < frames_sent):
        res.state = "cut"
        res.cut_by = res.cut_by or report.extra.get("preempted_by")
    elif report.ended == "stopped" or (stopped and report.packets < frames_sent):
        res.state = "stopped"
    elif report.packets >= frames_sent and frames_sent > 0:
        res.state = "played"
    elif report.packets > 0:
        res.state = "partial"
    else:
        res.state = "silent"
        res.error = res.error or "the speaker played none of the audio sent to it"


@dataclass
class Broadcast:
    """One broadcast and its per-speaker outcome."""

    id: str
    targets: list[str]
    source: dict[str, Any]
    codec: str
    priority: str = "announcement"
    owner: str = "system"
    owner_scope: str = ""
    rank: int = 0
    state: str = "starting"
    created_at: float = field(default_factory=time.time)
    requested_at: float = field(default_factory=time.time)
    started_at: float | None = None  # controller instant of the first sample
    ended_at: float | None = None
    lead: float | None = None  # seconds between sending a frame and its play instant
    frames: int = 0  # frames sent
    # how long the speakers' set-up took, and how much of the controller's own CPU it cost
    # (its event-loop thread meanwhile): what the wait was for, the speakers or the controller
    setup: dict[str, float] | None = None
    error: str | None = None
    results: dict[str, SpeakerResult] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Speakers in all; `played` in full, `heard` some of it; and the count per state."""
        res = list(self.results.values())
        states: dict[str, int] = {}
        for r in res:
            states[r.state] = states.get(r.state, 0) + 1
        return {
            "speakers": len(res),
            "played": states.get("played", 0),
            "heard": sum(r.played for r in res),
            "states": states,
        }

    def to_dict(self) -> dict:
        """JSON form, with a summary of the speakers."""
        return {
            "id": self.id,
            "state": self.state,
            "targets": self.targets,
            "source": self.source,
            "codec": self.codec,
            "priority": self.priority,
            "owner": self.owner,
            "owner_scope": self.owner_scope,
            "created_at": self.created_at,
            "requested_at": self.requested_at,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "lead": self.lead,
            "setup": self.setup,
            "frames": self.frames,
            "error": self.error,
            "summary": self.summary(),
            "speakers": [
                r.to_dict() for r in sorted(self.results.values(), key=lambda r: r.speaker)
            ],
        }
