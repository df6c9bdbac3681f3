"""The speaker's side of dial-in: connect out to the controller through NAT (docs/protocol.md §8).

`broadcaster speaker --controller HOST:PORT` runs a `DialOut` beside the endpoint: a WebSocket to
`GET /api/dial-in`, mutual proof of the pairing key, then every control request the controller
sends over it is handed to the speaker's own control API — the same middleware checks its
signature, freshness and nonce, and the same handlers answer and sign — and the answer goes back
as it was. Punches from the RTP socket keep the NAT's UDP mapping toward the controller open;
the controller acknowledges each one by UDP, back to that socket, and the next punch says whether
acknowledgements arrive (so the controller sends media by UDP only when they would reach it).
When UDP is blocked either way, the controller sends the SRTP packets as binary
frames over the channel instead; they enter the RTP socket's own receive path (the same SRTP
authentication, replay window and jitter buffer). The clock exchange follows the same way: when
its UDP brings no answers, `ClockSync` sends its signed requests as binary frames over the channel
and the controller's answers come back the same way (told from media by their magic). After a
drop it reconnects with capped, jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp

from broadcaster.endpoint.lifecycle import stop_event, write_ready
from broadcaster.endpoint.speaker import Speaker, SpeakerSpec, Ticker
from broadcaster.protocol import clock as clk
from broadcaster.protocol import dialin as msg

log = logging.getLogger(__name__)
HEARTBEAT = 4.0  # s between pings; no pong within half of it closes the channel
PUNCH_EVERY = msg.PUNCH_EVERY
BACKOFF_FIRST, BACKOFF_CAP = 0.5, 30.0  # s: first retry, longest wait between attempts
CONNECT_TIMEOUT = 10.0
MEDIA_CHECK = 0.25  # s between looks at whether a playing broadcast's media still arrive


def backoff(failures: int, rng: random.Random) -> float:
    """Seconds to wait after `failures` failed attempts in a row: doubling, capped, jittered
    (half to all of it, so horns that lost one router do not all call back at once)."""
    return min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** max(0, failures - 1)) * rng.uniform(0.5, 1.0)


class HandshakeFailed(Exception):
    """The controller did not prove the pairing key (or spoke nonsense): not our controller."""


class DialOut:
    """One speaker's persistent control channel to its controller."""

    def __init__(self, speaker: Speaker, host: str, port: int, path: str = "/api/dial-in") -> None:
        self.speaker = speaker
        self.url = f"http://{host}:{port}{path}"
        self.controller_host = host
        self.clock_port: int | None = None
        self.connected = asyncio.Event()
        self.sessions = 0  # channels the controller welcomed
        self.channel_packets = 0  # media packets that came over the channel (UDP was blocked)
        self.channel_clock = 0  # clock answers that came over the channel
        self.punches = msg.Punches()  # numbers, acknowledgements, what the next one says
        self.mono = time.monotonic
        self._poke = asyncio.Event()  # an acknowledgement changed what the next punch says
        self._rng = random.Random()
        self._local: Any = None  # the session to the speaker's own control API

    async def run(self) -> None:
        """Connect, serve, and reconnect after every drop, forever."""
        failures = 0
        async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as local:
            self._local = local
            while True:
                try:
                    await self._session(http)
                    failures = 0  # a session that was welcomed resets the backoff
                except (
                    TimeoutError,
                    aiohttp.ClientError,
                    OSError,
                    HandshakeFailed,
                    msg.DialInError,
                ) as exc:
                    log.info(
                        "%s: dial-in to %s failed: %s",
                        self.speaker.spec.speaker_id,
                        self.url,
                        exc or type(exc).__name__,
                    )
                failures += 1
                await asyncio.sleep(backoff(failures, self._rng))

    async def _session(self, http: aiohttp.ClientSession) -> None:
        sid, key = self.speaker.spec.speaker_id, self.speaker.spec.key
        async with http.ws_connect(
            self.url,
            heartbeat=HEARTBEAT,
            timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            max_msg_size=256 * 1024,
        ) as ws:
            challenge = msg.parse_frame(await ws.receive_str(timeout=CONNECT_TIMEOUT))
            if challenge["t"] != "challenge" or not isinstance(challenge.get("nonce"), str):
                raise HandshakeFailed("no challenge")
            mine = secrets.token_hex(16)
            await ws.send_json(
                {
                    "t": "hello",
                    "v": msg.VERSION,
                    "speaker": sid,
                    "nonce": mine,
                    "mac": msg.hello_mac(key, challenge["nonce"], sid),
                }
            )
            welcome = msg.parse_frame(await ws.receive_str(timeout=CONNECT_TIMEOUT))
            if not msg.check_mac(msg.welcome_mac(key, mine, sid), welcome.get("mac")):
                raise HandshakeFailed("the controller did not prove the pairing key")
            port = challenge.get("clock_port")
            self.clock_port = port if isinstance(port, int) and 0 < port < 65536 else None
            self.sessions += 1
            self.connected.set()
            log.info("%s: dialed in to %s", sid, self.url)
            self.punches.restart()  # the way down is proven afresh on every channel
            self.speaker.on_punch_ack = self._on_ack
            tasks: set[asyncio.Task] = {
                asyncio.ensure_future(self._punch()),
                asyncio.ensure_future(self._watch_media()),
            }

            def send_clock(req: bytes) -> bool:  # ClockSync's way when UDP brings no answers
                if ws.closed:
                    return False
                t = asyncio.ensure_future(self._send_clock(ws, req))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                return True

            self.speaker.sync.attach_channel(send_clock)
            try:
                async for m in ws:
                    if m.type == aiohttp.WSMsgType.BINARY:
                        if m.data.startswith(clk.RESP_MAGIC):
                            self.channel_clock += 1
                            self.speaker.sync.on_channel_answer(m.data)
                        else:
                            self._media(m.data)
                        continue
                    if m.type != aiohttp.WSMsgType.TEXT:
                        continue
                    try:
                        frame = msg.parse_frame(m.data)
                    except msg.DialInError:
                        continue
                    if frame["t"] == "req":
                        t = asyncio.ensure_future(self._answer(ws, frame))
                        tasks.add(t)
                        t.add_done_callback(tasks.discard)
            finally:
                self.speaker.sync.attach_channel(None)
                self.speaker.on_punch_ack = None
                self.connected.clear()
                for t in tasks:
                    t.cancel()
            log.info("%s: dial-in channel closed (%s)", sid, ws.close_code)

    @staticmethod
    async def _send_clock(ws: Any, req: bytes) -> None:
        """One clock request as a binary frame (a closing channel loses it, like UDP would)."""
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_bytes(req)

    def _media(self, packet: bytes) -> None:
        """An SRTP/SRTCP packet the controller sent over the channel: into the RTP socket's
        receive path, so it is checked, de-duplicated and played exactly like one from UDP."""
        self.channel_packets += 1
        self.speaker._on_rtp_or_rtcp(packet, (self.controller_host, 0))

    async def _answer(self, ws: Any, frame: dict) -> None:
        """Hand a request to the speaker's own control API (its checks, its handlers, its MAC)."""
        sp = self.speaker
        host = "127.0.0.1" if sp.spec.host in ("0.0.0.0", "") else sp.spec.host
        path, method = str(frame.get("path", "/")), str(frame.get("method", "GET"))
        body = str(frame.get("body", "")).encode()
        headers = {"Authorization": str(frame.get("auth", "")), "Content-Type": "application/json"}
        try:
            async with self._local.request(
                method,
                f"http://{host}:{sp.control_port}{path}",
                data=body or None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                data = await resp.read()
                out = msg.answer_frame(
                    int(frame.get("id", 0)), resp.status, resp.headers.get("X-BC-MAC", ""), data
                )
            await ws.send_str(out)
        except (TimeoutError, aiohttp.ClientError, OSError, UnicodeDecodeError) as exc:
            log.info("%s: request over the channel failed: %s", sp.spec.speaker_id, exc)

    async def _punch(self) -> None:
        """Keep the NAT's UDP mapping from the RTP socket to the controller open, and tell the
        controller whether its UDP reaches this socket (a punch at once when that changes)."""
        sp, st = self.speaker, self.punches
        while True:
            if not self.clock_port:
                await asyncio.sleep(PUNCH_EVERY)
                continue
            now = self.mono()
            wait = st.due(now) - now
            if wait > 0:
                self._poke.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), wait)
                continue
            seq, ts, down = st.next(sp.sync.controller_now(), now)
            sp.send_rtp(
                msg.encode_punch(sp.spec.speaker_id, sp.spec.key, ts, seq, down),
                (self.controller_host, self.clock_port),
            )

    async def _watch_media(self) -> None:
        """While a broadcast plays and its media come by UDP, notice when they stop (a village
        router that stops letting the controller's datagrams in) and probe at once, so the
        controller moves them to the channel within seconds instead of PUNCH_LOST."""
        sp, st = self.speaker, self.punches
        seen, since, playing = -1, self.mono(), None
        while True:
            await asyncio.sleep(MEDIA_CHECK)
            now, a = self.mono(), sp.active
            count = sp.counters["rtp_received"]
            if a is None or a.final_seen or a is not playing or count != seen:
                seen, since, playing = count, now, a  # nothing expected, or media are coming
                continue
            if st.said and now - since >= msg.MEDIA_GAP and st.probe_at is None:
                log.info("%s: media stopped coming by UDP: probing", sp.spec.speaker_id)
                st.probe(now)
                self._poke.set()
                since = now  # a gap in the source itself: one probe per MEDIA_GAP at most

    def _on_ack(self, data: bytes) -> None:
        """A punch acknowledged by UDP: the controller's datagrams reach the RTP socket."""
        sp = self.speaker
        try:
            seq, ts = msg.decode_ack(data, sp.spec.key)
        except msg.DialInError:
            sp.counters["dropped_unauthenticated"] += 1
            return
        now = self.mono()
        was = self.punches.downlink(now)
        if not self.punches.acked(seq, ts, now):
            sp.counters["dropped_replay"] += 1  # names no punch in flight
            return
        if not was:
            log.info("%s: UDP from the controller reaches the RTP socket", sp.spec.speaker_id)
            self._poke.set()  # say so now: the controller sends media by UDP from then on


