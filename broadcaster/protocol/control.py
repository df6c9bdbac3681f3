"""Control requests in one UDP datagram each: the signed HTTP request of docs/protocol.md §2,
carried without HTTP. Pure framing, no I/O.

The request is exactly what HTTP would carry — method, path with query, the `Authorization`
header (the HMAC over method, path, body, time and nonce), body — so the speaker checks it with
the same guard, and the answer carries the same MAC over (nonce, status, body) that the
`X-BC-MAC` header would. Only the transport differs: a controller sets a thousand speakers up
with a thousand datagrams instead of a thousand HTTP exchanges (docs/scale.md). A datagram may be
lost, so the controller sends the same request again; the speaker answers a repeat from its
cache of recent answers instead of refusing it as a replay.

    request: "BCC1" | u32 id | u8 len | method | u16 len | path | u16 len | auth | body
    answer:  "BCA1" | u32 id | u16 status | u8 len | mac | body
"""

from __future__ import annotations

import struct
from typing import NamedTuple

REQUEST_MAGIC = b"BCC1"
ANSWER_MAGIC = b"BCA1"
MAX_DATAGRAM = 1400  # bytes: beyond this a request goes by HTTP (no IP fragmentation)


class ControlDatagramError(ValueError):
    """A control datagram that does not parse."""


class ControlRequest(NamedTuple):
    """One signed control request (a tuple: made a thousand times a set-up, and a frozen
    dataclass's constructor cost more than its encoding)."""

    id: int
    method: str
    path: str
    auth: str
    body: bytes

    def encode(self) -> bytes:
        """The datagram."""
        m, p, a = self.method.encode(), self.path.encode(), self.auth.encode()
        return b"".join(
            (
                REQUEST_MAGIC,
                struct.pack("!IB", self.id, len(m)),
                m,
                struct.pack("!H", len(p)),
                p,
                struct.pack("!H", len(a)),
                a,
                self.body,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> ControlRequest:
        """Parse a request datagram (its signature is the speaker's guard's to check)."""
        try:
            if not data.startswith(REQUEST_MAGIC):
                raise ControlDatagramError("not a control request")
            rid, n = struct.unpack_from("!IB", data, 4)
            at = 9
            method = data[at : at + n].decode("ascii")
            at += n
            (n,) = struct.unpack_from("!H", data, at)
            path = data[at + 2 : at + 2 + n].decode()
            at += 2 + n
            (n,) = struct.unpack_from("!H", data, at)
            auth = data[at + 2 : at + 2 + n].decode("ascii")
            at += 2 + n
            if at > len(data):
                raise ControlDatagramError("control request is truncated")
            return cls(rid, method, path, auth, data[at:])
        except (struct.error, UnicodeDecodeError) as exc:
            raise ControlDatagramError(f"malformed control request: {exc}") from None


class ControlAnswer(NamedTuple):
    """The speaker's answer: HTTP status, the MAC (empty on a refusal, as over HTTP), body."""

    id: int
    status: int
    mac: str
    body: bytes

    def encode(self) -> bytes:
        """The datagram."""
        mac = self.mac.encode()
        return ANSWER_MAGIC + struct.pack("!IHB", self.id, self.status, len(mac)) + mac + self.body

    @classmethod
    def decode(cls, data: bytes) -> ControlAnswer:
        """Parse an answer datagram (its MAC is the controller's to check)."""
        try:
            if not data.startswith(ANSWER_MAGIC):
                raise ControlDatagramError("not a control answer")
            rid, status, n = struct.unpack_from("!IHB", data, 4)
            if 11 + n > len(data):
                raise ControlDatagramError("control answer is truncated")
            return cls(rid, status, data[11 : 11 + n].decode("ascii"), data[11 + n :])
        except (struct.error, UnicodeDecodeError) as exc:
            raise ControlDatagramError(f"malformed control answer: {exc}") from None
