"""Plain RTP paging without I/O: which stream goes where, and which broadcast holds each address.

Paging speakers (Algo, CyberData, most SIP speakers) listen on a multicast group or a unicast
port for G.711 µ-law in 20 ms packets (RFC 3551 PT 0) with RTCP on the next port. They have no
play clock, no authentication and no way to say what they played. Speakers that share a group are
one stream; two streams on one group and port would be mixed by the speakers, so each address
is held by one broadcast at a time and the newest takes it over, as our own speakers do.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from broadcaster.protocol.codecs import PCMU, Codec

PAGING_CODEC: Codec = PCMU  # what every paging speaker decodes, whatever the broadcast's codec
Address = tuple[str, int]
T = TypeVar("T")


def is_group(host: str) -> bool:
    """True if host is an IPv4 multicast group literal."""
    try:
        return ipaddress.IPv4Address(host).is_multicast
    except ValueError:
        return False


def route_name(address: Address) -> str:
    """How the broadcast record names the route: 'rtp multicast G:P' or 'rtp unicast H:P'."""
    host, port = address
    return f"rtp {'multicast' if is_group(host) else 'unicast'} {host}:{port}"


def rtcp_of(address: Address) -> Address:
    """RTCP goes to the next port (RFC 3550 §11)."""
    return address[0], address[1] + 1


def fan_out(destinations: dict[str, Address]) -> dict[Address, list[str]]:
    """Speakers by destination, in address order: speakers sharing a group get one stream."""
    out: dict[Address, list[str]] = {}
    for sid in sorted(destinations):
        out.setdefault(destinations[sid], []).append(sid)
    return dict(sorted(out.items()))


@dataclass
class Holders(Generic[T]):
    """Which broadcast's stream each destination carries; bounded by the number of addresses."""

    by_address: dict[Address, T] = field(default_factory=dict)

    def take(self, address: Address, run: T) -> T | None:
        """`run` takes the address; returns the run that held it before (to be cut), if another."""
        prior = self.by_address.get(address)
        self.by_address[address] = run
        return prior if prior is not None and prior is not run else None

    def release(self, address: Address, run: T) -> None:
        """`run` lets the address go (only if it still holds it)."""
        if self.by_address.get(address) is run:
            del self.by_address[address]

    def held_by(self, address: Address) -> T | None:
        """The run holding an address, if any."""
        return self.by_address.get(address)
