"""The controller: knows the site, runs the speaker drivers, plays and stops broadcasts.

It speaks no speaker protocol itself: each speaker's driver (named in zones.yaml) finds it,
watches it and carries its audio. It is the drivers' host: they report speakers seen, failed and
located, publish events and send datagrams through it. Front ends never call it directly; they
go through the command surface (core/commands.py), where permissions are checked once.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broadcaster.core.arbitration import Hold, Holdings
from broadcaster.core.broadcast import (
    ACTIVE,
    PRIORITY_CLASSES,
    Broadcast,
    SpeakerResult,
    new_broadcast_id,
)
from broadcaster.core.events import Event, EventBus
from broadcaster.core.heap import HeapGuard
from broadcaster.core.lead import LeadChoice, PathFigure, choose_lead, path_of
from broadcaster.core.loopwatch import LoopWatch
from broadcaster.core.player import TURN, Part, Player
from broadcaster.core.registry import Registry
from broadcaster.drivers.base import Capability, Driver, DriverOptions
from broadcaster.errors import BroadcasterError, Busy, NoSpeakers, NotFound, Overloaded
from broadcaster.net.fanout import FanOut
from broadcaster.net.udp import multicast_sender
from broadcaster.protocol.auth import KeyStore
from broadcaster.protocol.clock import PlayClock
from broadcaster.protocol.codecs import codec_by_name
from broadcaster.site import Site
from broadcaster.sources.base import AudioSource, PcmSource
from broadcaster.storage.journal import Journal

log = logging.getLogger(__name__)
FINISHED_KEPT = 200  # finished broadcasts kept in memory; older ones live in the history
SPLITS_KEPT = 16  # address lists kept split into groups and unicast (two per running broadcast)


@dataclass
class ControllerConfig:
    """Settings of one controller; every address defaults to loopback."""

    data_dir: Path
    interface: str = "127.0.0.1"
    # the floors of a broadcast's lead; it grows with its speakers' measured paths (core/lead.py)
    playout_delay: float = 0.1
    live_lead: float = 0.07  # a live source's lead: the voice's delay (docs/paging.md)
    max_lead: float = 2.0
    clock_port: int = 0
    site_tag: str | None = None
    mdns: bool = True
    poll_interval: float = 2.0
    # admission: more than this is refused (503), never overcommitted; DOMAIN.md: one process
    # sends ~200k packets/s at most, i.e. ~4000 unicast streams of 50 packets/s
    max_broadcasts: int = 64
    max_streams: int = 2000


class Controller:
    """Knows the site, runs the drivers, streams broadcasts; the drivers' host."""

    def __init__(self, site: Site, config: ControllerConfig) -> None:
        self.site = site
        self.config = config
        self.tag = config.site_tag or site.id
        self.clock = PlayClock()
        self.keys = KeyStore(config.data_dir / "speaker-keys.json").ensure(
            [s for s, sp in site.speakers.items() if sp.driver == "bcspeaker"]
        )
        self.events = EventBus(clock=self.clock.now)
        self.journal = Journal(config.data_dir / "log")
        self.events.subscribe(self._journal_event)
        self.registry = Registry()
        self.paths: dict[str, PathFigure | None] = {}  # by speaker, from its latest status
        self._leads: dict[str, LeadChoice] = {}  # by broadcast, until it ends
        self.holdings = Holdings()
        self.loopwatch = LoopWatch()
        self.heap = HeapGuard()  # installed by a serving process once it is up (web/server.py)
        self._released = asyncio.Event()  # set whenever speakers are let go (queued requests)
        self.broadcasts: OrderedDict[str, Broadcast] = OrderedDict()
        self.players: dict[str, Player] = {}
        self._tasks: set[asyncio.Task] = set()
        self._usock: socket.socket | None = None
        self._fanout: FanOut | None = None
        self._splits: list[tuple[list, list, list]] = []  # addresses → (groups, unicast)
        self._msock: socket.socket | None = None
        self.drivers: dict[str, Driver] = self._make_drivers()
        for sp in site.speakers.values():
            self.registry.assign(sp.id, sp.kind, site.path_names(sp.id), sp.driver)

    def _make_drivers(self) -> dict[str, Driver]:
        from broadcaster.drivers.registry import make_driver

        names = sorted({sp.driver for sp in self.site.speakers.values()} | {"bcspeaker"})
        opts = DriverOptions(
            self.config.interface,
            self.config.clock_port,
            self.tag,
            self.config.mdns,
            self.config.poll_interval,
        )
        return {n: make_driver(n, self.site, self.keys, opts) for n in names}

    @property
    def bc(self) -> Any:
        """Our own endpoint's driver (tests and tools reach its link and addresses)."""
        return self.drivers["bcspeaker"]

    @property
    def link(self) -> Any:
        """The signed control link to our own speakers (tests and tools)."""
        return self.bc.link

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the media sockets and start every driver."""
        self._loop = asyncio.get_running_loop()
        self.loopwatch.start()
        iface = self.config.interface
        self._usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._usock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self._usock.bind((iface, 0))
        self._usock.setblocking(False)
        # a thread of its own sends each frame to the unicast speakers: the event loop is not
        # held while the kernel hands one packet to a thousand of them (net/fanout.py)
        self._fanout = FanOut(self._usock, threaded=True)
        self._msock = multicast_sender(iface)
        for name, drv in self.drivers.items():
            await drv.start(self, [s for s, sp in self.site.speakers.items() if sp.driver == name])

    async def close(self) -> None:
        """Stop broadcasts, drivers and sockets."""
        for p in list(self.players.values()):
            p.stop("shutdown")
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for drv in self.drivers.values():
            await drv.close()
        await self.loopwatch.close()
        self.heap.remove()
        if self._fanout is not None:
            self._fanout.close()  # what it has queued goes out before the socket closes
        for s in (self._usock, self._msock):
            if s:
                s.close()
        self.journal.close()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the drivers' host -------------------------------------------------------------------

    def now(self) -> float:
        """The play clock."""
        return self.clock.now()

    def publish(self, kind: str, **detail: Any) -> None:
        """Publish an event."""
        if kind == "unassigned":
            st = self.registry.get(detail["speaker"])
            st.kind, st.last_error = detail.get("speaker_kind", ""), "not in zones.yaml"
            st.host, _, port = str(detail.get("address", "")).rpartition(":")
            st.port = int(port) if port.isdigit() else None
            st.source = "mdns"
        self.events.publish(kind, **detail)

    def speaker_seen(self, speaker: str, status: dict[str, Any]) -> None:
        """A speaker answered."""
        came_online, grew = self.registry.seen(speaker, status, self.now())
        self.paths[speaker] = path_of(status.get("clock"))
        if came_online:
            self.events.publish("online", speaker=speaker)
        if grew:
            self.events.publish("attack", speaker=speaker, counters=grew)

    def speaker_alive(self, speaker: str, status: dict[str, Any]) -> None:
        """A speaker's heartbeat."""
        if self.registry.alive(speaker, status, self.now()):
            self.events.publish("online", speaker=speaker)
        self.paths[speaker] = path_of(status.get("clock"))

    def speaker_failed(self, speaker: str, error: str) -> None:
        """A speaker did not answer."""
        if self.registry.failed(speaker, error, self.now()):
            self.events.publish("offline", speaker=speaker, reason=error)

    def speaker_located(self, speaker: str, host: str, port: int, source: str) -> None:
        """Where a speaker is."""
        st = self.registry.get(speaker)
        st.host, st.port, st.source = host, port, source

    def is_online(self, speaker: str) -> bool:
        """The registry's view."""
        st = self.registry.speakers.get(speaker)
        return bool(st and st.online)

    def send_many(self, data: bytes, addrs: list[tuple[str, int]]) -> None:
        """One datagram to many addresses: the unicast ones in one system call (net/fanout.py),
        multicast groups (a few) one by one."""
        # the same lists frame after frame (each broadcast's RTP and RTCP addresses): each is
        # split once and kept while it is one of the last SPLITS_KEPT seen
        split = next((sp for sp in self._splits if sp[0] == addrs), None)
        if split is None:
            groups = [a for a in addrs if _is_multicast(a[0])]
            split = (list(addrs), groups, [a for a in addrs if not _is_multicast(a[0])])
            self._splits = [split, *self._splits[: SPLITS_KEPT - 1]]
        _, groups, unicast = split
        for a in groups:
            self.send(data, a)
        assert self._fanout is not None
        self._fanout.send(data, unicast)

    def media_dropped(self) -> int:
        """Unicast media datagrams never sent: the kernel's buffer was full, or the sending
        thread fell MAX_AGE (0.1 s) behind (each speaker's own report says what it missed)."""
        return self._fanout.dropped if self._fanout is not None else 0

    def realtime_media(self) -> bool:
        """Run the unicast sending thread at real-time priority (net/fanout.py); whether it
        does. A serving controller asks (web/server.py); a library user may."""
        return self._fanout.realtime() if self._fanout is not None else False

    def media_realtime(self) -> bool:
        """Whether the unicast sending thread runs at real-time priority."""
        return self._fanout is not None and self._fanout.realtime_on

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        """One datagram from the media sockets; a full buffer drops it (never blocks)."""
        sock = self._msock if _is_multicast(addr[0]) else self._usock
        assert sock is not None
        try:
            sock.sendto(data, addr)
        except BlockingIOError:
            log.debug("send buffer full, dropped a packet to %s", addr)

    def storage_fault(self, message: str) -> None:
        """The history cannot write (or can again): an alarm, from the writer thread."""
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.events.publish, "storage_fault", message=message)

    def _journal_event(self, ev: Event) -> None:
        self.journal.append("events.jsonl", ev.to_dict())

    # --- operations --------------------------------------------------------------------------

    def broadcast(self, bid: str) -> Broadcast:
        """One broadcast by id."""
        try:
            return self.broadcasts[bid]
        except KeyError:
            raise NotFound(f"no broadcast with id {bid!r}") from None

    async def play(
        self,
        source: AudioSource | bytes,
        targets: list[str],
        *,
        codec: str = "pcmu",
        priority: str = "announcement",
        owner: str = "system",
        owner_scope: str = "",
        rank: int | None = None,
        requested_at: float | None = None,
        lead: float | None = None,
        queue: bool = False,
        at: float | None = None,
        volume: int | None = None,
    ) -> Broadcast:
        """Start a broadcast of a source (or raw PCM at the codec's rate) to the targets.

        It takes every speaker whose holder it outranks (the holder is cut there); a speaker
        held by an equal or higher broadcast refuses it with Busy — unless `queue`, when it
        waits until those speakers are free. `at` (play clock) fixes the first sample's instant
        when set-up is done by then (scheduled announcements); `volume` overrides the zones'.
        """
        cod = codec_by_name(codec)
        if isinstance(source, bytes):
            source = PcmSource(source, cod.rate, "pcm")
        if priority not in PRIORITY_CLASSES:
            raise BroadcasterError(
                f"unknown priority {priority!r}; use one of {', '.join(PRIORITY_CLASSES)}",
                code="bad_priority",
            )
        if rank is None:
            rank = PRIORITY_CLASSES.index(priority) * 10 + 3  # the system: subdistrict tier
        wanted = sorted(self.site.resolve_many(targets))
        online = [sid for sid in wanted if self.is_online(sid)]
        if not online:
            raise NoSpeakers(
                f"none of the {len(wanted)} speaker(s) in {', '.join(targets)} is online"
            )
        self._admit(len(online))
        decision = self.holdings.decide(online, rank)
        if decision.blocked and not queue:
            raise self._busy(decision.blocked)
        b = Broadcast(
            new_broadcast_id(),
            list(targets),
            source.describe(),
            cod.name.lower(),
            priority,
            owner,
            owner_scope,
            rank,
            created_at=self.now(),
            requested_at=requested_at or self.now(),
        )
        reached = set(online)  # (a list's `in`, a thousand times over, was 10 ms at 1,000)
        for sid in wanted:
            res = b.results[sid] = SpeakerResult(sid, self.site.speakers[sid].driver)
            if sid not in reached:
                res.state, res.error = "offline", "offline when the broadcast started"
        volumes = {
            s: (
                100
                if priority == "emergency"
                else self.site.speakers[s].volume
                if volume is None
                else volume
            )
            for s in online
        }
        choice = self.choose_lead(online, live=source.live) if lead is None else None
        if len(online) > TURN:
            # a district: its records are built in this turn, its claim is made in the next (the
            # decision is taken again there: what started meanwhile is seen)
            await asyncio.sleep(0)
            self._admit(len(online))
            decision = self.holdings.decide(online, rank)
            if decision.blocked and not queue:
                raise self._busy(decision.blocked)
        if choice is not None:
            self._leads[b.id], lead = choice, choice.lead
        assert lead is not None  # given, or chosen just above
        b.lead = lead
        player = Player(b, source, [], lead, volumes, self.clock.now, self._changed, at=at)
        self.broadcasts[b.id] = b
        self.players[b.id] = player
        self._trim()
        if decision.blocked:
            b.state = "queued"
            self._changed(b, "queued")
            self._spawn(self._when_free(player, online))
        else:
            self._start(player, online)
        return b

    def choose_lead(self, speakers: list[str], live: bool = False) -> LeadChoice:
        """The lead their measured paths need (in-step speakers only), from the floor up."""
        floor = self.config.live_lead if live else self.config.playout_delay
        in_step = {n for n, d in self.drivers.items() if Capability.IN_STEP in d.capabilities}
        paths = {s: self.paths.get(s) for s in speakers if self.site.speakers[s].driver in in_step}
        return choose_lead(paths, floor, cap=self.config.max_lead)

    def admit(self, targets: list[str]) -> None:
        """Refuse now (before any decoding) what play() would refuse for load."""
        self._admit(len(self.site.resolve_many(targets)))

    def _admit(self, streams: int) -> None:
        """Refuse what the controller cannot carry in full, rather than play it badly."""
        running = list(self.players.values())
        if len(running) >= self.config.max_broadcasts:
            raise Overloaded(
                f"{len(running)} broadcasts are running, the most this controller "
                f"carries at once ({self.config.max_broadcasts}); try again when "
                "one ends",
                code="overloaded",
                detail={"running": len(running)},
            )
        load = sum(len(p.broadcast.results) for p in running)
        if load + streams > self.config.max_streams:
            raise Overloaded(
                f"{load} speaker streams are running; {streams} more would pass the "
                f"limit of {self.config.max_streams} this controller sends in step",
                code="overloaded",
                detail={"streams": load},
            )

    def _busy(self, blocked: dict[str, Hold]) -> Busy:
        sid, hold = sorted(blocked.items())[0]
        holder = self.broadcasts.get(hold.broadcast)
        who = f" by {holder.owner}" if holder else ""
        return Busy(
            f"speaker {sid} is held by broadcast {hold.broadcast} ({hold.priority}{who}), "
            f"which this request does not outrank; {len(blocked)} speaker(s) are held. "
            "Ask to queue, or wait until it ends",
            code="busy",
            detail={"held": {s: h.broadcast for s, h in sorted(blocked.items())}},
        )

    def _start(self, player: Player, speakers: list[str]) -> None:
        """Claim the speakers (cutting lower holders there) and run the broadcast."""
        b = player.broadcast
        cuts = self.holdings.claim(speakers, Hold(b.id, b.rank, b.priority, b.owner))
        for bid, sids in cuts.items():
            lower = self.players.get(bid)
            if lower is not None:
                lower.cut(sids, by=b.id)
        player.parts = [
            Part(drv, [s for s in speakers if self.site.speakers[s].driver == name])
            for name, drv in self.drivers.items()
        ]
        player.parts = [p for p in player.parts if p.speakers]
        self._changed(b, "starting")
        self._spawn(player.run())

    async def _when_free(self, player: Player, speakers: list[str]) -> None:
        """A queued broadcast starts once nothing equal or higher holds its speakers."""
        b = player.broadcast
        while not player.stopped:
            if not self.holdings.decide(speakers, b.rank).blocked:
                b.state = "starting"
                self._start(player, speakers)
                return
            self._released.clear()
            await self._released.wait()
        b.state, b.ended_at = "stopped", self.clock.now()
        self._changed(b, "ended")

    def _changed(self, b: Broadcast, what: str) -> None:
        """Every change of a broadcast passes here once: events, journal, the live feed."""
        if what == "ended":
            self.players.pop(b.id, None)
            for bid, sids in self.holdings.release(b.id).items():
                back = self.players.get(bid)
                if back is not None:
                    self._spawn(back.resume(sids))
            self._released.set()
            self._leads.pop(b.id, None)
            self.events.publish(
                "broadcast_ended",
                broadcast=b.id,
                state=b.state,
                speakers_list=sorted(b.results),
                lead=b.lead,
            )
            self.journal.append("broadcasts.jsonl", b.to_dict)  # built on the journal's thread
        elif what in (
            "queued",
            "starting",
            "prepared",
            "playing",
            "stopped",
            "failed",
            "done",
            "cut",
            "cut_speakers",
            "resumed",
        ):
            extra: dict[str, Any] = {}
            if what in ("queued", "starting") and b.id in self._leads:  # why this lead
                extra["lead_choice"] = self._leads[b.id].to_dict()
            self.events.publish(
                "broadcast",
                broadcast=b.id,
                state=b.state,
                speakers_list=sorted(b.results),
                lead=b.lead,
                **extra,
            )

    def _trim(self) -> None:
        while len(self.broadcasts) > FINISHED_KEPT + len(self.players):
            oldest = next((k for k, v in self.broadcasts.items() if v.state not in ACTIVE), None)
            if oldest is None:
                break
            del self.broadcasts[oldest]

    async def stop(self, bid: str) -> Broadcast:
        """Stop a broadcast now; speakers cut it at once."""
        b = self.broadcast(bid)
        player = self.players.get(bid)
        if player is not None:
            player.stop("stopped")
            await asyncio.gather(*player._stopping)  # noqa: SLF001 - the stop requests just sent
        return b


@functools.lru_cache(maxsize=8192)
def _is_multicast(host: str) -> bool:
    # called per packet and destination: parsing the address every time cost a third of the
    # sender's CPU (scripts/bench profile); a dotted IPv4 address is told by its first byte
    # (224-239) without `ipaddress`, which took ~8 ms for a new list of 1,000 speakers
    try:
        return 224 <= socket.inet_pton(socket.AF_INET, host)[0] <= 239
    except OSError:  # not a dotted IPv4 address
        pass
    try:
        return ipaddress.ip_address(host).is_multicast
    except ValueError:  # a host name: never a multicast group
        return False
