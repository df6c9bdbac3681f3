"""Where each of our speakers is and whether it is alive: the bcspeaker driver's discovery
(mDNS adverts verified by a signed status) and health (heartbeats carried by the clock exchange,
status polls spread over the period for those that fall silent). A part of `BcSpeakerDriver`
(driver.py), which holds the state these methods keep; see docs/protocol.md §3.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import broadcaster.protocol.clock as clk
from broadcaster.errors import SpeakerError
from broadcaster.net.mdns import Advert
from broadcaster.protocol.control import ANSWER_MAGIC
from broadcaster.protocol.dialin import PUNCH_MAGIC

if TYPE_CHECKING:
    from broadcaster.drivers.base import DriverHost, DriverOptions
    from broadcaster.drivers.bcspeaker.dialin import DialIn
    from broadcaster.drivers.bcspeaker.link import SpeakerLink
    from broadcaster.net.udp import UdpPort
    from broadcaster.site import Site

log = logging.getLogger(__name__)
VERIFY_AGAIN = 30.0  # s before an address that failed verification is checked again
VERIFY_RETRIES = (1.0, 2.0, 4.0, 8.0)  # waits when an advertised address does not answer
# requests in flight that verify adverts: a flood of adverts cannot flood the network, and the
# answers that come back in one turn of the loop stay few. When 1,000 speakers are found at once,
# 32 in flight made the loop's worst lag 15-27 ms, of its own work; 8 made it 5-9 ms, and finding
# them all took about as long (docs/scale.md, "Measured an eleventh time")
VERIFY_LIMIT = 8
# verifications waiting or in flight beyond which an advert of a speaker already found (a move)
# waits for its next advert: first sightings come first
VERIFY_BACKLOG = 32
# A heartbeat newer than this spares the speaker its status poll: the spaced exchange comes every
# 4 s, so one lost (or a second late) heartbeat already brings a poll, and a silent speaker is
# offline within BEAT_FRESH + DUE_CHECK + the poll's ~2.4 s of retries and timeout (OFFLINE_AFTER,
# 6 s since the last one heard, has passed by then): under 8 s of its last heartbeat.
BEAT_FRESH = 5.0
DUE_CHECK = 0.5  # s between looks for speakers due a poll, while none is
BEAT_SKEW = 5.0  # s: a heartbeat whose controller-time stamp is further off is stale (a replay)


@dataclass
class _Beat:
    """The newest heartbeat of one speaker."""

    boot: int
    seq: int
    state: int
    at: float  # monotonic
    datagrams: bool = False  # it takes control requests by datagram


@dataclass
class Address:
    """Where one speaker's control API and RTP port are."""

    host: str
    port: int
    rtp_port: int | None = None
    source: str = "static"


