"""The speaker endpoint: control API, SRTP receiver and the sound card of one IP speaker.

Clock sync and the speaker's anchored clock live in clocks.py, request checks in requests.py.
See docs/protocol.md. Every control request must carry a fresh HMAC signature (auth.py); every
audio packet must pass SRTP authentication with the broadcast key the controller sealed for this
speaker; anything else is dropped and counted, never played.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from aiohttp import web

from broadcaster.endpoint.clocks import ClockSync, LocalClock
from broadcaster.endpoint.outputs import PipeOutput
from broadcaster.endpoint.requests import PlayRequest, broadcast_of, volume_of
from broadcaster.endpoint.soundcard import SoundCard
from broadcaster.errors import AuthError, BroadcasterError
from broadcaster.net.udp import Impairment, UdpPort, open_multicast_receiver, open_udp_pair
from broadcaster.protocol.auth import ReplayGuard, response_mac, unwrap_key
from broadcaster.protocol.clock import OffsetEstimator, playing_tag
from broadcaster.protocol.control import (
    REQUEST_MAGIC,
    ControlAnswer,
    ControlDatagramError,
    ControlRequest,
)
from broadcaster.protocol.dialin import ACK_MAGIC
from broadcaster.protocol.playout import IDLE_END, Playout
from broadcaster.protocol.rtp import Bye, PacketError, RtpPacket, SenderReport, is_rtcp, parse_rtcp
from broadcaster.protocol.srtp import AUTH_TAG, Receiver, SrtpDrop

log = logging.getLogger(__name__)
WALL_WATCH = 1.0  # seconds between looks at the wall clock (a step is counted, never followed)
REPORTS_KEPT = 2000  # kept until long after the controller collects them
# counters that move with ordinary traffic: left out of the heartbeat's status fingerprint
TRAFFIC_COUNTERS = frozenset(
    {"rtp_received", "late_previous_broadcast", "broadcasts", "control_datagrams"}
)
# A broadcast that ended here (preempted, stopped, finished) or was refused may still be sent for
# a while: the controller keeps a preempted stream going until it learns, a village group carries
# it to every horn that joined, and its final reports come last. Its key is kept, looked up by
# SSRC, so its packets verify and count as late_previous_broadcast, never as an attack (a replay
# of them is still caught by SRTP's window). Kept until this long after its last packet, and only
# the most recent few.
LIGHT_SAMPLE = 50  # a light speaker authenticates every 50th packet (one a second)
TICK_BATCH = 50  # speakers ticked between turns of the event loop (a simulator runs hundreds)
# the tick of a process of light speakers: five frames' packets read and played in one go (one
# wake-up, one empty read, one play schedule for five), each still judged by its kernel stamp
LIGHT_TICK = 0.1
ANSWERS_KEPT = 64  # answers to control datagrams kept for the controller's repeats
PREVIOUS_GRACE = 60.0
DIALIN_IDLE_END = 5.0  # s of silence a dial-in speaker's broadcast outlasts (media changing ways)
PREVIOUS_KEPT = 32


@dataclass
class SpeakerSpec:
    """Everything one endpoint needs to start."""

    speaker_id: str
    kind: str
    key: bytes
    site: str
    host: str = "127.0.0.1"
    control_port: int = 0
    rtp_port: int = 0
    volume: int = 80
    record_dir: Path | None = None
    multicast_iface: str = "127.0.0.1"
    clock_offset: float = 0.0
    clock_ppm: float = 0.0  # a simulated speaker's quartz error (endpoint/clocks.py LocalClock)
    impair: Impairment | None = None
    output: str | None = None  # shell command of a player (outputs.output_command)
    output_latency: float = 0.0  # seconds the output takes from write to sound
    wall: Callable[[], float] = time.time  # the wall-clock source (tests step it)
    simulated: bool = False  # a simulator's speaker also reports first_sample_true
    # scale runs only: authenticate one packet in LIGHT_SAMPLE, take the rest by their clear
    # header, decode nothing (docs/scale.md); a light speaker says so in every report
    light: bool = False


class Outranked(BroadcasterError):
    """A play request below the priority of the stream that holds this speaker."""

    code = "outranked"
    status = 409


@dataclass
class _Known:
    """The key of a broadcast that is not (or no longer) playing here, kept to recognise it."""

    srtp: Receiver
    until: float  # monotonic instant after which its packets count as unauthenticated again


@dataclass
class Active:
    """The broadcast a speaker is playing now."""

    playout: Playout
    srtp: Receiver
    card: SoundCard
    priority: int
    mcast: UdpPort | None = None
    final_seen: bool = False


@dataclass
class Speaker:
    """One endpoint; many can run in one process (the simulator)."""

    spec: SpeakerSpec
    clock: LocalClock = field(init=False)
    counters: Counter = field(default_factory=Counter)
    reports: dict[str, dict] = field(default_factory=dict)
    active: Active | None = None
    volume: int = 80

    def __post_init__(self) -> None:
        s = self.spec
        self.clock = LocalClock(s.clock_offset, s.wall, rate_ppm=s.clock_ppm)
        self.sync = ClockSync(
            s.speaker_id, s.key, s.host, self.clock, self.counters, s.impair, self.describe
        )
        self.volume = s.volume
        self.guard = ReplayGuard()
        self._runner: web.AppRunner | None = None
        self._rtp: UdpPort | None = None
        self._rtcp: UdpPort | None = None
        self.control_port = 0
        self._known: OrderedDict[int, _Known] = OrderedDict()  # by SSRC, oldest use first
        self.mono = time.monotonic  # the clock of timeouts: a wall-clock step must not move them
        self.drain: Callable[[], int] = lambda: 0  # a light speaker's batched receive
        # what the RTP port hands its datagrams to (a light speaker sorts most by their header)
        self._on_datagram = self._on_light if s.light else self._on_rtp_or_rtcp
        self.on_punch_ack: Callable[[bytes], None] | None = None  # set by a dial-in channel
        self._answered: OrderedDict[tuple, bytes] = OrderedDict()  # datagram answers, to repeat
        self._answering: set[tuple] = set()
        self._wall_watch = 0.0

    @property
    def estimator(self) -> OffsetEstimator:
        """The current estimate of controller - local time."""
        return self.sync.estimator

    @property
    def rtp_port(self) -> int:
        """The bound RTP port (RTCP is the next one)."""
        return self._rtp.port if self._rtp else 0

    def send_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send from the RTP socket (dial-in punches: the NAT maps this socket's port)."""
        if self._rtp:
            self._rtp.sendto(data, addr)

    async def start(self) -> None:
        """Bind the RTP/RTCP sockets and the control API."""
        s = self.spec
        # RTCP may share the RTP port (RFC 5761): a dial-in speaker has one NAT mapping
        self._rtp, self._rtcp = await open_udp_pair(
            s.host, s.rtp_port, self._on_datagram, self._on_rtcp, s.impair
        )
        if s.light:  # while playing, read at each tick, not one loop turn per packet
            self.drain = self._rtp.batched()
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_route("*", "/{path:.*}", self._http)  # every request: self.control
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.control_port, reuse_address=True)
        await site.start()
        self.control_port = self._runner.addresses[0][1]

    async def close(self) -> None:
        """Stop everything; a broadcast in progress is finalized as stopped."""
        if self.active:
            self._finish("shutdown")
        self.sync.close()
        for port in (self._rtp, self._rtcp):
            if port:
                port.close()
        if self._runner:
            await self._runner.cleanup()

    # --- control API -------------------------------------------------------------------------

    async def control(
        self, method: str, path_qs: str, body: bytes, auth: str
    ) -> tuple[int, bytes, str]:
        """One signed control request, whatever carried it (HTTP, a datagram, the dial-in
        channel): checked, handled, and answered as (status, JSON body, MAC of the answer)."""
        url = urlsplit(path_qs)
        query = dict(parse_qsl(url.query))
        try:
            # freshness is judged on the controller's clock as best known (local before the
            # first sync): neither machine's wall clock, nor a step of it, matters
            nonce = self.guard.check(
                self.spec.key,
                method,
                path_qs,
                body,
                auth,
                self.sync.controller_now(),
                self.spec.speaker_id,
            )
        except AuthError as exc:
            if exc.code == "auth_stale" and not self.sync.fresh() and "clock" in query:
                # authentic (its MAC verified) but off our clock, and our estimate has gone
                # quiet: the controller restarted on another clock. Sync to the clock service it
                # names (its answers are MAC'd too); a replay cannot move a working sync.
                self._set_controller_clock(query["clock"])
            self.counters[f"control_refused_{exc.code}"] += 1
            self.counters["control_refused"] += 1
            log.info(
                "%s refused control request %s %s: %s",
                self.spec.speaker_id,
                method,
                url.path,
                exc.message,
            )
            return 401, _json(exc.to_dict()), ""  # refusals are not signed (protocol.md §2)
        if query.get("clock"):
            self._set_controller_clock(query["clock"])
        try:
            status, out = await self._route(method, url.path, body)
        except BroadcasterError as exc:
            status, out = exc.status, exc.to_dict()
        except (ValueError, KeyError, TypeError) as exc:
            status, out = 400, {"error": "bad_request", "message": str(exc)}
        data = _json(out)
        return status, data, response_mac(self.spec.key, nonce, status, data)

    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        if path.startswith("/playout/") and method == "GET":
            return self._playout(path[len("/playout/") :])
        handler = {
            ("GET", "/status"): self._status,
            ("POST", "/play"): self._play,
            ("POST", "/stop"): self._stop,
            ("POST", "/volume"): self._volume,
        }.get((method, path))
        if handler is None:
            return 404, {"error": "not_found", "message": f"no {method} {path} here"}
        return await handler(body)

    async def _http(self, request: web.Request) -> web.Response:
        status, data, mac = await self.control(
            request.method,
            request.path_qs,
            await request.read(),
            request.headers.get("Authorization", ""),
        )
        headers = {"X-BC-MAC": mac} if mac else None
        return web.Response(
            body=data, status=status, content_type="application/json", headers=headers
        )

    def _on_control_datagram(self, data: bytes, addr: tuple) -> None:
        """A control request in a datagram (protocol/control.py): a repeat of one already
        answered gets the same answer again; a repeat still being handled is dropped."""
        try:
            req = ControlRequest.decode(data)
        except ControlDatagramError:
            self.counters["dropped_malformed"] += 1
            return
        self.counters["control_datagrams"] += 1
        key = (req.id, req.auth)
        done = self._answered.get(key)
        if done is not None:
            self._send_answer(done, addr)
        elif key not in self._answering:
            self._answering.add(key)
            task = asyncio.ensure_future(self._answer_datagram(req, key, addr))
            task.add_done_callback(lambda _t: self._answering.discard(key))

    async def _answer_datagram(self, req: ControlRequest, key: tuple, addr: tuple) -> None:
        status, data, mac = await self.control(req.method, req.path, req.body, req.auth)
        answer = ControlAnswer(req.id, status, mac, data).encode()
        if status != 401:  # a refused request's repeat is refused again, never answered from here
            self._answered[key] = answer
            while len(self._answered) > ANSWERS_KEPT:
                self._answered.popitem(last=False)
        self._send_answer(answer, addr)

    def _send_answer(self, answer: bytes, addr: tuple) -> None:
        if self._rtp:
            self._rtp.sendto(answer, addr)

    def status(self) -> dict:
        """The speaker's state as the control API reports it."""
        a = self.active
        return {
            "id": self.spec.speaker_id,
            "kind": self.spec.kind,
            "volume": self.volume,
            "rtp_port": self.rtp_port,
            "playing": a.playout.broadcast if a else None,
            "priority": a.priority if a else None,
            "clock": {
                "synced": self.estimator.synced,
                "offset": self.estimator.offset,
                "rtt": self.estimator.rtt,
                "rtt_p90": self.estimator.rtt_p90,
            },
            "counters": dict(self.counters),
        }

    def describe(self) -> tuple[int, int, int]:
        """The heartbeat's account of this speaker: its RTP port, a fingerprint of the rest of
        /status (volume, the security counters; never the traffic itself, nor what plays, which
        changes on every speaker at once) and the tag of the broadcast playing."""
        a = self.active
        noted = sorted((k, v) for k, v in self.counters.items() if k not in TRAFFIC_COUNTERS)
        fingerprint = zlib.crc32(repr((self.volume, noted)).encode())
        return self.rtp_port, fingerprint, playing_tag(a.playout.broadcast if a else None)

    async def _status(self, body: bytes) -> tuple[int, dict]:
        return 200, self.status()

    async def _play(self, body: bytes) -> tuple[int, dict]:
        req = PlayRequest.parse(json.loads(body))
        bid, codec, ssrc, priority = req.broadcast, req.codec, req.ssrc, req.priority
        group = req.multicast
        key = unwrap_key(self.spec.key, req.key, f"{self.spec.speaker_id}/{bid}")
        srtp = Receiver(key)
        self._refuse_if_outranked(bid, ssrc, srtp, priority)
        mcast = None
        if group is not None:
            try:
                mcast = await open_multicast_receiver(
                    group[0],
                    group[1],
                    self.spec.multicast_iface,
                    self._on_datagram,
                    self.spec.impair,
                )
            except OSError as exc:
                raise BroadcasterError(
                    f"cannot join multicast {group[0]}:{group[1]}: {exc}", code="bad_multicast"
                ) from None
            try:  # another request may have taken the speaker while the group was joined
                self._refuse_if_outranked(bid, ssrc, srtp, priority)
            except Outranked:
                mcast.close()
                raise
        if self.active:
            self._finish("preempted", by=bid)
        playout = Playout(
            bid,
            codec,
            ssrc,
            req.base_ts,
            req.base_time,
            armed_at=self.clock.now(),
            join_late=req.base_time is not None,
            light=self.spec.light,
            # dialed in: media that stop by UDP move to the channel within a few seconds (a
            # probe, endpoint/dialin.py); the broadcast must outlast that, not end in silence
            idle_end=DIALIN_IDLE_END if self.on_punch_ack is not None else IDLE_END,
        )
        if req.volume is not None:
            self.volume = req.volume
        out = None
        if self.spec.output:
            out = PipeOutput(self.spec.output, codec.rate, self.volume, self.spec.speaker_id, bid)
        spec = self.spec
        card = SoundCard(spec.speaker_id, bid, codec.rate, spec.record_dir, out, not spec.light)
        self._known.pop(ssrc, None)
        self.active = Active(playout, srtp, card, priority, mcast)
        if spec.light and self._rtp is not None:  # its packets now wait for the ticker's drain
            self._rtp.batching(True)
        self.counters["broadcasts"] += 1
        return 200, {"ok": True, "rtp_port": self.rtp_port}

    def _refuse_if_outranked(self, bid: str, ssrc: int, srtp: Receiver, priority: int) -> None:
        """409 if the active stream has a higher priority; its stream is then known, not feared."""
        a = self.active
        if a is None or priority >= a.priority:
            return
        self.counters["play_outranked"] += 1
        self._remember(ssrc, srtp)  # a group it was sent to may reach us: not an attack
        raise Outranked(
            f"broadcast {a.playout.broadcast} holds this speaker at priority "
            f"{a.priority}; broadcast {bid} has priority {priority}",
            detail={"holder": a.playout.broadcast, "priority": a.priority},
        )

    async def _stop(self, body: bytes) -> tuple[int, dict]:
        bid = broadcast_of(json.loads(body))
        a = self.active
        if a and bid is not None and a.playout.broadcast == bid:
            self._finish("stopped")
            return 200, {"ok": True, "stopped": True}
        return 200, {"ok": True, "stopped": False}

    async def _volume(self, body: bytes) -> tuple[int, dict]:
        vol = volume_of(json.loads(body))
        self.volume = vol
        if self.active and self.active.card.output:
            self.active.card.output.volume = vol
        return 200, {"ok": True, "volume": vol}

    def _playout(self, bid: str) -> tuple[int, dict]:
        bid = unquote(bid)
        if self.active and self.active.playout.broadcast == bid:  # taken up again after a cut
            return 200, {"state": "playing"}
        if bid in self.reports:
            return 200, {"state": "done", **self.reports[bid]}
        return 404, {
            "state": "unknown",
            "error": "unknown_broadcast",
            "message": f"no playout record for broadcast {bid}",
        }

    # --- audio path --------------------------------------------------------------------------

    def _on_rtp_or_rtcp(self, data: bytes, addr: tuple) -> None:
        if data[:4] == REQUEST_MAGIC:  # a control request by datagram (never RTP: version 2)
            self._on_control_datagram(data, addr)
        elif data[:4] == ACK_MAGIC:  # a dial-in punch acknowledged (endpoint/dialin.py)
            if self.on_punch_ack is not None:
                self.on_punch_ack(data)
        elif is_rtcp(data):
            self._on_rtcp(data, addr)
        else:
            self._on_rtp(data, addr)

    def _unprotect(self, data: bytes, rtcp: bool) -> bytes | None:
        """The plain packet if it verifies under the current broadcast key; else count the drop."""
        a = self.active
        ssrc = _ssrc(data, rtcp)
        known = self._known.get(ssrc) if ssrc is not None else None
        reason = "auth"
        if a is not None and (known is None or ssrc == a.playout.ssrc):
            try:
                return a.srtp.rtcp(data) if rtcp else a.srtp.rtp(data)
            except SrtpDrop as drop:
                reason = drop.reason
        if reason == "auth" and known is not None and self.mono() < known.until:
            try:
                known.srtp.rtcp(data) if rtcp else known.srtp.rtp(data)
                self.counters["late_previous_broadcast"] += 1  # ours, not playing: not played
                self._remember(ssrc, known.srtp)  # type: ignore[arg-type]
                return None
            except SrtpDrop as drop:
                reason = drop.reason
        self.counters["dropped_replay" if reason == "replay" else "dropped_unauthenticated"] += 1
        return None

    def _remember(self, ssrc: int, srtp: Receiver) -> None:
        """Keep a stream's key for PREVIOUS_GRACE after its last packet; only the newest few."""
        self._known.pop(ssrc, None)
        self._known[ssrc] = _Known(srtp, self.mono() + PREVIOUS_GRACE)
        while len(self._known) > PREVIOUS_KEPT:
            self._known.popitem(last=False)

    def _on_light(self, data: bytes, addr: tuple) -> None:
        """A light speaker's datagram: an RTP packet of its broadcast is taken by its clear
        header (version 2, no extension or CSRC), but one in LIGHT_SAMPLE, which is
        authenticated as any speaker would; anything else goes the full way."""
        a = self.active
        if a is not None and len(data) > 12 + AUTH_TAG:
            b0, b1, seq, ts, ssrc = _RTP_HEAD.unpack_from(data)
            if (
                b0 & 0xDF == 0x80
                and not is_rtcp(data)
                and ssrc == a.playout.ssrc
                and seq % LIGHT_SAMPLE
            ):
                self.counters["rtp_received"] += 1
                a.playout.take(ssrc, b1 & 0x7F, ts, b"", self._arrival())
                return
        self._on_rtp_or_rtcp(data, addr)

    def _arrival(self) -> float:
        """When the packet being handled reached the socket, on the local clock: a light speaker
        reads its packets once a tick, and a packet that came in time counts as in time however
        late the rig's tick (drain() hands each over with its kernel stamp; any other was read
        as it came)."""
        return self.clock.now() - (self._rtp.stamped_age() if self._rtp else 0.0)

    def _on_rtp(self, data: bytes, addr: tuple) -> None:
        self.counters["rtp_received"] += 1
        a = self.active
        arrival = self._arrival()
        plain = self._unprotect(data, rtcp=False)
        if plain is None or a is None:
            return
        try:
            pkt = RtpPacket.parse(plain)
        except PacketError:
            self.counters["dropped_malformed"] += 1
            return
        a.playout.on_packet(pkt, arrival)

    def _on_rtcp(self, data: bytes, addr: tuple) -> None:
        plain = self._unprotect(data, rtcp=True)
        a = self.active
        if plain is None or a is None:
            return
        try:
            parts = parse_rtcp(plain)
        except PacketError:
            self.counters["dropped_malformed"] += 1
            return
        final = any(isinstance(p, Bye) and p.ssrc == a.playout.ssrc for p in parts)
        for p in parts:
            if isinstance(p, SenderReport):
                a.playout.on_sender_report(p, final=final)

    def idle(self) -> bool:
        """Nothing for a tick to do: no broadcast, and the wall clock not due to be watched."""
        return self.active is None and self.mono() < self._wall_watch

    def tick(self) -> None:
        """Let the sound card consume every frame whose instant has come."""
        if self.mono() >= self._wall_watch:
            self._wall_watch = self.mono() + WALL_WATCH
            self.sync.watch_wall()
        a = self.active
        if a is None:
            return
        now = self.clock.now()
        # an output with latency is written that much ahead, so sound leaves it at the instant
        offset = self.estimator.offset_at(now)
        for frame in a.playout.due(now + self.spec.output_latency, offset):
            a.card.play(frame)
        if a.playout.finished(now):
            self._finish(
                "stopped"
                if a.playout.stopped
                else "end"
                if a.playout.end_index is not None
                else "idle"
            )

    def _finish(self, how: str, by: str | None = None) -> None:
        """End the active broadcast here: release its socket, keep its key and its record."""
        a = self.active
        if a is None:
            return
        self.active = None
        if self.spec.light and self._rtp is not None:  # idle: a datagram wakes the loop itself
            self._rtp.batching(False)
        a.playout.stopped = True
        self._remember(a.playout.ssrc, a.srtp)
        if a.mcast:
            a.mcast.close()
        st = a.playout.stats
        report = {
            "broadcast": a.playout.broadcast,
            "speaker": self.spec.speaker_id,
            # controller time as the speaker knows it: the instant it played against
            "first_sample_at": (
                st.first_local + st.first_offset if st.first_local is not None else None
            ),
            "sample_rate": a.playout.codec.rate,
            "samples": a.card.samples,
            "packets": st.packets,
            "lost": st.lost,
            "late": st.late,
            "concealed": st.concealed,
            "fec": st.fec,
            "duplicates": st.duplicates,
            "foreign": st.foreign,
            "ended": how,
            "codec": a.playout.codec.name,
            "volume": self.volume,
            "clock_offset": self.estimator.offset,
            "clock_rtt": self.estimator.rtt,
            "priority": a.priority,
            "first_frame": a.playout.first_index,
        }
        if by is not None:
            report["preempted_by"] = by
        if self.spec.light:
            report["light"] = True
        if self.spec.simulated:  # the acoustic truth, which only a simulator knows (benchmarks)
            report["first_sample_true"] = (
                self.clock.to_true(st.first_local) if st.first_local is not None else None
            )
        a.card.close(report)
        self.reports[a.playout.broadcast] = report
        while len(self.reports) > REPORTS_KEPT:
            self.reports.pop(next(iter(self.reports)))

    # --- clock sync --------------------------------------------------------------------------

    def _set_controller_clock(self, addr: str) -> None:
        try:
            self.sync.set_target(addr)
        except ValueError:
            log.info("%s: bad clock address %r ignored", self.spec.speaker_id, addr)


