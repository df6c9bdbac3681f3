"""One datagram to many unicast addresses in one system call (Linux `sendmmsg`).

A broadcast to a thousand speakers by unicast sends every 20 ms packet a thousand times. One
`sendto` each costs a system call and a turn of Python per speaker (5.9 µs a packet measured
here on loopback); `sendmmsg` hands the kernel the whole list at once (4.4 µs), the way media
servers fan out. The message headers for a list of addresses are built once and kept while the
list stays the same, so a frame costs one copy of its bytes and one call. IPv6 addresses, and
platforms without `sendmmsg`, take the plain loop.

`threaded=True` moves the sending to a thread of its own: the system call that hands a frame to
a thousand speakers holds its caller 4-18 ms (measured here through a veth, and on loopback to
speakers that read), and the GIL is let go meanwhile, so the event loop goes on answering clock
requests and the API while the kernel sends. The frames keep their order; one that waited for
the thread longer than MAX_AGE, or found MAX_BEHIND frames queued, is dropped and counted.

`realtime()` asks that thread to run at a real-time priority (SCHED_RR), as audio servers run
their audio threads: on a machine whose cores are all busy (at 1,000 speakers here, with the
simulators and an API client hammering the list) the kernel let it wait past MAX_AGE and frames
were dropped. Its work is bounded by the media's own rate, and the kernel keeps 5 % of every
second for the rest (sched_rt_runtime_us). Without the right (CAP_SYS_NICE) it stays as it is.
With two cores or more, once a frame goes to APART_AT speakers or more the thread takes the last
core for itself and the rest of the process (the event loop, its worker threads) keeps off it: a
thread a real-time one preempts is not moved to another core.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)
BATCH = 1024  # messages per call (the kernel's UIO_MAXIOV)
# frames queued for the sending thread before new ones are dropped (a bound on memory: MAX_AGE
# below drops a frame that waited, first)
MAX_BEHIND = 100
# s a frame may wait for the sending thread: one that waited longer is dropped, not sent. A
# thread that falls behind (a machine short of CPU) must catch up rather than spend itself on
# frames that would arrive after their play instant (the LAN's lead is 0.1 s): at 2,000
# speakers on a saturated machine it had sent every frame late and none played.
MAX_AGE = 0.1
RT_PRIORITY = 10  # SCHED_RR priority of the sending thread once realtime() asks for it (1-99)
APART_AT = 256  # speakers in a frame's list that give the real-time thread a core of its own


def _threads() -> list[int]:
    """The native ids of this process's threads (none where /proc is not Linux's)."""
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _SockaddrIn(ctypes.Structure):
    _fields_ = [
        ("sin_family", ctypes.c_ushort),
        ("sin_port", ctypes.c_uint16),  # network order
        ("sin_addr", ctypes.c_uint32),  # network order, as inet_aton packs it
        ("sin_zero", ctypes.c_char * 8),
    ]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _libc_sendmmsg():  # noqa: ANN202 - a ctypes function or None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fn = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SENDMMSG = _libc_sendmmsg()


class FanOut:
    """Sends datagrams from one (non-blocking, IPv4) UDP socket to lists of addresses."""

    def __init__(self, sock: socket.socket, threaded: bool = False) -> None:
        self.sock = sock
        self.batched = _SENDMMSG is not None and sock.family == socket.AF_INET
        # datagrams never sent: counted apart by the thread that drops them (a full send
        # buffer or a stale frame: the sending thread; a full queue: the caller's)
        self._dropped_sending = self._dropped_queued = 0
        self._addrs: list[tuple[str, int]] = []
        self._names: ctypes.Array | None = None
        self._msgs: ctypes.Array | None = None
        self._buf = ctypes.create_string_buffer(2048)
        self._iov = _Iovec(ctypes.cast(self._buf, ctypes.c_void_p), 0)
        self._queue: queue.SimpleQueue | None = None
        self._thread: threading.Thread | None = None
        self.realtime_on = False  # the sending thread runs at real-time priority
        self.core: int | None = None  # the core it has to itself, apart from its caller's
        # frames to this many speakers or more give the real-time thread a core of its own (a
        # sendmmsg to 256 holds a core for about 1.5 ms here; 113 for under 1)
        self.apart_at = APART_AT
        self._caller: int | None = None  # the native id of the thread that asked for realtime
        self._apart_tried = False
        if threaded:
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._run, name="fanout", daemon=True)
            self._thread.start()

    @property
    def dropped(self) -> int:
        """Datagrams never sent: the kernel's buffer was full, or the frame came too late."""
        return self._dropped_sending + self._dropped_queued

    def send(self, data: bytes, addrs: Sequence[tuple[str, int]]) -> None:
        """Send `data` to every address (by the sending thread, if threaded: `addrs` must not be
        changed afterwards); a full buffer drops what it cannot take (never blocks)."""
        if not addrs:
            return
        if self._queue is not None:
            if self._queue.qsize() >= MAX_BEHIND:  # the kernel is not keeping up: drop, not lag
                self._dropped_queued += len(addrs)
                return
            self._queue.put((data, addrs, time.monotonic()))
            return
        self._send_now(data, addrs)

    def realtime(self, priority: int = RT_PRIORITY) -> bool:
        """Run the sending thread at real-time priority (SCHED_RR `priority`, that thread only);
        whether it does (False: not threaded, or not allowed — logged)."""
        if self._thread is None or self._thread.native_id is None:
            return False
        try:
            os.sched_setscheduler(self._thread.native_id, os.SCHED_RR, os.sched_param(priority))
        except (OSError, AttributeError) as exc:  # no CAP_SYS_NICE, or not Linux
            log.warning(
                "fan-out thread stays at normal priority (%s): on a busy machine frames may wait "
                "and be dropped; grant CAP_SYS_NICE (systemd: AmbientCapabilities=CAP_SYS_NICE)",
                exc,
            )
            return False
        self.realtime_on = True
        self._caller = threading.get_native_id()
        log.info("fan-out thread at real-time priority (SCHED_RR %d)", priority)
        return True

    def _own_core(self) -> None:
        """(In the sending thread.) Take the last of the caller's cores for this thread, and
        keep every other thread of the process off it (the event loop, its worker threads, the
        history writer; threads started later take their starter's cores), as audio servers
        keep their audio thread's core apart.

        A thread that a real-time one preempts waits on that core: the scheduler does not move
        it to another, busy or not, for the whole of a `sendmmsg` to a thousand speakers.
        Measured at 1,000 speakers on 2 cores while everyone played: the loop's lag p99 17-19 ms
        and its own stalls up to 44 ms; with the loop apart 6.8 ms and 6.5 ms. A token's check
        in a worker thread that ran on the real-time core still waited there: an area's list
        took up to 18 ms of the controller's time (1.3 ms of work). With one core there is
        nothing to keep apart."""
        self._apart_tried = True
        caller = self._caller
        assert caller is not None
        try:
            cpus = os.sched_getaffinity(caller)
            if len(cpus) < 2:
                return
            core = max(cpus)
            os.sched_setaffinity(0, {core})  # (0: this thread only)
            os.sched_setaffinity(caller, cpus - {core})
        except OSError as exc:  # gone, or a cpuset that forbids it: both stay where they may run
            log.info("fan-out thread shares the cores (%s)", exc)
            return
        me = threading.get_native_id()
        for tid in _threads():
            if tid not in (me, caller):
                try:
                    os.sched_setaffinity(tid, os.sched_getaffinity(tid) - {core} or cpus - {core})
                except OSError:  # ended meanwhile
                    pass
        self.core = core
        log.info("fan-out thread on core %d; the rest on %s", core, sorted(cpus - {core}))

    def close(self) -> None:
        """Send what is queued, then stop the sending thread (the socket stays open)."""
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._queue = self._thread = None

    def _run(self) -> None:
        assert self._queue is not None
        q = self._queue
        while (item := q.get()) is not None:
            data, addrs, queued = item
            if time.monotonic() - queued > MAX_AGE:
                self._dropped_sending += len(addrs)  # too late to play: catch up instead
                continue
            if self._caller is not None and not self._apart_tried and len(addrs) >= self.apart_at:
                self._own_core()  # holds its core long enough now to be kept apart
            try:
                self._send_now(data, addrs)
            except Exception:  # a fault in one frame must not end the sending
                log.exception("fan-out of one frame failed")

    def _send_now(self, data: bytes, addrs: Sequence[tuple[str, int]]) -> None:
        if not self.batched or not self._prepare(addrs):
            self._loop(data, addrs)
            return
        if len(data) > len(self._buf):
            self._buf = ctypes.create_string_buffer(len(data))
            self._iov.iov_base = ctypes.cast(self._buf, ctypes.c_void_p)
        ctypes.memmove(self._buf, data, len(data))
        self._iov.iov_len = len(data)
        assert _SENDMMSG is not None and self._msgs is not None
        fd, base, size = self.sock.fileno(), ctypes.addressof(self._msgs), ctypes.sizeof(_Mmsghdr)
        n, done = len(addrs), 0
        while done < n:
            sent = _SENDMMSG(fd, base + done * size, min(BATCH, n - done), 0)
            if sent > 0:
                done += sent
                continue
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.ENOBUFS):  # the buffer is full: this frame is lost
                self._dropped_sending += n - done
                return
            if err != errno.EINTR:  # one bad destination (an ICMP error): skip it only
                log.debug("send to %s failed: %s", addrs[done], errno.errorcode.get(err, err))
                done += 1

    def _prepare(self, addrs: Sequence[tuple[str, int]]) -> bool:
        """Message headers for these addresses (kept while they stay the same); False if one is
        not a literal IPv4 address."""
        if self._msgs is not None and addrs == self._addrs:
            return True
        n = len(addrs)
        names = (_SockaddrIn * n)()
        msgs = (_Mmsghdr * n)()
        iov = ctypes.pointer(self._iov)
        for i, (host, port) in enumerate(addrs):
            try:
                packed = socket.inet_aton(host)
            except OSError:
                return False
            if host.count(".") != 3:  # inet_aton takes "127.1"; a name is not ours to resolve
                return False
            names[i].sin_family = socket.AF_INET
            names[i].sin_port = socket.htons(port)
            names[i].sin_addr = int.from_bytes(packed, sys.byteorder)
            hdr = msgs[i].msg_hdr
            hdr.msg_name = ctypes.addressof(names[i])
            hdr.msg_namelen = ctypes.sizeof(_SockaddrIn)
            hdr.msg_iov = iov
            hdr.msg_iovlen = 1
        self._addrs, self._names, self._msgs = list(addrs), names, msgs
        return True

    def _loop(self, data: bytes, addrs: Sequence[tuple[str, int]]) -> None:
        for addr in addrs:
            try:
                self.sock.sendto(data, addr)
            except BlockingIOError:
                self._dropped_sending += 1
            except OSError as exc:  # one unreachable destination must not stop the others
                log.debug("send to %s failed: %s", addr, exc)
