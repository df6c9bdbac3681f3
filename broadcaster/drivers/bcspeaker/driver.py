"""The driver for our own endpoint (`broadcaster speaker`): see docs/protocol.md.

Speakers are found by mDNS (`_bcspeaker._tcp`) or a static address and kept on the controller's
clock by the clock service. They report in: every clock request carries a signed heartbeat, so a
speaker that heartbeats is never polled; its full status is fetched only when the heartbeat says
it changed. A speaker that falls silent gets signed status polls (spread evenly over the poll
period) until it answers or goes offline (presence.py). Audio is SRTP with a fresh key per
broadcast, unicast or per-zone multicast; a broadcast is set up in waves of signed /play
datagrams and its reports collected through a bounded number of slots.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import broadcaster.protocol.clock as clk
from broadcaster.drivers.base import Capability, Delivery, DriverHost, DriverOptions, Plan, Report
from broadcaster.drivers.bcspeaker.dialin import DialIn
from broadcaster.drivers.bcspeaker.link import WAVE, Call, SpeakerLink
from broadcaster.drivers.bcspeaker.presence import (  # noqa: F401 - Address, _Beat for tools
    BEAT_FRESH,
    VERIFY_LIMIT,
    Address,
    Presence,
    _Beat,
)
from broadcaster.errors import BroadcasterError, SpeakerError
from broadcaster.net.mdns import Browser
from broadcaster.net.udp import UdpPort, open_udp
from broadcaster.protocol.auth import WRAP_NONCE, wrap_key
from broadcaster.protocol.codecs import codec_by_name
from broadcaster.protocol.srtp import new_key
from broadcaster.protocol.stream import Destination, RtpSender
from broadcaster.site import Site

log = logging.getLogger(__name__)
POLL_INTERVAL = 2.0
REPORT_POLL = 0.15
REPORTS_TURN = 250  # playout records read per turn of the event loop (a district in turns)
# s: the clock service reads its socket at most this often while no answer is awaited (each turn
# of the loop costs more than the datagrams it serves: 6.1 % of a core idle at 1,000 speakers at
# 20 ms, 3.9 % at 50 ms); its kernel stamps keep the exchanges exact whatever the wait
CLOCK_READ = 0.05
TAGS_KEPT = 256  # broadcasts whose heartbeat tag is remembered (far more than ever run at once)


@dataclass
class _Run:
    """The driver's state for one broadcast."""

    broadcast: str
    sender: RtpSender
    routes: dict[str, tuple[str, int] | None] = field(default_factory=dict)