class Presence:
    """Discovery and health of the bcspeaker driver (mixed into `BcSpeakerDriver`)."""

    name: str
    site: Site
    keys: dict[str, bytes]
    opt: DriverOptions
    link: SpeakerLink
    dialin: DialIn
    addresses: dict[str, Address]
    speakers: list[str]
    _host: DriverHost | None
    _clock: UdpPort | None
    _verifying: set[tuple[str, str, int]]
    _verify_slots: asyncio.Semaphore
    _refused: dict[tuple[str, str, int], float]
    _beats: dict[str, _Beat]
    _stale: set[str]
    _tags: dict[int, str]

    def _spawn(self, coro: Any) -> asyncio.Task:
        raise NotImplementedError  # the driver's

    @property
    def clock_address(self) -> str:
        raise NotImplementedError  # the driver's

    def _on_advert(self, advert: Advert) -> None:
        """An advert is a hint: a speaker moves only to an address that proves it holds the
        speaker's key (signed status, answer MAC verified); see docs/security.md."""
        assert self._host is not None
        sid = advert.speaker_id
        if sid not in self.site.speakers:
            self._host.publish(
                "unassigned",
                speaker=sid,
                speaker_kind=advert.kind,
                address=f"{advert.host}:{advert.port}",
            )
            return
        if self.site.speakers[sid].driver != self.name:
            return
        known = self.addresses.get(sid)
        if known is not None and (known.host, known.port) == (advert.host, advert.port):
            self._spawn(self.poll(sid))
            return
        where = (sid, advert.host, advert.port)
        if where in self._verifying or (
            time.monotonic() - self._refused.get(where, -VERIFY_AGAIN) < VERIFY_AGAIN
        ):
            return
        if known is not None and len(self._verifying) >= VERIFY_BACKLOG:
            return  # a flood of adverts for speakers already found: those can wait for the next
        self._verifying.add(where)
        self._spawn(self._verify(advert))

    async def _verify(self, advert: Advert) -> None:
        """Ask the advertised address for this speaker's signed status; move only if it verifies."""
        assert self._host is not None
        sid, addr = advert.speaker_id, f"{advert.host}:{advert.port}"
        where = (sid, advert.host, advert.port)
        try:
            status = await self._verify_status(advert)  # a first sighting is never dropped
            if status is None:
                return
        finally:
            self._verifying.discard(where)
        self._refused.pop(where, None)
        known = self.addresses.get(sid)
        if known is not None and known.source == "static":
            log.info(
                "speaker %s also answers at advertised %s; keeping zones.yaml's %s:%s",
                sid,
                addr,
                known.host,
                known.port,
            )
            return
        rtp = status.get("rtp_port")
        rtp_port = rtp if isinstance(rtp, int) and 0 < rtp < 65535 else advert.rtp_port
        self.addresses[sid] = Address(advert.host, advert.port, rtp_port, "mdns")
        self._host.speaker_located(sid, advert.host, advert.port, "mdns")
        if known is not None:
            self._host.publish(
                "speaker_moved", speaker=sid, address=addr, previous=f"{known.host}:{known.port}"
            )
        self._host.speaker_seen(sid, status)

    async def _verify_status(self, advert: Advert) -> dict | None:
        """The advertised address's signed status, or None (then it was reported unverified)."""
        sid = advert.speaker_id
        for wait in (*VERIFY_RETRIES, None):
            try:
                # a slot for the request only: an address that does not answer waits for its
                # next try without holding one, so a dead speaker's stale advert delays nobody
                async with self._verify_slots:
                    status = await self.link.call(
                        sid,
                        advert.host,
                        advert.port,
                        "GET",
                        f"/status?clock={self.clock_address}",
                        timeout=1.5,
                    )
                if not isinstance(status, dict):
                    raise SpeakerError(
                        f"speaker {sid}: status answer is not a JSON object",
                        code="speaker_malformed",
                    )
                return status
            except SpeakerError as exc:
                if exc.code == "speaker_unreachable" and wait is not None:
                    await asyncio.sleep(wait)  # a speaker may advertise as it starts
                    continue
                self._unverified(advert, exc)
                return None
        return None

    def _unverified(self, advert: Advert, exc: SpeakerError) -> None:
        """An advert whose address did not prove the key: nothing moves; an answer without the
        key is an alarm, silence only a note (a stale advert, a speaker restarting)."""
        assert self._host is not None
        now = time.monotonic()
        self._refused = {w: t for w, t in self._refused.items() if now - t < VERIFY_AGAIN}
        self._refused[(advert.speaker_id, advert.host, advert.port)] = now
        known = self.addresses.get(advert.speaker_id)
        detail = {
            "speaker": advert.speaker_id,
            "address": f"{advert.host}:{advert.port}",
            "current": f"{known.host}:{known.port}" if known else None,
            "reason": exc.message,
        }
        if exc.code == "speaker_unreachable":
            self._host.publish("advert_unverified", **detail)
        else:
            self._host.publish("advert_conflict", **detail)

    def _on_withdrawn(self, advert: Advert) -> None:
        """A withdrawn advert is noted; whether the speaker is offline, its health polls decide."""
        assert self._host is not None
        sid = advert.speaker_id
        known = self.addresses.get(sid)
        if sid not in self.site.speakers or self.site.speakers[sid].driver != self.name:
            return
        self._refused.pop((sid, advert.host, advert.port), None)
        current = known is not None and (known.host, known.port) == (advert.host, advert.port)
        self._host.publish(
            "advert_withdrawn", speaker=sid, address=f"{advert.host}:{advert.port}", current=current
        )
        if current:
            self._spawn(self.poll(sid))

    def _due_polls(self) -> list[str]:
        """Located speakers with no fresh heartbeat, or whose heartbeat says their status
        changed: the ones to poll this period."""
        now = time.monotonic()
        beats, stale = self._beats, self._stale
        self._stale = set()
        return [
            s
            for s in self.speakers
            if s in self.addresses
            and (s in stale or s not in beats or now - beats[s].at >= BEAT_FRESH)
        ]

    async def _health_loop(self) -> None:
        """Each period, poll the speakers that did not report in, spread evenly: never a burst."""
        while True:
            ids = self._due_polls()
            if not ids:
                await asyncio.sleep(min(DUE_CHECK, self.opt.poll_interval))
                continue
            gap = self.opt.poll_interval / len(ids)
            for sid in ids:
                self._spawn(self.poll(sid))
                await asyncio.sleep(gap)

    async def poll(self, sid: str) -> None:
        """One status request; any fault, even a malformed answer, is this speaker's alone."""
        assert self._host is not None
        addr = self.addresses.get(sid)
        if addr is None:
            return
        try:
            status = await self.link.call(
                sid, addr.host, addr.port, "GET", f"/status?clock={self.clock_address}", timeout=1.5
            )
            if not isinstance(status, dict):
                raise SpeakerError(
                    f"speaker {sid}: status answer is not a JSON object", code="speaker_malformed"
                )
            rtp = status.get("rtp_port")
            if isinstance(rtp, int) and 0 < rtp < 65535 and addr.source != "dial-in":
                addr.rtp_port = rtp  # (behind NAT the port seen from outside is what counts)
            self._host.speaker_seen(sid, self.dialin.annotate(sid, status))
        except SpeakerError as exc:
            self._host.speaker_failed(sid, exc.message)
        except Exception as exc:  # a malformed answer must not end monitoring of anyone
            log.warning("status of %s: unexpected %s", sid, exc, exc_info=True)
            self._host.speaker_failed(sid, f"malformed status answer ({type(exc).__name__})")

    def _on_clock(self, data: bytes, addr: tuple) -> None:
        assert self._host is not None
        t2 = self._host.now()  # the play clock: a wall-clock step never reaches the speakers
        if data.startswith(PUNCH_MAGIC):
            self.dialin.on_punch(data, addr, t2)
            return
        if data.startswith(ANSWER_MAGIC):
            self.link.on_answer(data, addr)
            return
        port = self._clock
        assert port is not None
        # t2 is when the kernel had the request: a busy loop delays its answer (t3 says so),
        # never biases the speaker's offset
        t2 -= port.arrival_age()
        self.clock_request(data, lambda answer: port.sendto(answer, addr), t2)

    def clock_request(
        self, data: bytes, reply: Callable[[bytes], None], t2: float | None = None
    ) -> None:
        """A signed clock request (by UDP, or over a dial-in channel): answer by `reply`, and
        take the heartbeat it carries. `t2`: when it arrived (default now, on the play clock)."""
        assert self._host is not None
        t2 = self._host.now() if t2 is None else t2
        try:
            sid = clk.request_speaker(data)
            key = self.keys.get(sid)
            if key is None:
                return
            t1, beat = clk.decode_request(data, key)
        except clk.ClockMessageError:
            return
        reply(clk.encode_response(key, t1, t2, self._host.now()))
        self._heartbeat(sid, beat, t2)

    def _heartbeat(self, sid: str, beat: clk.Heartbeat, now: float) -> None:
        """A signed heartbeat counts once the speaker is located and synced, and only if it is
        fresh (its controller-time stamp within BEAT_SKEW) and newer than the last one of the same
        boot: a recorded one replayed keeps no dead speaker online."""
        assert self._host is not None
        addr = self.addresses.get(sid)
        if addr is None or not beat.synced or abs(beat.controller_time - now) > BEAT_SKEW:
            return
        if self.dialin.cut_off(sid):  # alive, but not controllable until it dials in again
            return
        prev = self._beats.get(sid)
        if prev is not None and prev.boot == beat.boot and beat.seq <= prev.seq:
            return
        self._beats[sid] = _Beat(beat.boot, beat.seq, beat.state, time.monotonic(), beat.datagrams)
        if 0 < beat.rtp_port < 65535 and addr.source != "dial-in":
            addr.rtp_port = beat.rtp_port
        status = beat.status(self._tags)
        self._host.speaker_alive(sid, status)
        if (prev is not None and (prev.boot, prev.state) != (beat.boot, beat.state)) or (
            "playing" not in status
        ):
            self._stale.add(sid)  # something /status says has changed: fetch it once, spread

    def _datagram_route(self, sid: str, host: str, port: int) -> tuple[str, int] | None:
        """Where a speaker takes control datagrams: its RTP port, while it heartbeats (its UDP
        path works) and says it takes them, for a request to the control address it is known
        at (a request to any other address — verifying an advert — goes there by HTTP); None
        sends the request by HTTP (or its channel)."""
        beat, addr = self._beats.get(sid), self.addresses.get(sid)
        if beat is None or not beat.datagrams or addr is None or addr.rtp_port is None:
            return None
        if (addr.host, addr.port) != (host, port):
            return None
        if addr.source == "dial-in" or time.monotonic() - beat.at >= BEAT_FRESH:
            return None
        return addr.host, addr.rtp_port
