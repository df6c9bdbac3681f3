"""Dial-in: the pure messages of a speaker that connects out to its controller (protocol §8).

A speaker behind NAT opens a WebSocket to the controller. The two prove the pairing key to each
other over fresh nonces (`hello_mac`, `welcome_mac`); after that the channel carries the very
same signed control requests and MAC'd answers as the HTTP link (`request`/`answer` frames), so
freshness, replay refusal and answer authentication are exactly the direct link's. A *punch*
datagram, sent from the speaker's RTP socket to the controller's clock service, opens and keeps
the NAT's UDP mapping and tells the controller where the speaker's media go; the controller
acknowledges each one by UDP from the socket the media leave from, to that same RTP socket, and
the speaker's next punch says (signed) whether such an acknowledgement reached it lately. Media
take UDP only while both directions are proven this way: punches arriving prove the way up, the
flag they carry proves the way down. Otherwise (UDP blocked either way) the media take the
channel itself (`MediaWay`). No I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from typing import Any

VERSION = 1
PUNCH_MAGIC = b"BCP2"  # (BCP1 had no downlink flag)
ACK_MAGIC = b"BCA1"
PUNCH_MAC = 16
DOWNLINK = 0x01  # punch flag: an acknowledgement of a recent punch reached the speaker by UDP
PUNCH_EVERY = 5.0  # s between punches: well inside the shortest NAT UDP timeouts (~30 s)
# No accepted punch for this long and the UDP path is taken for gone: two punches missed in a row
# (at 5 % loss one time in 400) and half an interval of slack for a busy machine. The speaker
# judges its downlink the same way: no acknowledgement for this long and its punches say so.
PUNCH_LOST = 2.5 * PUNCH_EVERY
# A speaker playing a broadcast whose media stop coming by UDP does not wait PUNCH_LOST to say
# so: it punches at once (a probe), and if no acknowledgement answers within PROBE_WAIT its next
# punch says the way down is lost — the controller moves the media to the channel about
# MEDIA_GAP + PROBE_WAIT after they stopped arriving, instead of up to 12.5 s.
MEDIA_GAP = 1.0  # s without a media packet while playing (a frame comes every 20 ms)
PROBE_WAIT = 1.0  # s: a round trip on the worst village path is well under half of this
UDP, CHANNEL = "udp", "channel"
_LABEL = b"dial-in"


class DialInError(ValueError):
    """A dial-in message that is malformed or does not verify (the channel is closed)."""


def _key(pairing_key: bytes) -> bytes:
    return hmac.new(pairing_key, _LABEL, hashlib.sha256).digest()


def hello_mac(pairing_key: bytes, nonce: str, speaker_id: str) -> str:
    """The speaker's proof of its key over the controller's nonce."""
    msg = f"speaker\n{nonce}\n{speaker_id}".encode()
    return hmac.new(_key(pairing_key), msg, hashlib.sha256).hexdigest()


def welcome_mac(pairing_key: bytes, nonce: str, speaker_id: str) -> str:
    """The controller's proof of the same key over the speaker's nonce."""
    msg = f"controller\n{nonce}\n{speaker_id}".encode()
    return hmac.new(_key(pairing_key), msg, hashlib.sha256).hexdigest()


def check_mac(expected: str, got: object) -> bool:
    """Constant-time comparison of a hex MAC with whatever arrived."""
    return isinstance(got, str) and hmac.compare_digest(expected, got)


def encode_punch(
    speaker_id: str, pairing_key: bytes, ts: float, seq: int, downlink: bool = False
) -> bytes:
    """A punch: "BCP2" | u8 len | id | f64 ts | u32 seq | u8 flags | 16-byte MAC."""
    sid = speaker_id.encode()
    flags = DOWNLINK if downlink else 0
    body = PUNCH_MAGIC + bytes([len(sid)]) + sid + struct.pack("!dIB", ts, seq, flags)
    return body + hmac.new(_key(pairing_key), body, hashlib.sha256).digest()[:PUNCH_MAC]


@dataclass(frozen=True)
class Punch:
    """A verified punch."""

    speaker_id: str
    ts: float
    seq: int
    downlink: bool = False  # the speaker heard an acknowledgement by UDP lately


_FIXED = struct.calcsize("!dIB")


def punch_speaker(data: bytes) -> str:
    """The speaker id a punch claims (unverified), to look its key up."""
    if len(data) < 5 + _FIXED + PUNCH_MAC or not data.startswith(PUNCH_MAGIC):
        raise DialInError("not a punch")
    n = data[4]
    if len(data) != 5 + n + _FIXED + PUNCH_MAC:
        raise DialInError("punch has the wrong length")
    try:
        return data[5 : 5 + n].decode()
    except UnicodeDecodeError:
        raise DialInError("punch speaker id is not UTF-8") from None


def decode_punch(data: bytes, pairing_key: bytes) -> Punch:
    """Verify a punch's MAC and return it; DialInError if it does not verify."""
    sid = punch_speaker(data)
    body, mac = data[:-PUNCH_MAC], data[-PUNCH_MAC:]
    if not hmac.compare_digest(
        mac, hmac.new(_key(pairing_key), body, hashlib.sha256).digest()[:PUNCH_MAC]
    ):
        raise DialInError("punch MAC does not verify")
    ts, seq, flags = struct.unpack("!dIB", body[-_FIXED:])
    return Punch(sid, ts, seq, bool(flags & DOWNLINK))