class BcSpeakerDriver(Presence):
    """Our own speakers: in step, authenticated, multicast-capable, reporting."""

    name = "bcspeaker"
    capabilities = frozenset(
        {
            Capability.IN_STEP,
            Capability.AUTHENTICATED,
            Capability.MULTICAST,
            Capability.VOLUME,
            Capability.REPORT,
            Capability.HEALTH,
            Capability.DISCOVERY,
            Capability.RESUME,
        }
    )

    def __init__(self, site: Site, keys: dict[str, bytes], options: DriverOptions) -> None:
        self.site = site
        self.keys = keys
        self.opt = options
        self.link = SpeakerLink(keys)
        self.addresses: dict[str, Address] = {}
        self.speakers: list[str] = []
        self._host: DriverHost | None = None
        self._clock: UdpPort | None = None
        self._browser: Browser | None = None
        self._tasks: set[asyncio.Task] = set()
        self._verifying: set[tuple[str, str, int]] = set()
        self._verify_slots = asyncio.Semaphore(VERIFY_LIMIT)
        self._refused: dict[tuple[str, str, int], float] = {}  # → monotonic time refused
        self._beats: dict[str, _Beat] = {}
        self._stale: set[str] = set()  # heartbeats say the status changed: poll, spread out
        self._tags: dict[int, str] = {}  # heartbeat tag → id of the broadcasts this driver set up
        self.dialin = DialIn(self)  # speakers behind NAT that connect out (GET /api/dial-in)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, host: DriverHost, speakers: list[str]) -> None:
        """Open the clock service, browse mDNS, and start the health polls."""
        self._host = host
        self.link.clock = host.now  # requests are stamped on the play clock the speakers follow
        self.speakers = sorted(speakers)
        for sid in self.speakers:
            addr = self.site.speakers[sid].address
            if addr:
                self.addresses[sid] = Address(addr[0], addr[1], source="static")
                host.speaker_located(sid, addr[0], addr[1], "static")
        self._clock = await open_udp(self.opt.interface, self.opt.clock_port, self._on_clock)
        # a thousand speakers' exchanges served a few per turn of the loop, not one each (their
        # kernel stamps keep them exact); control answers awaited are read as they come
        self._clock.read_spaced(lambda: 0.0 if self.link.awaiting() else CLOCK_READ)
        self.link.datagram_to = self._datagram_route
        self.link.send_datagram = self._send_control
        if self.opt.mdns:  # zeroconf in a process of its own (net/mdns.py)
            self._browser = Browser(
                [self.opt.interface],
                self.opt.site_tag or self.site.id,
                self._on_advert,
                self._on_withdrawn,
            )
            await self._browser.start()
        self._spawn(self._health_loop())

    async def close(self) -> None:
        """Stop polling and browsing; close sockets."""
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._browser:
            await self._browser.close()
        await self.dialin.close()
        if self._clock:
            self._clock.close()
        await self.link.close()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def clock_port(self) -> int:
        """The clock service's UDP port (dial-in speakers punch to it; media leave from it)."""
        return self._clock.port if self._clock else 0

    @property
    def clock_address(self) -> str:
        """host:port of the clock service speakers sync to."""
        assert self._clock is not None
        return f"{self.opt.interface}:{self._clock.port}"

    # --- dial-in (drivers/bcspeaker/dialin.py) -----------------------------------------------

    def dialed_in(self, sid: str, host: str, port: int) -> None:
        """A speaker's channel is up: its control goes through it; media once it has punched."""
        assert self._host is not None
        self.addresses[sid] = Address(host, port, None, "dial-in")
        self._host.speaker_located(sid, host, port, "dial-in")
        self._spawn(self.poll(sid))

    def channel_lost(self, sid: str) -> None:
        """Its channel closed: it stays a dial-in speaker, unreachable until it calls again."""
        assert self._host is not None
        self._host.speaker_failed(sid, "dial-in channel closed")

    def media_observed(self, sid: str, addr: tuple[str, int]) -> None:
        """Where the speaker's media are addressed: its token, routed by dialin.send_media."""
        a = self.addresses.get(sid)
        if a is not None and a.source == "dial-in":
            a.host, a.rtp_port = addr[0], addr[1]

    def dialin_refused(self, sid: str | None, where: str, reason: str) -> None:
        """A channel that failed authentication: closed, and an attack event."""
        assert self._host is not None
        who = {"speaker": sid} if sid in self.site.speakers else {}  # never an unknown name
        self._host.publish(
            "attack", **who, counters={"dialin_refused": 1}, address=where, reason=reason
        )

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        """Media to a dial-in speaker go its way (dialin.py: UDP from the clock socket, the one its
        NAT let out, or its channel); the rest from the core's media sockets."""
        if not self.dialin.send_media(data, addr, self._clock):
            assert self._host is not None
            self._host.send(data, addr)

    def _send_control(self, data: bytes, addr: tuple[str, int]) -> None:
        """A control datagram from the clock socket; its answer is read as soon as it comes."""
        assert self._clock is not None
        self._clock.sendto(data, addr)
        self._clock.read_now()

    def _send_many(self, data: bytes, addrs: list[tuple[str, int]]) -> None:
        """One packet to every destination: dial-in speakers their way, the rest at once."""
        if self.dialin.has_tokens():
            plain = []
            for a in addrs:
                if not self.dialin.send_media(data, a, self._clock):
                    plain.append(a)
            addrs = plain
        assert self._host is not None
        self._host.send_many(data, addrs)

    # --- broadcasts --------------------------------------------------------------------------

    def routes(self, speakers: list[str]) -> dict[str, tuple[str, int] | None]:
        """Multicast group per speaker where a zone's group covers all its online speakers.

        Linear in the site's size: each multicast zone is judged once, then each speaker walks
        its own path (root first, so the widest group that fits wins).
        """
        assert self._host is not None
        wanted = set(speakers)
        fits: dict[str, bool] = {}
        for zid, zone in self.site.zones.items():
            if zone.multicast is not None:
                fits[zid] = all(
                    s in wanted
                    or not self._host.is_online(s)
                    or self.site.speakers[s].driver != self.name
                    for s in self.site.speakers_under(zid)
                )
        out: dict[str, tuple[str, int] | None] = dict.fromkeys(speakers)
        if not any(fits.values()):
            return out  # every one unicast
        by_place: dict[str, tuple[str, int] | None] = {}  # a village's horns share one answer
        for sid in speakers:
            if self.dialin.dialed(sid):
                continue  # no multicast through NAT
            place = self.site.speakers[sid].place
            if place not in by_place:
                by_place[place] = next(
                    (self.site.zones[z].multicast for z in self.site.path(place) if fits.get(z)),
                    None,
                )
            out[sid] = by_place[place]
        return out

    async def prepare(self, plan: Plan, speakers: list[str]) -> Delivery:
        """Send every speaker its signed /play with the sealed key; collect who accepted."""
        assert self._host is not None
        codec = codec_by_name(plan.codec)
        sender = RtpSender(codec, self._send, key=new_key(), send_many=self._send_many)
        run = _Run(plan.broadcast, sender, self.routes(speakers))
        self._tags[clk.playing_tag(plan.broadcast)] = plan.broadcast
        while len(self._tags) > TAGS_KEPT:
            del self._tags[next(iter(self._tags))]
        if len(speakers) > WAVE:
            await asyncio.sleep(0)  # a district: its routes in one turn, its first wave in the next
        delivery = Delivery(self.name, sender, state=run)
        oks = await self._setup(plan, run, speakers, delivery)
        self._route(delivery, [sid for sid, ok in zip(speakers, oks) if ok])
        return delivery

    def _route(self, delivery: Delivery, speakers: list[str]) -> None:
        """Add the destinations of speakers that accepted (one per multicast group)."""
        run = delivery.state
        sender = run.sender
        # by RTP address, so a thousand speakers are routed in O(n), not a list scan each
        known = {(d.rtp, d.rtcp): d for d in sender.destinations}
        for sid in speakers:
            group, addr = run.routes[sid], self.addresses[sid]
            if group is None and addr.source == "dial-in":  # one NAT mapping: RTCP muxed
                assert addr.rtp_port is not None
                dest = Destination((addr.host, addr.rtp_port), (addr.host, addr.rtp_port))
            elif group is None:
                assert addr.rtp_port is not None
                dest = Destination((addr.host, addr.rtp_port), (addr.host, addr.rtp_port + 1))
            else:
                dest = Destination(group, group)
            key = (dest.rtp, dest.rtcp)
            if key not in known:  # one object per address: a cut removes it by identity
                known[key] = dest
                sender.destinations.append(dest)
            delivery.destinations[sid] = known[key]

    async def rejoin(self, delivery: Delivery, plan: Plan, speakers: list[str]) -> list[str]:
        """/play again with the running stream's key and clock mapping: the speakers take it up
        at the frame now due (a background broadcast resuming after an announcement)."""
        run = delivery.state
        for sid in speakers:
            run.routes[sid] = None  # unicast: the group may be held by the higher broadcast
            delivery.accepted.pop(sid, None)
        oks = await self._setup(plan, run, speakers, delivery, resume=True)
        back = [sid for sid, ok in zip(speakers, oks) if ok]
        self._route(delivery, back)
        return back

    async def _setup(
        self, plan: Plan, run: _Run, speakers: list[str], delivery: Delivery, resume: bool = False
    ) -> list[bool]:
        """Signed /play to every speaker at once (`SpeakerLink.call_many`); who accepted."""
        s = run.sender
        stream_key = s.key
        assert stream_key is not None
        asked = []
        nonces = secrets.token_bytes(WRAP_NONCE * len(speakers))  # one draw, not one per speaker

        def calls() -> Iterator[Call]:  # drawn a wave at a time: the keys are wrapped in turns
            for i, sid in enumerate(speakers):
                addr = self.addresses.get(sid)
                if addr is None or addr.rtp_port is None:
                    delivery.refused[sid] = ("unreachable", "address or RTP port not known yet")
                    continue
                group = run.routes[sid]
                body = {
                    "broadcast": plan.broadcast,
                    "codec": s.codec.name,
                    "ssrc": s.ssrc,
                    "base_ts": s.base_ts,
                    "base_time": s.base_time if resume else None,
                    "priority": plan.priority,
                    "key": wrap_key(
                        self.keys[sid],
                        stream_key,
                        f"{sid}/{plan.broadcast}",
                        nonces[i * WRAP_NONCE : (i + 1) * WRAP_NONCE],
                    ),
                    "volume": plan.volumes.get(sid),
                    "multicast": f"{group[0]}:{group[1]}" if group else None,
                }
                asked.append(sid)
                yield Call(sid, addr.host, addr.port, "POST", "/play", body)

        answers = await self.link.call_many(calls())
        for sid, answer in zip(asked, answers, strict=True):
            if isinstance(answer, SpeakerError):
                state = "refused" if answer.code in ("busy", "outranked") else "unreachable"
                delivery.refused[sid] = (state, answer.message)
                continue
            group = run.routes[sid]
            delivery.accepted[sid] = f"multicast {group[0]}:{group[1]}" if group else "unicast"
        return [sid in delivery.accepted for sid in speakers]

    async def stop(self, delivery: Delivery, speakers: list[str], reason: str) -> None:
        """Signed /stop to each speaker (in waves: `SpeakerLink.call_many`)."""
        bid = delivery.state.broadcast
        calls = []
        for sid in speakers:
            addr = self.addresses.get(sid)
            if addr is not None:
                calls.append(Call(sid, addr.host, addr.port, "POST", "/stop", {"broadcast": bid}))
        for call, answer in zip(calls, await self.link.call_many(calls), strict=True):
            if isinstance(answer, SpeakerError):
                log.info("stop %s on %s: %s", bid, call.speaker, answer.message)

    async def set_volume(self, speaker: str, volume: int) -> None:
        """Signed /volume."""
        addr = self.addresses[speaker]
        await self.link.call(speaker, addr.host, addr.port, "POST", "/volume", {"volume": volume})

    async def reports(
        self, delivery: Delivery, speakers: list[str], deadline: float
    ) -> dict[str, Report | BroadcasterError | None]:
        """Ask every speaker for its playout record (`SpeakerLink.call_many`: waves of signed
        datagrams), and again every REPORT_POLL those without one yet, until the deadline."""
        bid = delivery.state.broadcast
        out: dict[str, Report | BroadcasterError | None] = {}
        waiting = []
        for sid in speakers:
            if sid in self.addresses:
                waiting.append(sid)
            else:
                out[sid] = None
        while waiting:
            calls = []
            for sid in waiting:
                addr = self.addresses[sid]
                calls.append(Call(sid, addr.host, addr.port, "GET", f"/playout/{bid}"))
            answers = await self.link.call_many(calls)
            late, again = time.monotonic() > deadline, []
            for i, (sid, rep) in enumerate(zip(waiting, answers, strict=True)):
                if i and not i % REPORTS_TURN:
                    await asyncio.sleep(0)  # a district's records in turns, not one long block
                if isinstance(rep, SpeakerError):
                    if rep.code != "unknown_broadcast" or late:
                        out[sid] = rep
                        continue
                    rep = {"state": "unknown"}  # not begun yet: it may still
                if rep.get("state") == "done":
                    out[sid] = _report(rep)
                elif late:
                    out[sid] = None
                else:
                    again.append(sid)
            waiting = again
            if waiting:
                await asyncio.sleep(REPORT_POLL)
        return out


def _report(rep: dict[str, Any]) -> Report:
    """A speaker's finished playout record (GET /playout/<broadcast>) as the core reads it."""
    return Report(
        ended=str(rep.get("ended")),
        samples=int(rep.get("samples") or 0),
        packets=int(rep.get("packets") or 0),
        lost=int(rep.get("lost") or 0),
        late=int(rep.get("late") or 0),
        first_sample_at=rep.get("first_sample_at"),
        sample_rate=int(rep.get("sample_rate") or 8000),
        extra={k: rep.get(k) for k in ("volume", "clock_offset", "codec", "preempted_by")},
    )
