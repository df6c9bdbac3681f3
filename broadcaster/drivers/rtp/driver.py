"""The driver for plain RTP paging speakers (`driver: rtp` in zones.yaml): see docs/drivers.md.

Such a speaker is an address: the multicast group or unicast port it listens on. It has no
status API (it counts as online while its address is configured), no set-up (the stream simply
arrives), no authentication, no play clock and no report (the core records what was sent, not
what was heard). Every broadcast reaches it as G.711 µ-law in 20 ms packets, whatever the
broadcast's codec: the core resamples to the sender's 8 kHz.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broadcaster.drivers.base import Capability, Delivery, DriverHost, Plan, Report
from broadcaster.drivers.rtp.paging import (
    PAGING_CODEC,
    Address,
    Holders,
    fan_out,
    route_name,
    rtcp_of,
)
from broadcaster.errors import BroadcasterError, SpeakerError
from broadcaster.protocol.stream import Destination, RtpSender
from broadcaster.site import Site

log = logging.getLogger(__name__)
RESOLVE_TIMEOUT = 2.0  # seconds to resolve a host name at set-up before refusing that speaker


@dataclass
class PagingSender(RtpSender):
    """An RtpSender that can end its stream on one address, and says when the stream ended."""

    on_end: Callable[[PagingSender], None] | None = None
    ended: bool = False

    def end(self, frames: int, now: float) -> None:
        """The final report and BYE to every destination; the addresses are free afterwards."""
        super().end(frames, now)
        self.ended = True
        if self.on_end:
            self.on_end(self)

    def cut(self, address: Address) -> bool:
        """Stop sending to `address` (BYE there if the stream started); False if not sent there."""
        gone = [d for d in self.destinations if d.rtp == address]
        if not gone:
            return False
        keep = [d for d in self.destinations if d.rtp != address]
        if self.base_time and not self.ended:  # started: tell the speakers this stream ended
            self.destinations = gone
            try:
                self._report(self.next_index, final=True)
            finally:
                self.destinations = keep
        self.destinations = keep
        return True


@dataclass
class _Run:
    """The driver's state for one broadcast."""

    broadcast: str
    sender: PagingSender
    streams: dict[Address, list[str]]  # destination (resolved) -> the speakers it serves
    cut_by: dict[str, str] = field(default_factory=dict)  # speaker -> broadcast that took over