def encode_ack(pairing_key: bytes, punch: Punch) -> bytes:
    """The controller's acknowledgement of one punch: "BCA1" | u32 seq | f64 ts | 16-byte MAC.

    It names the punch by its sequence number and its timestamp, so it acknowledges that punch
    alone: a recorded one replayed later (even to a restarted speaker whose numbering started
    over) matches nothing the speaker is waiting for."""
    body = ACK_MAGIC + struct.pack("!Id", punch.seq, punch.ts)
    return body + hmac.new(_key(pairing_key), body, hashlib.sha256).digest()[:PUNCH_MAC]


def decode_ack(data: bytes, pairing_key: bytes) -> tuple[int, float]:
    """(seq, ts) of the punch an acknowledgement names; DialInError if it does not verify."""
    if len(data) != 4 + 12 + PUNCH_MAC or not data.startswith(ACK_MAGIC):
        raise DialInError("not a punch acknowledgement")
    body, mac = data[:-PUNCH_MAC], data[-PUNCH_MAC:]
    if not hmac.compare_digest(
        mac, hmac.new(_key(pairing_key), body, hashlib.sha256).digest()[:PUNCH_MAC]
    ):
        raise DialInError("punch acknowledgement MAC does not verify")
    seq, ts = struct.unpack("!Id", body[4:])
    return seq, ts


class MediaWay:
    """Which way one dial-in speaker's media go: UDP while both directions are proven, else its
    channel.

    The speaker punches every PUNCH_EVERY from its RTP socket. A punch that reaches the controller
    proves the way up (and that the NAT mapping back to that socket is open); its DOWNLINK flag
    says whether the controller's acknowledgements, sent by UDP exactly as the media would go,
    reach the speaker. Media take UDP while punches arrive and the newest says the way down
    works, and switch back to it the moment such a punch arrives again; until then, once a punch
    says the way down is lost, and once PUNCH_LOST passes without one, they go as binary frames
    over the channel (docs/protocol.md §8). Pure: `now` is passed in (monotonic seconds).
    """

    def __init__(self, lost_after: float = PUNCH_LOST) -> None:
        self.lost_after = lost_after
        self.last_punch: float | None = None
        self.downlink = False  # what the newest punch said of the way down

    def punched(self, now: float, downlink: bool = True) -> None:
        """An authentic, fresh punch arrived, saying whether the way down works."""
        self.last_punch = now
        self.downlink = downlink

    def uplink(self, now: float) -> bool:
        """Whether punches arrive (the way up works), as of `now`."""
        return self.last_punch is not None and now - self.last_punch < self.lost_after

    def way(self, now: float) -> str:
        """UDP or CHANNEL, as of `now`."""
        return UDP if self.downlink and self.uplink(now) else CHANNEL

    def changes_at(self, now: float) -> float | None:
        """When `way` turns to CHANNEL unless another punch comes (None: it already has)."""
        if self.way(now) == CHANNEL:
            return None
        assert self.last_punch is not None
        return self.last_punch + self.lost_after


