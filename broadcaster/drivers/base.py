"""What every speaker driver is: a small protocol with a declared set of capabilities.

A driver speaks to one family of speakers (our own endpoint, plain RTP paging speakers, later Axis,
SIP, Poly …). The controller core never speaks a speaker protocol itself: it asks each driver to
find and watch its speakers, to prepare a broadcast on some of them, to send the broadcast's
frames (paced by the core), to stop it, and — only where declared — to set volume and to report
what each speaker actually played. Optional operations are called only when the capability is
declared, never probed with hasattr.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from broadcaster.errors import BroadcasterError


class Capability(enum.StrEnum):
    """What a driver's speakers can do."""

    IN_STEP = "in_step"  # plays each frame at a common instant of the controller's clock
    AUTHENTICATED = "authenticated"  # signed control and authenticated audio (SRTP)
    MULTICAST = "multicast"  # one stream to a group address serves many speakers
    VOLUME = "volume"  # set_volume works
    REPORT = "report"  # report() says what a speaker played, sample by sample
    HEALTH = "health"  # online/offline comes from the speaker's answers, not configuration
    DISCOVERY = "discovery"  # speakers are found on the network (mDNS)
    RESUME = "resume"  # rejoin(): a speaker cut from a stream can take it up again mid-way


@dataclass
class DriverOptions:
    """Settings every driver may use; every address defaults to loopback."""

    interface: str = "127.0.0.1"  # where speakers are reached: media, mDNS, the clock service
    clock_port: int = 0
    site_tag: str = ""  # the mDNS site tag (default: the site id)
    mdns: bool = True
    poll_interval: float = 2.0  # seconds between health polls of one speaker


class FrameSender(Protocol):
    """Sends one broadcast's frames to a driver's speakers; the core paces it.

    Frame n plays at controller time `base_time + n * 20 ms` on in-step speakers; the core calls
    `frame(n, pcm)` `lead` seconds before that instant. Frames the source never produced (a live
    source that stalled) are skipped: the index still advances, so delay never builds up.
    """

    @property
    def rate(self) -> int:
        """PCM sample rate the sender wants (mono s16le)."""

    def start(self, base_time: float, now: float) -> None:
        """Fix frame 0's play instant (controller clock); announce it to the speakers."""

    def frame(self, index: int, pcm: bytes, now: float) -> None:
        """Send frame `index` (20 ms of PCM at `rate`)."""

    def end(self, frames: int, now: float) -> None:
        """The stream ends after `frames` frames (the core calls this a few times, spaced)."""


@dataclass
class Plan:
    """What a driver needs to prepare one broadcast."""

    broadcast: str
    codec: str  # our codec name for in-step speakers ("pcmu", "l16"); drivers may use their own
    priority: int  # numeric rank of the broadcast's class and tier (higher wins)
    volumes: dict[str, int]  # speaker id -> volume 0-100 (zone default, or 100 for emergencies)
    lead: float  # seconds between sending a frame and its play instant


@dataclass
class Delivery:
    """A driver's part of one broadcast: its sender, and which of its speakers took part."""

    driver: str
    sender: FrameSender | None
    accepted: dict[str, str] = field(default_factory=dict)  # speaker -> route ("unicast", …)
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)  # speaker -> (state, why)
    state: Any = None  # the driver's own per-broadcast state
    # speaker -> the sender destination its audio goes to (shared by a multicast group): the core
    # removes a destination when every speaker using it was cut, and adds it back on resume
    destinations: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """What one speaker says it played of one broadcast (drivers with REPORT only)."""

    ended: str  # end, stopped, preempted, idle, shutdown
    samples: int  # samples its sound card played (silence for lost frames included)
    packets: int  # frames played from a received packet
    lost: int  # frames played as silence (never arrived, or late)
    late: int = 0
    first_sample_at: float | None = None  # controller-clock instant of its first sample
    sample_rate: int = 8000
    extra: dict[str, Any] = field(default_factory=dict)


class DriverHost(Protocol):
    """What the controller offers its drivers (implemented by the core; drivers never import it)."""

    def speaker_seen(self, speaker: str, status: dict[str, Any]) -> None:
        """A speaker answered: it is online; `status` may carry playing, clock, counters."""

    def speaker_alive(self, speaker: str, status: dict[str, Any]) -> None:
        """A speaker's heartbeat: it is online; `status` has its `clock` (synced, rtt, rtt_p90)
        and, when the driver knows it, `playing`."""

    def speaker_failed(self, speaker: str, error: str) -> None:
        """A speaker did not answer; the core decides when that makes it offline."""

    def speaker_located(self, speaker: str, host: str, port: int, source: str) -> None:
        """Where a speaker's control endpoint is (mdns, static, dial-in)."""

    def is_online(self, speaker: str) -> bool:
        """The core's view of whether a speaker is online."""

    def publish(self, kind: str, **detail: Any) -> None:
        """Publish an event on the controller's bus."""

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send one datagram from the controller's media sockets (unicast or multicast)."""

    def send_many(self, data: bytes, addrs: list[tuple[str, int]]) -> None:
        """Send one datagram to many addresses from the media sockets (one call for all)."""

    def now(self) -> float:
        """The controller's clock (Unix seconds): the play clock every in-step speaker follows."""


@runtime_checkable
class Driver(Protocol):
    """One speaker family. Every method is called by the core only; optional ones per capability."""

    name: str
    capabilities: frozenset[Capability]

    async def start(self, host: DriverHost, speakers: list[str]) -> None:
        """Begin finding and watching these speakers (discovery, health)."""

    async def close(self) -> None:
        """Stop watching; release sockets and tasks."""

    async def prepare(self, plan: Plan, speakers: list[str]) -> Delivery:
        """Set the broadcast up on these online speakers; never raises for one speaker's fault."""

    async def stop(self, delivery: Delivery, speakers: list[str], reason: str) -> None:
        """Cut the broadcast on these speakers now."""

    async def set_volume(self, speaker: str, volume: int) -> None:
        """Set a speaker's volume (VOLUME only)."""

    async def rejoin(self, delivery: Delivery, plan: Plan, speakers: list[str]) -> list[str]:
        """Set these speakers up again on a stream already running (RESUME only); returns those
        that accepted."""

    async def reports(
        self, delivery: Delivery, speakers: list[str], deadline: float
    ) -> dict[str, Report | BroadcasterError | None]:
        """What each speaker played, waiting until it has finished or `deadline` (REPORT only):
        its Report, the error that kept it from saying, or None (no record by the deadline).
        All at once: a district's thousand speakers are asked in waves, not one task each."""


def has(driver: Driver, cap: Capability) -> bool:
    """True if the driver declares the capability."""
    return cap in driver.capabilities


DriverFactory = Callable[[dict[str, Any]], Driver]
