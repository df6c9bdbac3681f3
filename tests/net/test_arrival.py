"""Kernel receive stamps: how long a datagram waited for a busy event loop is known, so a clock
exchange times it from its arrival, not from when the loop got round to it."""

from __future__ import annotations

import asyncio
import socket
import time

from broadcaster.net.udp import Impairment, open_udp
from tests.support.harness import wait_for

HELD = 0.08  # s the loop is held while a datagram waits in the socket


async def _ages(impair: Impairment | None) -> list[float]:
    ages: list[float] = []
    port = None

    def handler(data: bytes, addr: tuple) -> None:
        assert port is not None
        ages.append(port.arrival_age())

    port = await open_udp("127.0.0.1", 0, handler, impair)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(4):
            out.sendto(b"x", ("127.0.0.1", port.port))
            time.sleep(HELD)  # the loop is busy: the datagram waits in the socket
            await asyncio.sleep(0.02 + (impair.delay if impair else 0))
    finally:
        out.close()
        port.close()
    return ages


async def test_a_datagram_that_waited_for_the_loop_says_how_long():
    ages = await _ages(None)
    assert len(ages) == 4
    # the first ask switches stamping on; every later datagram knows it waited the hold or more
    assert all(HELD <= a < 1.0 for a in ages[1:]), ages


async def test_a_datagram_the_shim_delayed_has_no_stamp_of_its_own():
    ages = await _ages(Impairment(delay=0.01, direction="in"))
    assert ages == [0.0] * 4


async def test_read_spaced_hands_over_each_datagram_with_its_own_stamp():
    got: list[tuple[bytes, float]] = []
    port = None

    def handler(data: bytes, addr: tuple) -> None:
        assert port is not None
        got.append((data, port.arrival_age()))

    port = await open_udp("127.0.0.1", 0, handler)
    port.read_spaced(lambda: 0.05)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out.sendto(b"warm-up", ("127.0.0.1", port.port))  # (stamping starts a moment late)
        await asyncio.sleep(0.1)
        got.clear()
        for n in range(3):  # three datagrams HELD apart, while the loop is busy
            out.sendto(bytes([n]), ("127.0.0.1", port.port))
            time.sleep(HELD)
        for _ in range(20):
            await asyncio.sleep(0.02)
            if len(got) == 3:
                break
    finally:
        out.close()
        port.close()
    assert [d for d, _ in got] == [b"\x00", b"\x01", b"\x02"]
    ages = [a for _, a in got]
    # each knows when it came: the first waited longest, each later one about HELD less
    assert ages[0] - ages[1] >= HELD * 0.9 and ages[1] - ages[2] >= HELD * 0.9, ages
    assert ages[2] > 0


async def test_read_now_ends_the_spaced_wait_for_an_awaited_answer():
    got: list[bytes] = []
    port = await open_udp("127.0.0.1", 0, lambda data, addr: got.append(data))
    port.read_spaced(lambda: 5.0)  # idle: a long period
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        out.sendto(b"first", ("127.0.0.1", port.port))
        await wait_for(lambda: got, 2, "the first datagram was not read")
        assert got == [b"first"]  # read at once; now the reader sleeps for the period
        out.sendto(b"answer", ("127.0.0.1", port.port))
        await asyncio.sleep(0.2)
        assert got == [b"first"]  # waits for the period's end...
        port.read_now()  # ...unless an answer is awaited
        await wait_for(lambda: len(got) == 2, 2, "read_now did not read the answer")
        assert got == [b"first", b"answer"]
    finally:
        out.close()
        port.close()
