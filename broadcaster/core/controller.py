"""The controller: one operation per action (play, stop, list speakers ...), used by every front end."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import broadcaster.protocol.clock as clk
from broadcaster.core.broadcast import PRIORITIES, Broadcast, SpeakerResult, new_broadcast_id
from broadcaster.core.registry import Registry
from broadcaster.drivers.bcspeaker.link import SpeakerLink
from broadcaster.errors import BroadcasterError, NoSpeakers, NotFound, SpeakerError
from broadcaster.net.mdns import Advert, Browser, open_zeroconf
from broadcaster.net.udp import UdpPort, multicast_sender, open_udp
from broadcaster.protocol.auth import KeyStore, wrap_key
from broadcaster.protocol.codecs import FRAME_MS, Codec, codec_by_name, frames
from broadcaster.protocol.srtp import new_key
from broadcaster.protocol.stream import Destination, Stream
from broadcaster.site import Site

log = logging.getLogger(__name__)
POLL_INTERVAL = 2.0
EVENTS_KEPT = 1000


@dataclass
class ControllerConfig:
    """Settings of one controller; every address defaults to loopback."""

    data_dir: Path
    interface: str = "127.0.0.1"
    playout_delay: float = 0.1
    clock_port: int = 0
    site_tag: str | None = None
    mdns: bool = True
    poll_interval: float = POLL_INTERVAL


@dataclass
class Running:
    """A broadcast in progress: its stream and the speakers that accepted it."""

    broadcast: Broadcast
    stream: Stream | None = None
    accepted: list[str] = field(default_factory=list)
    task: asyncio.Task | None = None


class Controller:
    """Knows the site, finds and watches speakers, streams broadcasts to them."""

    def __init__(self, site: Site, config: ControllerConfig) -> None:
        self.site = site
        self.config = config
        self.tag = config.site_tag or site.id
        self.keys = KeyStore(config.data_dir / "speaker-keys.json").ensure(list(site.speakers))
        self.link = SpeakerLink(self.keys)
        self._logdir = config.data_dir / "log"
        self._logdir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry()
        self.events: deque[dict] = deque(maxlen=EVENTS_KEPT)
        self.broadcasts: dict[str, Broadcast] = {}
        self.running: dict[str, Running] = {}
        self._tasks: set[asyncio.Task] = set()
        self._azc = None
        self._browser: Browser | None = None
        self._clock: UdpPort | None = None
        self._usock: socket.socket | None = None
        self._msock: socket.socket | None = None
        for sp in site.speakers.values():
            st = self.registry.get(sp.id)
            st.assigned, st.kind, st.zone_path = True, sp.kind, site.path_names(sp.id)
            if sp.address:
                st.host, st.port, st.source = sp.address[0], sp.address[1], "static"

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open sockets, start discovery and the health loop."""
        iface = self.config.interface
        self._clock = await open_udp(iface, self.config.clock_port, self._on_clock)
        self._usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._usock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self._usock.bind((iface, 0))
        self._usock.setblocking(False)
        self._msock = multicast_sender(iface)
        if self.config.mdns:
            self._azc = open_zeroconf([iface])
            self._browser = Browser(self._azc, self.tag, self._on_advert)
            await self._browser.start()
        self._spawn(self._health_loop())

    async def close(self) -> None:
        """Stop broadcasts, discovery and sockets."""
        for bid in list(self.running):
            await self.stop(bid)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._browser:
            await self._browser.close()
        if self._azc:
            await self._azc.async_close()
        if self._clock:
            self._clock.close()
        for s in (self._usock, self._msock):
            if s:
                s.close()
        await self.link.close()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def clock_address(self) -> str:
        """host:port of the clock service speakers sync to."""
        assert self._clock is not None
        return f"{self.config.interface}:{self._clock.port}"

    def event(self, kind: str, **detail) -> None:
        """Record an event (speaker online/offline, attack seen, broadcast state)."""
        ev = {"at": time.time(), "kind": kind, **detail}
        self.events.append(ev)
        level = logging.WARNING if kind in ("attack", "offline") else logging.INFO
        log.log(level, "%s %s", kind, detail)
        self._journal("events.jsonl", ev)

    def _journal(self, name: str, record: dict) -> None:
        """Append one line to a log under DATA/log (the failure log IEC 60849 asks for)."""
        try:
            with open(self._logdir / name, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as exc:  # a full disk must not stop the broadcast
            log.error("cannot write %s: %s", name, exc)

    # --- discovery and health ----------------------------------------------------------------

    def _on_advert(self, advert: Advert) -> None:
        st = self.registry.get(advert.speaker_id)
        if st.source != "static":
            st.host, st.port, st.source = advert.host, advert.port, "mdns"
        st.rtp_port = advert.rtp_port
        if not st.assigned:
            st.kind = advert.kind
            st.last_error = "not in zones.yaml"
            self.event("unassigned", speaker=advert.speaker_id, address=f"{advert.host}:{advert.port}")
            return
        self._spawn(self._poll(advert.speaker_id))

    async def _health_loop(self) -> None:
        while True:
            ids = [s.id for s in self.registry.speakers.values() if s.host and s.assigned]
            await asyncio.gather(*(self._poll(sid) for sid in ids))
            await asyncio.sleep(self.config.poll_interval)

    async def _poll(self, sid: str) -> None:
        st = self.registry.get(sid)
        was = st.online
        try:
            status = await self.link.call(sid, st.host, st.port, "GET",
                                          f"/status?clock={self.clock_address}", timeout=1.5)
        except SpeakerError as exc:
            if self.registry.failed(sid, exc.message, time.time()):
                self.event("offline", speaker=sid, reason=exc.message)
            return
        grew = self.registry.seen(sid, status, time.time())
        if not was:
            self.event("online", speaker=sid)
        if grew:
            self.event("attack", speaker=sid, counters=grew)

    def _on_clock(self, data: bytes, addr: tuple) -> None:
        t2 = time.time()
        try:
            sid = clk.request_speaker(data)
            key = self.keys.get(sid)
            if key is None:
                return
            t1 = clk.decode_request(data, key)
        except clk.ClockMessageError:
            return
        assert self._clock is not None
        self._clock.sendto(clk.encode_response(key, t1, t2, time.time()), addr)

    # --- operations --------------------------------------------------------------------------

    def speakers(self) -> dict:
        """Every speaker with its health, and the counts."""
        rows = sorted(self.registry.speakers.values(), key=lambda s: (not s.assigned, s.id))
        return {"counts": self.registry.counts(), "speakers": [s.to_dict() for s in rows]}

    def broadcast(self, bid: str) -> Broadcast:
        """One broadcast by id."""
        try:
            return self.broadcasts[bid]
        except KeyError:
            raise NotFound(f"no broadcast with id {bid!r}") from None

    async def play(self, pcm: bytes, targets: list[str], *, codec: str = "pcmu",
                   source: str = "", priority: str = "announcement", owner: str = "system",
                   requested_at: float | None = None) -> Broadcast:
        """Start a broadcast of mono s16le PCM (at the codec's rate) to the targets."""
        cod = codec_by_name(codec)
        if priority not in PRIORITIES:
            raise BroadcasterError(f"unknown priority {priority!r}; use one of "
                                   f"{', '.join(PRIORITIES)}", code="bad_priority")
        wanted = self.site.resolve_many(targets)
        online = [sid for sid in sorted(wanted) if self.registry.get(sid).online]
        if not online:
            raise NoSpeakers(f"none of the {len(wanted)} speaker(s) in {', '.join(targets)} "
                             "is online")
        b = Broadcast(new_broadcast_id(), list(targets), source, cod.name, priority, owner,
                      requested_at=requested_at or time.time())
        for sid in sorted(wanted):
            b.results[sid] = SpeakerResult(sid)
            if sid not in online:
                b.results[sid].state, b.results[sid].error = "failed", "offline"
        self.broadcasts[b.id] = b
        run = Running(b)
        self.running[b.id] = run
        run.task = self._spawn(self._run(run, cod, pcm, online))
        return b

    async def stop(self, bid: str) -> Broadcast:
        """Stop a broadcast now; speakers cut it at once."""
        b = self.broadcast(bid)
        run = self.running.get(bid)
        if run is None:
            return b
        b.state = "stopped"
        if run.stream:
            run.stream.stopped = True
        await asyncio.gather(*(self._stop_speaker(b, sid) for sid in run.accepted))
        return b

    async def _stop_speaker(self, b: Broadcast, sid: str) -> None:
        st = self.registry.get(sid)
        try:
            await self.link.call(sid, st.host, st.port, "POST", "/stop", {"broadcast": b.id})
        except SpeakerError as exc:
            log.info("stop %s on %s: %s", b.id, sid, exc.message)

    # --- the broadcast itself ----------------------------------------------------------------

    def routes(self, speakers: list[str]) -> dict[str, tuple[str, int] | None]:
        """Multicast group per speaker where a zone's group covers all its online speakers."""
        chosen: dict[str, tuple[str, int] | None] = {sid: None for sid in speakers}
        wanted = set(speakers)
        for sid in speakers:
            for zid in self.site.path(sid):  # root first: the widest group that fits wins
                group = self.site.zones[zid].multicast
                if group is None:
                    continue
                members = {s for s in self.site.speakers_under(zid)
                           if self.registry.get(s).online}
                if members <= wanted:
                    chosen[sid] = group
                    break
        return chosen

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        sock = self._msock if _is_multicast(addr[0]) else self._usock
        assert sock is not None
        try:
            sock.sendto(data, addr)
        except BlockingIOError:
            log.debug("send buffer full, dropped a packet to %s", addr)

    async def _setup(self, b: Broadcast, stream: Stream, sid: str,
                     group: tuple[str, int] | None) -> bool:
        st = self.registry.get(sid)
        res = b.results[sid]
        body = {"broadcast": b.id, "codec": stream.codec.name, "ssrc": stream.ssrc,
                "base_ts": stream.base_ts, "base_time": None, "priority": PRIORITIES[b.priority],
                "key": wrap_key(self.keys[sid], stream.key, f"{sid}/{b.id}"),
                "volume": self.site.speakers[sid].volume,
                "multicast": f"{group[0]}:{group[1]}" if group else None}
        try:
            await self.link.call(sid, st.host, st.port, "POST", "/play", body)
        except SpeakerError as exc:
            res.state, res.error = "failed", exc.message
            return False
        res.state = "playing"
        res.route = f"multicast {group[0]}:{group[1]}" if group else "unicast"
        return True

    async def _run(self, run: Running, codec: Codec, pcm: bytes, speakers: list[str]) -> None:
        b = run.broadcast
        try:
            stream = Stream(codec, new_key(), 0.0, self._send, lead=self.config.playout_delay)
            run.stream = stream
            routes = self.routes(speakers)
            ok = await asyncio.gather(*(self._setup(b, stream, sid, routes[sid])
                                        for sid in speakers))
            run.accepted = [sid for sid, good in zip(speakers, ok) if good]
            if not run.accepted:
                raise NoSpeakers("no speaker accepted the broadcast")
            groups = set()
            for sid in run.accepted:
                st = self.registry.get(sid)
                if routes[sid] is None:
                    stream.destinations.append(Destination((st.host, st.rtp_port),
                                                           (st.host, st.rtp_port + 1)))
                elif routes[sid] not in groups:
                    groups.add(routes[sid])
                    stream.destinations.append(Destination(routes[sid], routes[sid]))
            if b.state == "stopped":
                return
            stream.base_time = time.time() + self.config.playout_delay
            b.started_at, b.state = stream.base_time, "playing"
            self.event("broadcast_started", broadcast=b.id, speakers=len(run.accepted))
            await stream.run(_aframes(frames(pcm, codec)))
            b.frames = stream.sent
            end = stream.base_time + stream.sent * FRAME_MS / 1000
            await asyncio.sleep(max(0.0, end - time.time()) + 0.15)
            await asyncio.gather(*(self._collect(b, sid) for sid in run.accepted))
            if b.state != "stopped":
                b.state = "done"
        except NoSpeakers as exc:
            b.state, b.error = "failed", exc.message
        except Exception as exc:  # a broadcast's failure is recorded, never raised into the loop
            log.exception("broadcast %s failed", b.id)
            b.state, b.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            b.ended_at = time.time()
            self.running.pop(b.id, None)
            self.event("broadcast_ended", broadcast=b.id, state=b.state)
            self._journal("broadcasts.jsonl", b.to_dict())

    async def _collect(self, b: Broadcast, sid: str) -> None:
        st = self.registry.get(sid)
        res = b.results[sid]
        for _ in range(20):
            try:
                rep = await self.link.call(sid, st.host, st.port, "GET", f"/playout/{b.id}")
            except SpeakerError as exc:
                res.state, res.error = "unreachable", exc.message
                return
            if rep.get("state") == "done":
                res.packets, res.lost = rep.get("packets"), rep.get("lost")
                res.first_sample_at = rep.get("first_sample_at")
                ended = rep.get("ended")
                res.state = {"end": "played", "stopped": "stopped",
                             "preempted": "preempted"}.get(ended, "played" if res.packets
                                                           else "failed")
                return
            await asyncio.sleep(0.15)
        res.state, res.error = "failed", "speaker never finished the broadcast"


@functools.lru_cache(maxsize=4096)
def _is_multicast(host: str) -> bool:
    # called per packet and destination: parsing the address every time cost a third of the
    # sender's CPU (scripts/bench profile)
    return ipaddress.ip_address(host).is_multicast


async def _aframes(items: list[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item
