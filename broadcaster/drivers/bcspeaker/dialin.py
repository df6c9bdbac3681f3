"""The controller's side of dial-in: speakers behind NAT that connect out (docs/protocol.md §8).

`DialIn.handle` serves `GET /api/dial-in` (a WebSocket). After both sides proved the pairing key
over fresh nonces, the speaker's `Channel` is put in `SpeakerLink.channels`: from then on every
signed control request to that speaker (health polls, /play, /stop, /volume, /playout) travels
over it instead of HTTP, and its answer is verified exactly as an HTTP answer. A closed channel
stays in place, so requests fail at once as `speaker_unreachable` (the controller never tries to
connect into the village).

Media: the driver addresses a dial-in speaker's stream to a stable token, `("dial-in", n)`, and
`send_media` decides per packet where it really goes. Punches reaching the clock service tell
where the speaker's RTP socket appears from outside; each is acknowledged by UDP from the clock
socket (the one the media leave from) to that address, and the speaker's punches say whether the
acknowledgements reach it. While punches arrive and say so, SRTP goes there from the clock
socket. When none gets through, or the way back is blocked (a village router that lets UDP out
but not in), the same SRTP packets, unchanged, go as binary frames over the channel (`MediaWay`
decides). A token outlives channels, so a broadcast keeps flowing across a reconnect or a switch.

Clock: a speaker whose UDP brings no clock answers sends its signed clock requests ("BCK3") as
binary frames over the channel; each is handled exactly as one by UDP (answered, its heartbeat
taken: `driver.clock_request`) and the answer ("BCK2") goes back as a binary frame, ahead of any
media waiting. Media frames are SRTP (first byte 0x80-0xBF), never mistaken for either. Which way
the clock goes (`clock_way`) follows what arrives: the channel while requests come over it (the
speaker sends them there only when its UDP brings no answers), UDP once heartbeats come newer
than the last request over the channel.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from typing import Any

from aiohttp import WSMsgType, web

from broadcaster.drivers.bcspeaker.channel import Channel
from broadcaster.protocol import clock as clk
from broadcaster.protocol import dialin as msg
from broadcaster.protocol.auth import MAX_SKEW

log = logging.getLogger(__name__)
HEARTBEAT = 4.0  # s between WebSocket pings; a missing pong closes the channel after half that
HELLO_TIMEOUT = 10.0  # s a connecting speaker has to prove its key
TOKEN_HOST = "dial-in"  # the host part of a dial-in speaker's media token (never sent to)
WATCH_EVERY = 1.0  # s between looks at each speaker's ways (a change is logged and polled)


class DialIn:
    """Accepts dial-in channels and punches for the bcspeaker driver."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver  # BcSpeakerDriver (not imported: it imports this module)
        self.channels: dict[str, Channel] = driver.link.channels
        self.media: dict[str, tuple[str, int]] = {}  # speaker → observed (ip, port) of its RTP
        self.ways: dict[str, msg.MediaWay] = {}  # speaker → which way its media go now
        self.refused: Counter = Counter()  # punches (and odd channel frames) refused, by reason
        self.sessions: Counter = Counter()  # channels accepted, by speaker (reconnects show here)
        self.carried: Counter = Counter()  # (speaker, "udp"/"channel") → media packets sent
        self.carried_bytes: Counter = Counter()  # the same in bytes (SRTP, no UDP/IP or TCP)
        self.switches: Counter = Counter()  # speaker → times its media changed way
        self.clock_carried: Counter = Counter()  # speaker → clock requests over its channel
        self.acks: Counter = Counter()  # speaker → punches acknowledged by UDP
        self.mono = time.monotonic  # the clock of MediaWay (tests may replace it)
        self._tokens: dict[tuple[str, int], str] = {}  # media token → speaker
        self._token_of: dict[str, tuple[str, int]] = {}
        # (media, clock) ways last reported: a change is polled (the list shows it) and logged
        self._shown: dict[str, tuple[str, str | None]] = {}
        self._review: dict[str, asyncio.TimerHandle] = {}
        self._last_punch: dict[str, float] = {}
        self._channel_clock: dict[str, float] = {}  # newest clock request over a channel
        self._sockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task] = set()
        self._watch: asyncio.Task | None = None

    def dialed(self, speaker_id: str) -> bool:
        """True for a speaker attached through a channel (open or closed)."""
        return speaker_id in self.channels

    def cut_off(self, speaker_id: str) -> bool:
        """True for a dial-in speaker whose channel is closed: its heartbeats (UDP) may still
        arrive, but nothing can reach it, so it must not count as online."""
        chan = self.channels.get(speaker_id)
        return chan is not None and chan.closed

    def way(self, speaker_id: str) -> str | None:
        """The way a dial-in speaker's media go now (udp or channel); None for other speakers."""
        w = self.ways.get(speaker_id)
        return w.way(self.mono()) if w is not None else None

    def clock_way(self, speaker_id: str) -> str | None:
        """The way a dial-in speaker's clock exchange goes (udp or channel): the channel if a
        request came over it since the newest heartbeat was taken (a copy sent by UDP as well,
        the speaker's retry, may be the one taken), else UDP; None before the first heartbeat
        (and for other speakers)."""
        if speaker_id not in self.ways:
            return None
        # the driver's newest heartbeat (read only; `at` is time.monotonic() of its arrival)
        beat = getattr(self.driver, "_beats", {}).get(speaker_id)
        if beat is None:
            return None
        by_channel = self._channel_clock.get(speaker_id)
        return msg.CHANNEL if by_channel is not None and by_channel >= beat.at else msg.UDP

    def token(self, speaker_id: str) -> tuple[str, int]:
        """The stable address the driver streams a dial-in speaker's media to (`send_media`)."""
        tok = self._token_of.get(speaker_id)
        if tok is None:
            tok = (TOKEN_HOST, len(self._token_of) + 1)
            self._token_of[speaker_id], self._tokens[tok] = tok, speaker_id
        return tok

    def has_tokens(self) -> bool:
        """Whether any dial-in speaker has a media token (else no address can be one)."""
        return bool(self._tokens)

    def send_media(self, data: bytes, addr: tuple[str, int], clock: Any) -> bool:
        """Send one media packet if `addr` is a dial-in token: by UDP from the clock socket
        (`clock`, a UdpPort) while punches arrive, else over the channel. False: not ours."""
        sid = self._tokens.get(addr)
        if sid is None:
            return False
        way = self.way(sid)
        udp = self.media.get(sid)
        if way == msg.UDP and udp is not None and clock is not None:
            clock.sendto(data, udp)
        else:
            chan = self.channels.get(sid)
            if chan is None or chan.closed:
                return True  # unreachable until it dials in again: dropped, like UDP to nowhere
            way = msg.CHANNEL
            chan.send_media(data)
        self.carried[sid, way] += 1
        self.carried_bytes[sid, way] += len(data)
        return True

    def annotate(self, speaker_id: str, status: dict) -> dict:
        """Add `media` and `clock_way` (udp or channel) to a dial-in speaker's status for the
        speaker list (not `clock`: that is the speaker's own clock report, which the lead of
        each broadcast is chosen from)."""
        way, clock = self.way(speaker_id), self.clock_way(speaker_id)
        if way is not None:
            status["media"] = way
            if clock is not None:
                status["clock_way"] = clock
            self._shown[speaker_id] = (way, clock)
        return status

    def _note_way(self, sid: str) -> None:
        """Log and re-poll a change of way, so the speaker list shows it within a poll."""
        way, clock = self.way(sid), self.clock_way(sid)
        shown = self._shown.get(sid)
        if way is None or shown == (way, clock):
            return
        if shown is not None and shown[0] != way:
            self.switches[sid] += 1
            why = ""
            if way == msg.CHANNEL:
                up = self.ways[sid].uplink(self.mono())
                why = " (its punches say our UDP does not reach it)" if up else " (no punch)"
            log.info("media of dial-in speaker %s now go by %s%s", sid, way, why)
        if shown is not None and shown[1] is not None and shown[1] != clock:
            log.info("clock exchange of dial-in speaker %s now comes by %s", sid, clock)
        self._shown[sid] = (way, clock)
        task = asyncio.ensure_future(self.driver.poll(sid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_ways(self) -> None:
        """Look at every dial-in speaker's ways now and then: the clock's way changes with no
        event here (its heartbeats by UDP never pass through this module)."""
        while True:
            await asyncio.sleep(WATCH_EVERY)
            for sid in list(self.ways):
                self._note_way(sid)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """`GET /api/dial-in`: authenticate a speaker, then carry its control until it drops."""
        ws = web.WebSocketResponse(heartbeat=HEARTBEAT, max_msg_size=256 * 1024)
        await ws.prepare(request)
        self._sockets.add(ws)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ip, port = (peer[0], peer[1]) if peer else (request.remote or "?", 0)
        try:
            sid = await self._handshake(ws, f"{ip}:{port}")
            if sid is None:
                return ws
            chan = Channel(sid, ws)
            old = self.channels.get(sid)
            if old is not None:  # the speaker reconnected: its newest channel wins
                old.close()
                self._spawn_close(old.ws)
            self.channels[sid] = chan
            self.sessions[sid] += 1
            self.media.pop(sid, None)  # a new session may come through a new NAT mapping
            self.ways[sid] = msg.MediaWay()  # the channel carries media until a punch arrives
            self._last_punch.pop(sid, None)
            log.info("speaker %s dialed in from %s:%s", sid, ip, port)
            self.driver.dialed_in(sid, ip, port)
            if self._watch is None:
                self._watch = asyncio.ensure_future(self._watch_ways())
            self.driver.media_observed(sid, self.token(sid))
            try:
                await self._serve(ws, chan)
            finally:  # a closed connection may also cancel this handler (aiohttp does)
                chan.close()
                if self.channels.get(sid) is chan:
                    log.info("dial-in channel of %s closed", sid)
                    self.driver.channel_lost(sid)
            return ws
        finally:
            self._sockets.discard(ws)

    async def _serve(self, ws: web.WebSocketResponse, chan: Channel) -> None:
        """Hand answers to their requests, and clock requests to the clock service, until the
        channel closes."""
        async for m in ws:
            if m.type == WSMsgType.BINARY:
                self._clock_frame(m.data, chan)
                continue
            if m.type != WSMsgType.TEXT:
                continue
            try:
                frame = msg.parse_frame(m.data)
            except msg.DialInError:
                continue
            if frame["t"] == "res":
                chan.answer(frame)

    def _clock_frame(self, data: bytes, chan: Channel) -> None:
        """A clock request over the channel: answered and its heartbeat taken as by UDP, if it
        is this channel's speaker's (its MAC is checked there)."""
        try:
            mine = clk.request_speaker(data) == chan.speaker_id
        except clk.ClockMessageError:
            mine = False
        if not mine:
            self.refused["channel frame"] += 1  # (the only binary frames a speaker sends)
            return
        self.clock_carried[chan.speaker_id] += 1
        self.driver.clock_request(data, chan.send_clock)  # stamped on arrival: t2 is now
        self._channel_clock[chan.speaker_id] = time.monotonic()  # (after: ≥ the beat it gave)

    async def _handshake(self, ws: web.WebSocketResponse, where: str) -> str | None:
        """Challenge, hello, welcome; the speaker id, or None after refusing (and alarming)."""
        nonce = secrets.token_hex(16)
        await ws.send_json(
            {
                "t": "challenge",
                "v": msg.VERSION,
                "nonce": nonce,
                "clock_port": self.driver.clock_port,
            }
        )
        sid = None
        try:
            m = await ws.receive(timeout=HELLO_TIMEOUT)
            if m.type != WSMsgType.TEXT:
                raise msg.DialInError("no hello")
            hello = msg.parse_frame(m.data)
            sid = hello.get("speaker")
            key = self.driver.keys.get(sid) if isinstance(sid, str) else None
            sp = self.driver.site.speakers.get(sid) if isinstance(sid, str) else None
            if (
                not isinstance(sid, str)
                or key is None
                or sp is None
                or (sp.driver != self.driver.name)
            ):
                raise msg.DialInError(f"speaker {sid!r} is not a paired speaker of this site")
            if not msg.check_mac(msg.hello_mac(key, nonce, sid), hello.get("mac")):
                raise msg.DialInError(f"speaker {sid}: hello does not prove its pairing key")
            snonce = hello.get("nonce")
            if not isinstance(snonce, str) or not 16 <= len(snonce) <= 128:
                raise msg.DialInError(f"speaker {sid}: hello has no usable nonce")
        except (TimeoutError, msg.DialInError, TypeError, ValueError) as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("dial-in from %s refused: %s", where, reason)
            self.driver.dialin_refused(sid if isinstance(sid, str) else None, where, reason)
            await ws.close(code=4401, message=b"not authenticated")
            return None
        await ws.send_json({"t": "welcome", "mac": msg.welcome_mac(key, snonce, sid)})
        return sid

    def on_punch(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """A punch reached the clock service: note where this speaker's media must go, whether
        they can get there (its flag), and acknowledge it by UDP the way they would go."""
        try:
            sid = msg.punch_speaker(data)
            key = self.driver.keys.get(sid)
            if key is None:
                raise msg.DialInError("unknown speaker")
            p = msg.decode_punch(data, key)
        except msg.DialInError as exc:
            self.refused[str(exc)] += 1
            return
        chan = self.channels.get(sid)
        if chan is None or chan.closed:
            self.refused["no channel"] += 1  # media follow only a speaker whose channel is up
            return
        if abs(p.ts - now) > MAX_SKEW:
            self.refused["stale"] += 1
            return
        # strictly newer than the last one accepted: a captured punch replayed from elsewhere
        # cannot redirect the media (a relay on the path could, and could as well drop them)
        if p.ts <= self._last_punch.get(sid, float("-inf")):
            self.refused["replay"] += 1
            return
        self._last_punch[sid] = p.ts
        if self.media.get(sid) != addr:
            log.info("dial-in speaker %s: its RTP socket is at %s:%s", sid, *addr)
            self.media[sid] = addr
        sock = getattr(self.driver, "_clock", None)  # the clock socket: the media's own way out
        if sock is not None:
            sock.sendto(msg.encode_ack(key, p), addr)
            self.acks[sid] += 1
        self.ways.setdefault(sid, msg.MediaWay()).punched(self.mono(), p.downlink)
        self._note_way(sid)
        old = self._review.pop(sid, None)
        if old is not None:
            old.cancel()
        when = self.ways[sid].changes_at(self.mono())
        if when is not None:  # no further punch by then: the media fall back to the channel
            loop = asyncio.get_running_loop()
            self._review[sid] = loop.call_later(when - self.mono() + 0.05, self._note_way, sid)

    def _spawn_close(self, ws: web.WebSocketResponse) -> None:
        asyncio.ensure_future(ws.close(code=4000, message=b"replaced by a newer channel"))

    async def close(self) -> None:
        """Close every channel (the controller stops)."""
        for handle in self._review.values():
            handle.cancel()
        if self._watch is not None:
            self._watch.cancel()
        for task in list(self._tasks):
            task.cancel()
        for chan in self.channels.values():
            chan.close()
        await asyncio.gather(
            *(ws.close(code=1001, message=b"controller stopping") for ws in list(self._sockets)),
            return_exceptions=True,
        )
