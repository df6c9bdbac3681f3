"""Who holds each speaker, and what a new broadcast may take: pure, no I/O, no clock.

Every broadcast has a rank (its class — emergency > live > announcement > background — then the
caller's tier — subdistrict > area > village; see access/policy.rank). A new broadcast takes each
speaker whose holder it outranks; a speaker held by an equal or higher rank blocks it (the
request is refused, or queued if asked). A background broadcast that loses speakers is paused
there, not ended: when the speakers are released it takes them back.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Hold:
    """A broadcast's claim on speakers."""

    broadcast: str
    rank: int
    priority: str  # the class: background, announcement, live, emergency
    owner: str = ""

    @property
    def resumes(self) -> bool:
        """Background pauses when outranked and resumes afterwards; everything else is cut."""
        return self.priority == "background"


@dataclass
class Decision:
    """What a new broadcast would do: speakers it would take from whom, and what blocks it."""

    take: dict[str, Hold] = field(default_factory=dict)  # speaker -> the lower holder it cuts
    blocked: dict[str, Hold] = field(default_factory=dict)  # speaker -> equal/higher holder
    free: list[str] = field(default_factory=list)

    def cuts(self) -> dict[str, list[str]]:
        """Broadcast id -> the speakers it loses."""
        out: dict[str, list[str]] = defaultdict(list)
        for sid, hold in sorted(self.take.items()):
            out[hold.broadcast].append(sid)
        return dict(out)


@dataclass
class Holdings:
    """The current holder of every busy speaker, and background holds waiting to resume."""

    holders: dict[str, Hold] = field(default_factory=dict)
    paused: dict[str, list[Hold]] = field(default_factory=dict)

    def decide(self, speakers: list[str], rank: int) -> Decision:
        """What a broadcast of `rank` to these speakers would take, and what would block it."""
        d = Decision()
        for sid in speakers:
            hold = self.holders.get(sid)
            if hold is None:
                d.free.append(sid)
            elif hold.rank < rank:
                d.take[sid] = hold
            else:
                d.blocked[sid] = hold
        return d

    def claim(self, speakers: list[str], hold: Hold) -> dict[str, list[str]]:
        """Give the speakers to `hold`; returns broadcast id -> speakers it was cut from."""
        cut: dict[str, list[str]] = defaultdict(list)
        for sid in speakers:
            prev = self.holders.get(sid)
            if prev is not None and prev.broadcast != hold.broadcast:
                cut[prev.broadcast].append(sid)
                if prev.resumes:
                    self.paused.setdefault(sid, []).append(prev)
            self.holders[sid] = hold
        return dict(cut)

    def release(self, broadcast: str, speakers: list[str] | None = None) -> dict[str, list[str]]:
        """A broadcast lets go (it ended, or was cut there); returns broadcast id -> speakers a
        paused background broadcast takes back."""
        resume: dict[str, list[str]] = defaultdict(list)
        for sid in list(self.holders) if speakers is None else speakers:
            hold = self.holders.get(sid)
            if hold is None or hold.broadcast != broadcast:
                continue
            del self.holders[sid]
            waiting = self.paused.get(sid)
            if waiting:
                back = waiting.pop()
                if not waiting:
                    del self.paused[sid]
                self.holders[sid] = back
                resume[back.broadcast].append(sid)
        self.forget(broadcast)
        return dict(resume)

    def forget(self, broadcast: str) -> None:
        """Drop a broadcast's paused holds (it ended while paused)."""
        for sid in list(self.paused):
            self.paused[sid] = [h for h in self.paused[sid] if h.broadcast != broadcast]
            if not self.paused[sid]:
                del self.paused[sid]

    def held_by(self, broadcast: str) -> list[str]:
        """The speakers a broadcast holds now."""
        return sorted(s for s, h in self.holders.items() if h.broadcast == broadcast)