class Punches:
    """The speaker's side of the punches: their numbers and stamps, the acknowledgements that came
    back, and when the next punch is due and what it says of the way down.

    Punches go every PUNCH_EVERY, and at once when what they would say of the way down changes:
    the first acknowledgement after none (so the controller takes UDP within a round trip), and
    PUNCH_LOST after the last one (so it leaves UDP as soon as the speaker stops hearing it). A
    `probe` (media stopped arriving) sends one at once and takes the way down for lost if no
    acknowledgement follows within PROBE_WAIT. An acknowledgement counts only if it names a punch
    still in flight, by number and stamp. Pure: `now` is passed in (monotonic seconds).
    """

    def __init__(self, every: float = PUNCH_EVERY, lost_after: float = PUNCH_LOST) -> None:
        self.every, self.lost_after = every, lost_after
        self.seq = 0
        self._last_ts = float("-inf")
        self._flight: dict[int, tuple[float, float]] = {}  # seq → (ts, sent at)
        self.acked_at: float | None = None
        self.sent_at: float | None = None
        self.said = False  # what the last punch said of the way down
        self.probe_at: float | None = None  # media stopped: awaiting an acknowledgement since
        self.probe_wait = PROBE_WAIT

    def downlink(self, now: float) -> bool:
        """Whether an acknowledgement arrived within PUNCH_LOST (and since a probe, if one has
        been waiting PROBE_WAIT)."""
        if self.acked_at is None or now - self.acked_at >= self.lost_after:
            return False
        probe = self.probe_at
        return probe is None or self.acked_at >= probe or now - probe < self.probe_wait

    def probe(self, now: float) -> None:
        """Media stopped coming by UDP: ask again now whether the way down works."""
        if self.probe_at is None:
            self.probe_at = now

    def due(self, now: float) -> float:
        """When the next punch should go (`now` or earlier: at once)."""
        if self.sent_at is None or self.said != self.downlink(now):
            return now
        probe = self.probe_at
        if probe is not None and self.sent_at < probe:
            return now  # the probe itself
        due = self.sent_at + self.every
        if self.said and self.acked_at is not None:
            due = min(due, self.acked_at + self.lost_after)
        if self.said and probe is not None and self.acked_at is not None and self.acked_at < probe:
            due = min(due, probe + self.probe_wait)  # unanswered: say so when the wait is over
        return due

    def next(self, ts: float, now: float) -> tuple[int, float, bool]:
        """Number, stamp and downlink flag of the punch sent now; `ts` is the controller time
        the speaker believes it is, made strictly newer than the last (the controller refuses
        anything else as a replay, and an estimate may step back a little)."""
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        ts = max(ts, self._last_ts + 0.001)
        self._last_ts = ts
        fresh = {n: v for n, v in self._flight.items() if now - v[1] < self.lost_after}
        self._flight = fresh | {self.seq: (ts, now)}
        self.sent_at, self.said = now, self.downlink(now)
        return self.seq, ts, self.said

    def acked(self, seq: int, ts: float, now: float) -> bool:
        """An authentic acknowledgement of punch (seq, ts): False if it names none in flight
        (a replay, or a duplicate)."""
        sent = self._flight.get(seq)
        if sent is None or sent[0] != ts:
            return False
        del self._flight[seq]
        self.acked_at = now
        self.probe_at = None  # answered: the way down works
        return True

    def restart(self) -> None:
        """A new channel: nothing is proven until an acknowledgement comes back on it (one
        still on its way for an earlier punch is authentic, and counts)."""
        self.acked_at = self.sent_at = self.probe_at = None
        self.said = False


def request_frame(rid: int, method: str, path: str, auth: str, body: bytes) -> str:
    """A control request over the channel: the HTTP request's parts, signature included."""
    return json.dumps(
        {"t": "req", "id": rid, "method": method, "path": path, "auth": auth, "body": body.decode()}
    )


def answer_frame(rid: int, status: int, mac: str, body: bytes) -> str:
    """The speaker's answer: status, X-BC-MAC and body, exactly as its HTTP API gave them."""
    return json.dumps({"t": "res", "id": rid, "status": status, "mac": mac, "body": body.decode()})


def parse_frame(text: str) -> dict[str, Any]:
    """A channel frame as a dict with a known `t`; DialInError otherwise."""
    try:
        msg = json.loads(text)
    except ValueError:
        raise DialInError("frame is not JSON") from None
    if not isinstance(msg, dict) or msg.get("t") not in (
        "challenge",
        "hello",
        "welcome",
        "req",
        "res",
    ):
        raise DialInError("frame is not a dial-in message")
    return msg