class RtpDriver:
    """Plain RTP paging speakers: multicast-capable, nothing else."""

    name = "rtp"
    capabilities = frozenset({Capability.MULTICAST})

    def __init__(self, site: Site, options: Any) -> None:
        self.site = site
        self.opt = options  # the controller's options; media goes out through the host's sockets
        self.speakers: list[str] = []
        self.holders: Holders[_Run] = Holders()
        self._host: DriverHost | None = None

    async def start(self, host: DriverHost, speakers: list[str]) -> None:
        """Every configured speaker is online, located at its static address."""
        self._host = host
        self.speakers = sorted(speakers)
        for sid in self.speakers:
            addr = self.site.speakers[sid].address
            if addr is None:  # the loader requires one; a hand-built Site may lack it
                host.speaker_failed(sid, "no address in zones.yaml")
                continue
            host.speaker_located(sid, addr[0], addr[1], "static")
            host.speaker_seen(sid, {})

    async def close(self) -> None:
        """Nothing to release: the media sockets are the controller's."""
        self.holders = Holders()

    async def prepare(self, plan: Plan, speakers: list[str]) -> Delivery:
        """One stream per distinct address; an address another broadcast holds is taken over."""
        assert self._host is not None
        delivery = Delivery(self.name, None)
        configured: dict[str, Address] = {}
        for sid in speakers:
            addr = self.site.speakers[sid].address
            if addr is None:
                delivery.refused[sid] = ("unreachable", "no address in zones.yaml")
            else:
                configured[sid] = addr
        wanted = sorted(set(configured.values()))
        found = dict(zip(wanted, await asyncio.gather(*(_resolve(a) for a in wanted))))
        dests: dict[str, Address] = {}
        for sid, addr in configured.items():
            resolved = found[addr]
            if resolved is None:
                why = f"cannot resolve {addr[0]!r} to an IPv4 address"
                delivery.refused[sid] = ("unreachable", why)
            else:
                dests[sid] = resolved
        sender = PagingSender(PAGING_CODEC, self._host.send, key=None, on_end=self._ended)
        run = _Run(plan.broadcast, sender, fan_out(dests))
        delivery.state = run
        for dest, sids in run.streams.items():
            self._hold(delivery, dest, sids)
            for sid in sids:
                delivery.accepted[sid] = route_name(configured[sid])
        if delivery.accepted:
            delivery.sender = sender
        return delivery

    def _hold(self, delivery: Delivery, dest: Address, sids: list[str]) -> None:
        """Send this run's stream to `dest` for these speakers, taking the address over."""
        run: _Run = delivery.state
        prior = self.holders.take(dest, run)
        if prior is not None:
            self._take_over(prior, dest, run.broadcast)
        d = next((d for d in run.sender.destinations if d.rtp == dest), None)
        if d is None:
            d = Destination(dest, rtcp_of(dest))
            run.sender.destinations.append(d)
        for sid in sids:  # the core drops a destination when every speaker on it was cut
            delivery.destinations[sid] = d

    def _take_over(self, prior: _Run, dest: Address, by: str) -> None:
        """Two pages on one address would be mixed: the older stream ends there."""
        if prior.sender.ended or not prior.sender.cut(dest):
            return
        sids = prior.streams.get(dest, [])
        for sid in sids:
            prior.cut_by[sid] = by
        assert self._host is not None
        self._host.publish(
            "rtp_taken_over",
            broadcast=prior.broadcast,
            by=by,
            address=f"{dest[0]}:{dest[1]}",
            speakers_list=sids,
        )

    def _ended(self, sender: PagingSender) -> None:
        for dest, run in list(self.holders.by_address.items()):
            if run.sender is sender:
                self.holders.release(dest, run)

    async def stop(self, delivery: Delivery, speakers: list[str], reason: str) -> None:
        """End the stream (BYE) on every address whose speakers are all being stopped.

        A group shared with speakers that are not stopped keeps its stream: a multicast stream
        cannot be cut for some of its listeners only.
        """
        run: _Run | None = delivery.state
        if run is None:
            return
        stopping = set(speakers)
        for dest, sids in run.streams.items():
            if stopping.issuperset(sids):
                run.sender.cut(dest)
                self.holders.release(dest, run)

    async def set_volume(self, speaker: str, volume: int) -> None:
        """Not offered (no VOLUME capability): a paging speaker's volume is set on the device."""
        raise SpeakerError(
            f"speaker {speaker}: plain RTP paging has no volume control; set it on the device",
            code="unsupported",
        )

    async def rejoin(self, delivery: Delivery, plan: Plan, speakers: list[str]) -> list[str]:
        """Send the running stream to these speakers' addresses again: a paging speaker needs no
        set-up and plays whatever arrives. (RESUME is not declared yet: the core does not call
        it.)"""
        run: _Run | None = delivery.state
        if run is None or run.sender.ended:
            return []
        back = []
        for dest, sids in run.streams.items():
            mine = [sid for sid in sids if sid in speakers]
            if mine:
                self._hold(delivery, dest, sids)
                back += mine
        return back

    async def reports(
        self, delivery: Delivery, speakers: list[str], deadline: float
    ) -> dict[str, Report | BroadcasterError | None]:
        """Not offered (no REPORT capability): a paging speaker cannot say what it played."""
        return dict.fromkeys(speakers)


async def _resolve(address: Address) -> Address | None:
    """The IPv4 destination of a configured address (the media sockets are IPv4), or None."""
    host, port = address
    try:
        ipaddress.IPv4Address(host)
        return address
    except ValueError:
        pass
    if ":" in host:  # an IPv6 literal
        return None
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM),
            RESOLVE_TIMEOUT,
        )
    except (TimeoutError, OSError) as exc:
        log.info("cannot resolve %s: %s", host, exc)
        return None
    return (str(infos[0][4][0]), port) if infos else None