class Ticker:
    """Drives the sound cards of every speaker in the process at a fine period."""

    def __init__(self, speakers: list[Speaker], period: float = 0.005) -> None:
        self.speakers = speakers
        self.period = period

    async def run(self) -> None:
        """Tick forever."""
        while True:
            await asyncio.sleep(self.period)
            n = 0
            for sp in self.speakers:
                if sp.idle():  # a thousand idle light speakers cost the rig next to nothing
                    continue
                n += 1
                if not n % TICK_BATCH:
                    await asyncio.sleep(0)  # let clock answers in: a late t4 reads as jitter
                try:
                    sp.drain()
                    sp.tick()
                except Exception:  # one speaker's fault must not silence the others
                    log.exception("speaker %s tick failed", sp.spec.speaker_id)


_RTP_HEAD = struct.Struct("!BBHII")  # first byte, marker and payload type, sequence, stamp, SSRC


def _ssrc(data: bytes, rtcp: bool) -> int | None:
    """The SSRC in a packet's clear header (RTP bytes 8-11; RTCP sender, bytes 4-7)."""
    at = 4 if rtcp else 8
    return int.from_bytes(data[at : at + 4], "big") if len(data) >= at + 4 else None


def _json(obj: dict) -> bytes:
    return json.dumps(obj).encode()
