"""Dial-in: the pure messages of a speaker that connects out to its controller (protocol §8).

A speaker behind NAT opens a WebSocket to the controller. The two prove the pairing key to each
other over fresh nonces (`hello_mac`, `welcome_mac`); after that the channel carries the very
same signed control requests and MAC'd answers as the HTTP link (`request`/`answer` frames), so
freshness, replay refusal and answer authentication are exactly the direct link's. A *punch*
datagram, sent from the speaker's RTP socket to the controller's clock service, opens and keeps
the NAT's UDP mapping and tells the controller where the speaker's media go. When no punch gets
through (UDP blocked on the way), the media take the channel itself (`MediaWay`). No I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from typing import Any

VERSION = 1
PUNCH_MAGIC = b"BCP1"
PUNCH_MAC = 16
PUNCH_EVERY = 5.0  # s between punches: well inside the shortest NAT UDP timeouts (~30 s)
# No accepted punch for this long and the UDP path is taken for gone: two punches missed in a row
# (at 5 % loss one time in 400) and half an interval of slack for a busy machine
PUNCH_LOST = 2.5 * PUNCH_EVERY
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


def encode_punch(speaker_id: str, pairing_key: bytes, ts: float, seq: int) -> bytes:
    """A punch: "BCP1" | u8 len | id | f64 ts | u32 seq | 16-byte MAC."""
    sid = speaker_id.encode()
    body = PUNCH_MAGIC + bytes([len(sid)]) + sid + struct.pack("!dI", ts, seq)
    return body + hmac.new(_key(pairing_key), body, hashlib.sha256).digest()[:PUNCH_MAC]


@dataclass(frozen=True)
class Punch:
    """A verified punch."""

    speaker_id: str
    ts: float
    seq: int


def punch_speaker(data: bytes) -> str:
    """The speaker id a punch claims (unverified), to look its key up."""
    if len(data) < 5 + 12 + PUNCH_MAC or not data.startswith(PUNCH_MAGIC):
        raise DialInError("not a punch")
    n = data[4]
    if len(data) != 5 + n + 12 + PUNCH_MAC:
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
    ts, seq = struct.unpack("!dI", body[-12:])
    return Punch(sid, ts, seq)


class MediaWay:
    """Which way one dial-in speaker's media go: UDP while its punches arrive, else its channel.

    The speaker punches every PUNCH_EVERY from its RTP socket. A punch that reaches the controller
    proves the NAT mapping back to that socket is open, so media take UDP (and switch back to it
    the moment a punch arrives again); until the first punch, and once PUNCH_LOST passes without
    one, they go as binary frames over the channel (docs/protocol.md §8). Pure: `now` is passed in
    (monotonic seconds).
    """

    def __init__(self, lost_after: float = PUNCH_LOST) -> None:
        self.lost_after = lost_after
        self.last_punch: float | None = None

    def punched(self, now: float) -> None:
        """An authentic, fresh punch arrived."""
        self.last_punch = now

    def way(self, now: float) -> str:
        """UDP or CHANNEL, as of `now`."""
        if self.last_punch is not None and now - self.last_punch < self.lost_after:
            return UDP
        return CHANNEL

    def changes_at(self, now: float) -> float | None:
        """When `way` turns to CHANNEL unless another punch comes (None: it already has)."""
        if self.way(now) == CHANNEL:
            return None
        assert self.last_punch is not None
        return self.last_punch + self.lost_after


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
