"""UDP sockets for asyncio: unicast and loopback-safe multicast, plus the test impairment shim."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

Handler = Callable[[bytes, tuple], None]
# The kernel's receive timestamp of the socket's last datagram (Linux, struct timespec). A clock
# exchange timed by it is not biased by how long the datagram then waited for a busy event loop
# (what NTP daemons do with SO_TIMESTAMP); the first ask switches stamping on for the socket.
SIOCGSTAMPNS = 0x8907
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; also the control message's type
_TIMESPEC = struct.Struct("@qq")
SPACED_BATCH = 32  # datagrams `read_spaced` hands over per turn of the loop (a turn stays ~1-2 ms)
ARRIVAL_AGE_MAX = 1.0  # s: an older stamp is not this datagram's (or the wall clock stepped)


DIRECTIONS = ("both", "in", "out")


@dataclass(frozen=True)
class Impairment:
    """Network faults injected under an endpoint's sockets: fixed delay, uniform jitter, loss.

    `direction` says which traffic suffers: "in" (datagrams the socket receives), "out" (what
    it sends) or "both" (the default), so one endpoint can model an asymmetric path, e.g. a
    300 ms downlink with a clean uplink (`Impairment.parse("delay=300ms,dir=in")` at the
    speaker).
    """

    delay: float = 0.0
    jitter: float = 0.0
    loss: float = 0.0
    seed: int = 0
    direction: str = "both"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"impairment dir={self.direction}: use dir=in, dir=out or dir=both")
        if self.delay < 0 or self.jitter < 0 or not 0 <= self.loss <= 1:
            raise ValueError(f"impairment {self}: delay and jitter >= 0, loss within 0-100%")

    def affects(self, direction: str) -> bool:
        """Whether datagrams going this way ("in" or "out") are impaired."""
        return self.direction in ("both", direction)

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> Impairment:
        """Parse 'delay=50ms,jitter=5ms,loss=1%,dir=in' (dir: in, out or both; default both)."""
        vals = {"delay": 0.0, "jitter": 0.0, "loss": 0.0}
        direction = "both"
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, raw = (x.strip() for x in part.partition("="))
            if name == "dir":
                if raw not in DIRECTIONS:
                    raise ValueError(f"impairment {part!r}: use dir=in, dir=out or dir=both")
                direction = raw
                continue
            if name not in vals:
                raise ValueError(f"impairment {part!r}: use delay=, jitter=, loss= or dir=")
            scale, number = 1.0, raw
            if raw.endswith("ms"):
                scale, number = 0.001, raw[:-2]
            elif raw.endswith("%"):
                scale, number = 0.01, raw[:-1]
            elif raw.endswith("s"):
                number = raw[:-1]
            try:
                vals[name] = float(number) * scale
            except ValueError:
                raise ValueError(
                    f"impairment {part!r}: {raw!r} is not a number (e.g. 50ms, 0.05, 1%)"
                ) from None
        return cls(vals["delay"], vals["jitter"], vals["loss"], seed, direction)


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, handler: Handler, impair: Impairment | None) -> None:
        self.handler = handler
        self.impair = impair
        self.rng = random.Random(impair.seed if impair else 0)
        self.loop = asyncio.get_running_loop()
        self.stamped = False  # the datagram being handled is the socket's last received one

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        imp = self.impair
        if imp is None or not imp.affects("in"):
            self.stamped = True  # the kernel's stamp is this datagram's
            self.handler(data, addr)
            return
        if imp.loss and self.rng.random() < imp.loss:
            return
        wait = imp.delay + self.rng.uniform(0, imp.jitter)
        self.loop.call_later(wait, self._late, data, addr)

    def _late(self, data: bytes, addr: tuple) -> None:
        self.stamped = False  # it "arrives" now, after the shim's delay: no stamp is its own
        self.handler(data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors on UDP are routine
        pass


class UdpPort:
    """One UDP socket: received datagrams go to a handler; sends may be impaired the same way."""

    def __init__(self, transport: asyncio.DatagramTransport, proto: _Proto) -> None:
        self.transport = transport
        self._proto = proto
        self._batch: socket.socket | None = None
        self._fd = transport.get_extra_info("socket").fileno()
        # the ancillary data of the datagram `read_spaced` or `drain()` hands over (its stamp is
        # read from it only if the handler asks: most datagrams on a clock socket at a set-up
        # are answers)
        self._anc: list | None = None
        self._rearm: asyncio.Handle | None = None
        self._wake: Callable[[], None] | None = None

    def batched(self) -> Callable[[], int]:
        """Returns `drain()`, which hands over every datagram waiting and says how many. For a
        receiver that reads on its own schedule (the light speakers of scale runs) while
        `batching(True)`: one call per tick instead of one event-loop turn each. Each datagram
        comes with its kernel receive stamp (`stamped_age`): when it reached the socket, however
        late the reader came for it."""
        fd = self.transport.get_extra_info("socket").fileno()
        sock = self._batch = socket.socket(fileno=os.dup(fd))  # same queue, a handle of our own
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        proto = self._proto
        # straight to the handler unless the impairment shim holds incoming datagrams back
        shim = proto.impair is not None and proto.impair.affects("in")
        received = proto.datagram_received if shim else proto.handler
        space = socket.CMSG_SPACE(_TIMESPEC.size)

        def drain() -> int:
            n = 0
            proto.stamped = True  # (the shim's own delivery says otherwise when it hands over)
            try:
                while True:
                    try:
                        data, anc, _flags, addr = sock.recvmsg(65536, space)
                    except OSError:  # BlockingIOError: nothing more waiting
                        return n
                    self._anc = anc
                    received(data, addr)
                    n += 1
            finally:
                self._anc = None

        return drain

    def batching(self, on: bool) -> None:
        """On: datagrams wait for `drain()`; off: each is handed over as it comes (an idle
        receiver then costs nothing until one arrives)."""
        if on:
            self.transport.pause_reading()  # type: ignore[attr-defined]  # (selector transports)
        else:
            self.transport.resume_reading()  # type: ignore[attr-defined]

    def read_spaced(self, period: Callable[[], float]) -> None:
        """Wake for this socket at most once per `period()` seconds, then hand over every
        datagram waiting, each with its own kernel receive stamp (SO_TIMESTAMPNS, read by
        `arrival_age`); a period of 0 reads as datagrams come.

        For a busy service socket (the controller's clock service: a thousand speakers' exchanges)
        one turn of the event loop then serves several datagrams instead of one each; a datagram
        waits at most a period, and an exchange timed by its stamp is not biased by the wait."""
        sock = self.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.transport.pause_reading()  # type: ignore[attr-defined]  # (selector transports)
        reader = self._batch = socket.socket(fileno=os.dup(sock.fileno()))
        reader.setblocking(False)
        loop, proto = self._proto.loop, self._proto
        space = socket.CMSG_SPACE(_TIMESPEC.size)

        def readable() -> None:
            for _ in range(SPACED_BATCH):
                try:
                    data, anc, _flags, addr = reader.recvmsg(65536, space)
                except OSError:  # BlockingIOError: nothing more waiting
                    break
                self._anc = anc
                proto.datagram_received(data, addr)
            else:  # more are waiting: the rest on the next turn, after everyone else's work
                self._anc = None
                loop.remove_reader(reader.fileno())
                self._rearm = loop.call_soon(loop.add_reader, reader.fileno(), readable)
                return
            self._anc = None
            wait = period()
            if wait > 0:  # (0: it stays registered, and reads again as the next one comes)
                loop.remove_reader(reader.fileno())
                self._rearm = loop.call_later(wait, loop.add_reader, reader.fileno(), readable)

        def wake() -> None:
            if self._rearm is not None and not self._rearm.cancelled():
                self._rearm.cancel()
                loop.add_reader(reader.fileno(), readable)

        self._wake = wake
        loop.add_reader(reader.fileno(), readable)

    def read_now(self) -> None:
        """Under `read_spaced`, read as soon as a datagram comes instead of at the period's end
        (an answer is awaited)."""
        if self._wake is not None:
            self._wake()

    def stamped_age(self) -> float:
        """`arrival_age` of a datagram that `drain()` or `read_spaced` is handing over (read
        with its own stamp); 0 for any other, without asking the kernel."""
        return self.arrival_age() if self._anc is not None else 0.0

    def arrival_age(self) -> float:
        """How long ago the kernel received the datagram being handled now (call it from the
        handler); 0 when unknown (no stamp, delivered by the impairment shim, or implausible)."""
        if not self._proto.stamped:
            return 0.0
        if self._anc is not None:  # read by `read_spaced` or `drain()`, with its own stamp
            stamp = 0.0  # (none: its age is unknown)
            for level, kind, raw in self._anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = _TIMESPEC.unpack(raw[: _TIMESPEC.size])
                    stamp = sec + nsec * 1e-9
        else:
            try:
                sec, nsec = _TIMESPEC.unpack(fcntl.ioctl(self._fd, SIOCGSTAMPNS, bytes(16)))
            except OSError:  # ENOENT before stamping was on; another platform
                return 0.0
            stamp = sec + nsec * 1e-9
        age = time.time() - stamp  # now, as the handler reads its own clock: a batch's tenth
        # datagram is handled later than its first, and its age must say so
        return age if 0.0 <= age < ARRIVAL_AGE_MAX else 0.0

    @property
    def port(self) -> int:
        """The local port."""
        return self.transport.get_extra_info("sockname")[1]

    def sendto(self, data: bytes, addr: tuple) -> None:
        """Send one datagram (after the shim's delay, if one is set)."""
        imp = self._proto.impair
        if imp is None or not imp.affects("out"):
            self.transport.sendto(data, addr)
            return
        if imp.loss and self._proto.rng.random() < imp.loss:
            return
        wait = imp.delay + self._proto.rng.uniform(0, imp.jitter)
        self._proto.loop.call_later(wait, self._send_now, data, addr)

    def _send_now(self, data: bytes, addr: tuple) -> None:
        if not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def close(self) -> None:
        """Close the socket."""
        self.transport.close()
        if self._rearm is not None:
            self._rearm.cancel()
        if self._batch is not None:
            if self._batch.fileno() >= 0:
                self._proto.loop.remove_reader(self._batch.fileno())
            self._batch.close()


async def open_udp(
    host: str, port: int, handler: Handler, impair: Impairment | None = None
) -> UdpPort:
    """Bind a unicast UDP socket."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Proto(handler, impair), local_addr=(host, port)
    )
    return UdpPort(transport, proto)


async def open_udp_pair(
    host: str, port: int, rtp: Handler, rtcp: Handler, impair: Impairment | None = None
) -> tuple[UdpPort, UdpPort]:
    """Bind RTP on an even port and RTCP on the next one; port 0 picks a free pair."""
    for _ in range(50):
        a = await open_udp(host, port, rtp, impair)
        if port == 0 and a.port % 2:
            a.close()
            continue
        try:
            b = await open_udp(host, a.port + 1, rtcp, impair)
        except OSError:
            a.close()
            if port:
                raise
            continue
        return a, b
    raise OSError(f"no free RTP/RTCP port pair on {host}")


async def open_multicast_receiver(
    group: str, port: int, iface: str, handler: Handler, impair: Impairment | None = None
) -> UdpPort:
    """Join a multicast group on one interface address only (127.0.0.1 keeps it on loopback)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((group, port))
    mreq = socket.inet_aton(group) + socket.inet_aton(iface)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Proto(handler, impair), sock=sock
    )
    return UdpPort(transport, proto)


def multicast_sender(iface: str, ttl: int = 1) -> socket.socket:
    """A UDP socket whose multicast leaves through one interface address only."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, struct.pack("b", ttl))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    sock.bind((iface, 0))
    sock.setblocking(False)
    return sock
