"""The impairment shim: its text form, and faults on one direction of a path only."""

from __future__ import annotations

import asyncio
import statistics
import struct
import time

import pytest

from broadcaster.net.udp import Impairment, UdpPort, open_udp


def test_parse_defaults_to_both_directions():
    """The existing syntax keeps its meaning: both directions impaired."""
    imp = Impairment.parse("delay=50ms,jitter=5ms,loss=1%")
    assert (imp.delay, imp.jitter, imp.loss, imp.direction) == (0.05, 0.005, 0.01, "both")
    assert imp.affects("in") and imp.affects("out")


@pytest.mark.parametrize(
    "text, inbound, outbound",
    [
        ("delay=300ms,dir=in", True, False),
        ("dir=out, delay=0.3", False, True),
        ("delay=300ms,dir=both", True, True),
    ],
)
def test_parse_direction(text, inbound, outbound):
    """dir=in impairs what the socket receives, dir=out what it sends."""
    imp = Impairment.parse(text, seed=3)
    assert imp.delay == pytest.approx(0.3) and imp.seed == 3
    assert (imp.affects("in"), imp.affects("out")) == (inbound, outbound)


@pytest.mark.parametrize(
    "text, names",
    [
        ("dir=up", "dir=in, dir=out or dir=both"),
        ("delay=fast", "'fast' is not a number"),
        ("wobble=3", "use delay=, jitter=, loss= or dir="),
        ("loss=150%", "loss within 0-100%"),
        ("delay=-5ms", "delay and jitter >= 0"),
    ],
)
def test_parse_errors_name_the_fault(text, names):
    """A bad impairment says which part is wrong and what would be right."""
    with pytest.raises(ValueError) as err:
        Impairment.parse(text)
    assert names in str(err.value)


async def _path(
    near: Impairment | None, count: int = 20, wait: float = 5.0
) -> tuple[list[float], list[float]]:
    """One-way delays far→near (downlink) and near→far (uplink) over real UDP on loopback.

    The near socket carries the shim; each datagram holds its send time, so the receiver
    measures its one-way delay on the same monotonic clock.
    """
    down: list[float] = []
    up: list[float] = []

    def stamp(into: list[float]):
        return lambda data, addr: into.append(time.monotonic() - struct.unpack("!d", data)[0])

    near_port: UdpPort = await open_udp("127.0.0.1", 0, stamp(down), near)
    far_port: UdpPort = await open_udp("127.0.0.1", 0, stamp(up))
    try:
        for _ in range(count):
            far_port.sendto(struct.pack("!d", time.monotonic()), ("127.0.0.1", near_port.port))
            near_port.sendto(struct.pack("!d", time.monotonic()), ("127.0.0.1", far_port.port))
            await asyncio.sleep(0.01)
        deadline = time.monotonic() + wait
        while (len(down) < count or len(up) < count) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        near_port.close()
        far_port.close()
    return down, up


async def test_downlink_only_delay():
    """dir=in at the speaker: 300 ms on the downlink, the uplink untouched."""
    down, up = await _path(Impairment.parse("delay=300ms,dir=in"))
    assert len(down) == len(up) == 20
    assert min(down) >= 0.299, f"downlink delays {min(down):.3f}..{max(down):.3f} s"
    assert statistics.median(up) < 0.1 and max(up) < 0.3, f"uplink delayed: {max(up):.3f} s"


async def test_uplink_only_delay():
    """dir=out: the socket's own sends are delayed, what it receives is not."""
    down, up = await _path(Impairment.parse("delay=300ms,dir=out"))
    assert min(up) >= 0.299
    assert statistics.median(down) < 0.1 and max(down) < 0.3


async def test_both_directions_by_default():
    """Without dir= both directions are delayed, as before."""
    down, up = await _path(Impairment.parse("delay=200ms"))
    assert min(down) >= 0.199 and min(up) >= 0.199


async def test_loss_on_one_direction_only():
    """loss=100%,dir=in drops everything inbound and nothing outbound."""
    down, up = await _path(Impairment.parse("loss=100%,dir=in"), count=10, wait=0.5)
    assert down == [] and len(up) == 10