def parse_controller(text: str) -> tuple[str, int]:
    """HOST:PORT of the controller to dial; ValueError naming what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 10.0.0.1:8600)")
    return host, int(port)


async def run_dialin(
    specs: list[SpeakerSpec], controller: tuple[str, int], ready_file: Path | None = None
) -> None:
    """Run speakers that dial their controller (one, or a simulated village), until SIGINT or
    SIGTERM."""
    speakers = [Speaker(spec) for spec in specs]
    await asyncio.gather(*(sp.start() for sp in speakers))
    ticker = asyncio.ensure_future(Ticker(speakers).run())
    dials = [asyncio.ensure_future(DialOut(sp, *controller).run()) for sp in speakers]
    where = f"{controller[0]}:{controller[1]}"
    if ready_file:
        info = [
            {"id": sp.spec.speaker_id, "host": sp.spec.host, "port": sp.control_port}
            | {"rtp": sp.rtp_port, "dial_in": where}
            for sp in speakers
        ]
        write_ready(ready_file, {"speakers": info})
    who = specs[0].speaker_id if len(specs) == 1 else f"{len(specs)} speakers"
    print(f"READY {who} dialing {where}", flush=True)
    stop = stop_event()
    try:
        await stop.wait()
    finally:
        for t in (ticker, *dials):
            t.cancel()
        await asyncio.gather(ticker, *dials, return_exceptions=True)
        await asyncio.gather(*(sp.close() for sp in speakers), return_exceptions=True)
