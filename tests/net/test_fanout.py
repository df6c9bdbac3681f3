"""FanOut: one datagram to many addresses in one system call, as every receiver sees it."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from broadcaster.net import fanout
from broadcaster.net.fanout import FanOut
from tests.support.net import may_realtime


def _receivers(n: int) -> list[socket.socket]:
    out = []
    for i in range(n):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind((f"127.0.0.{1 + i % 3}", 0))  # several loopback addresses, as speakers have
        r.settimeout(2)
        out.append(r)
    return out


def _got(r: socket.socket, n: int) -> list[bytes]:
    return [r.recv(65536) for _ in range(n)]


@pytest.fixture
def sender():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    yield s
    s.close()


@pytest.mark.parametrize("threaded", [False, True])
def test_every_receiver_gets_every_datagram_in_order(sender, threaded):
    rs = _receivers(40)
    try:
        fan = FanOut(sender, threaded=threaded)
        assert fan.batched  # sendmmsg on this Linux: the batched path is the one under test
        addrs = [r.getsockname() for r in rs]
        frames = [bytes([n]) * (100 + n) for n in range(3)]
        for f in frames:
            fan.send(f, addrs)
        fan.close()  # (threaded) what was queued is sent first
        for r in rs:
            assert _got(r, 3) == frames
    finally:
        for r in rs:
            r.close()


def _held_at(first: bytes, sender, addrs, monkeypatch) -> tuple[FanOut, threading.Event]:
    """A threaded FanOut whose thread is busy sending `first` until the event is set: a kernel
    (or a machine) that does not keep up."""
    entered, release = threading.Event(), threading.Event()
    fan = FanOut(sender, threaded=True)
    real = fan._send_now

    def held(data, a):
        if data == first:
            entered.set()
            release.wait(10)
        real(data, a)

    monkeypatch.setattr(fan, "_send_now", held)
    fan.send(first, addrs)
    assert entered.wait(10)  # the thread is inside the first frame's send
    return fan, release


def test_the_sending_thread_drops_frames_beyond_its_queue(sender, monkeypatch):
    """A kernel that does not keep up: frames beyond MAX_BEHIND queued are dropped and counted;
    the ones kept go out in order."""
    monkeypatch.setattr(fanout, "MAX_AGE", 60.0)  # here only the queue's length counts
    rs = _receivers(3)
    addrs = [r.getsockname() for r in rs]
    fan, release = _held_at(b"f0", sender, addrs, monkeypatch)
    try:
        for n in range(1, fanout.MAX_BEHIND + 6):
            fan.send(b"f%d" % n, addrs)
        assert fan.dropped == 5 * len(addrs)
        release.set()
        fan.close()
        kept = [b"f%d" % n for n in range(fanout.MAX_BEHIND + 1)]
        for r in rs:
            assert _got(r, len(kept)) == kept
            r.settimeout(0.2)
            with pytest.raises(TimeoutError):
                r.recv(2048)  # nothing after: the dropped frames never went
    finally:
        release.set()
        fan.close()
        for r in rs:
            r.close()


def test_a_changed_list_is_followed(sender):
    rs = _receivers(4)
    try:
        fan = FanOut(sender)
        fan.send(b"one", [r.getsockname() for r in rs[:3]])
        fan.send(b"two", [r.getsockname() for r in rs[1:]])  # rs[0] cut, rs[3] added
        assert _got(rs[0], 1) == [b"one"]
        assert _got(rs[1], 2) == [b"one", b"two"] and _got(rs[2], 2) == [b"one", b"two"]
        assert _got(rs[3], 1) == [b"two"]
        rs[0].settimeout(0.2)
        with pytest.raises(TimeoutError):
            rs[0].recv(2048)
    finally:
        for r in rs:
            r.close()


def test_a_large_datagram_and_a_host_name_still_arrive(sender):
    rs = _receivers(2)
    try:
        fan = FanOut(sender)
        big = bytes(range(256)) * 12  # 3 kB: larger than the first buffer
        fan.send(big, [r.getsockname() for r in rs])
        assert [_got(r, 1)[0] for r in rs] == [big, big]
        port = rs[0].getsockname()[1]
        fan.send(b"named", [("localhost", port)])  # not a literal address: the plain loop
        assert _got(rs[0], 1) == [b"named"]
    finally:
        for r in rs:
            r.close()


def test_without_sendmmsg_the_plain_loop_sends_the_same(sender, monkeypatch):
    monkeypatch.setattr(fanout, "_SENDMMSG", None)
    rs = _receivers(3)
    try:
        fan = FanOut(sender)
        assert not fan.batched
        fan.send(b"x", [r.getsockname() for r in rs])
        assert [_got(r, 1) for r in rs] == [[b"x"]] * 3
    finally:
        for r in rs:
            r.close()


def test_a_frame_that_waited_too_long_for_the_thread_is_dropped_not_sent(sender, monkeypatch):
    """A thread that fell behind catches up: what waited longer than MAX_AGE would play late."""
    monkeypatch.setattr(fanout, "MAX_AGE", 0.2)
    rs = _receivers(2)
    addrs = [r.getsockname() for r in rs]
    fan, release = _held_at(b"first", sender, addrs, monkeypatch)
    try:
        for n in range(5):
            fan.send(b"stale%d" % n, addrs)  # they wait behind the held frame ...
        release.wait(1.0)  # ... a second, five times MAX_AGE
        release.set()
        fan.close()
        assert fan.dropped == 5 * len(addrs)
        for r in rs:
            assert _got(r, 1) == [b"first"]
            r.settimeout(0.2)
            with pytest.raises(TimeoutError):
                r.recv(2048)
    finally:
        release.set()
        fan.close()
        for r in rs:
            r.close()


def test_the_sending_thread_runs_at_real_time_priority_when_asked_and_still_sends(sender, caplog):
    rs = _receivers(5)
    cpus = os.sched_getaffinity(0)
    # another thread of the process (a worker checking a token, say), started before the split
    worker_done, worker_id = threading.Event(), []
    worker = threading.Thread(
        target=lambda: (worker_id.append(threading.get_native_id()), worker_done.wait(30))
    )
    worker.start()
    fan = FanOut(sender, threaded=True)
    try:
        assert not fan.realtime_on
        on = fan.realtime()
        assert fan._thread is not None
        policy = os.sched_getscheduler(fan._thread.native_id)
        if may_realtime():
            assert on and policy == os.SCHED_RR  # that thread only, not its caller
            assert os.sched_getscheduler(0) == os.SCHED_OTHER
        else:  # not allowed here: it says so, and stays as it was
            assert not on and policy == os.SCHED_OTHER
            assert "stays at normal priority" in caplog.text
        frames = [b"a" * 100, b"b" * 200]
        fan.send(frames[0], [r.getsockname() for r in rs[:4]])  # to fewer than apart_at
        assert _got(rs[0], 1) == frames[:1]
        assert os.sched_getaffinity(0) == cpus and fan.core is None  # the cores still shared
        fan.apart_at = 5
        fan.send(frames[1], [r.getsockname() for r in rs])  # to apart_at: a core of its own
        for i, r in enumerate(rs):  # every frame still sent, in order
            want = frames[1:] if i in (0, 4) else frames
            assert _got(r, len(want)) == want
        if may_realtime() and len(cpus) > 1:  # the last core, which the rest keeps off
            assert os.sched_getaffinity(fan._thread.native_id) == {max(cpus)} == {fan.core}
            assert os.sched_getaffinity(0) == cpus - {max(cpus)}  # its caller
            assert os.sched_getaffinity(worker_id[0]) == cpus - {max(cpus)}  # and the others
        else:
            assert os.sched_getaffinity(0) == cpus and fan.core is None
            assert os.sched_getaffinity(worker_id[0]) == cpus
        fan.close()
    finally:
        fan.close()
        worker_done.set()
        worker.join()
        for tid in os.listdir("/proc/self/task"):  # every thread of the test: every core again
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass
        for r in rs:
            r.close()
    assert not FanOut(sender).realtime()  # unthreaded: nothing to raise
