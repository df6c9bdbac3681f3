"""One datagram to many addresses: groups by multicast, the rest in one system call, each list
split once and kept (a broadcast's RTP and RTCP lists alternate, several broadcasts interleave)."""

from __future__ import annotations

import asyncio
import random

import pytest

import broadcaster.site as zones
from broadcaster.core.controller import _is_multicast
from broadcaster.net.udp import open_multicast_receiver, open_udp
from tests.support.harness import controller
from tests.support.sites import small_site


@pytest.mark.parametrize(
    ("host", "multicast"),
    [
        ("224.0.0.1", True),
        ("239.255.255.250", True),
        ("223.255.255.255", False),
        ("240.0.0.1", False),
        ("127.0.0.1", False),
        ("127.9.3.1", False),
        ("999.1.1.1", False),
        ("ff02::1", True),
        ("::1", False),
        ("speaker-1.local", False),
        ("239.example", False),
    ],
)
def test_a_multicast_address_is_told_from_a_unicast_one(host, multicast):
    assert _is_multicast(host) is multicast


async def test_interleaved_lists_each_reach_their_own_addresses(tmp_path, data, tag):
    site = zones.load(small_site(tmp_path / "z.yaml", villages=1, horns=1, columns=1))
    got: dict[str, list[bytes]] = {}

    def keep(name: str):
        return lambda data, addr: got.setdefault(name, []).append(data)

    rng = random.Random()
    group = (
        f"239.78.{rng.randrange(1, 250)}.{rng.randrange(1, 250)}",
        2 * rng.randrange(20000, 30000),
    )
    ports = [await open_udp("127.0.0.1", 0, keep(f"u{i}")) for i in range(4)]
    mcast = await open_multicast_receiver(*group, "127.0.0.1", keep("group"))
    addr = [("127.0.0.1", p.port) for p in ports]
    try:
        async with controller(site, data, tag, mdns=False) as (ctl, _):
            rtp, rtcp, other = [addr[0], addr[1], group], [addr[2], group], [addr[3]]
            for n in range(5):  # alternating lists, each sent again and again
                ctl.send_many(b"rtp%d" % n, rtp)
                ctl.send_many(b"rtcp%d" % n, rtcp)
                ctl.send_many(b"other%d" % n, other)
            for _ in range(100):
                if sum(map(len, got.values())) >= 5 * 7:
                    break
                await asyncio.sleep(0.02)
    finally:
        for p in (*ports, mcast):
            p.close()
    rtps, rtcps, others = (
        [b"%s%d" % (w, n) for n in range(5)] for w in (b"rtp", b"rtcp", b"other")
    )
    assert got["u0"] == got["u1"] == rtps
    assert got["u2"] == rtcps
    assert got["u3"] == others
    assert sorted(got["group"]) == sorted(rtps + rtcps)
