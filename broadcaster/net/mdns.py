"""mDNS (zeroconf) for speakers: advertise an endpoint, browse for them; the only zeroconf module.

Service type `_bcspeaker._tcp.local.`; the port is the speaker's control API (HTTP). TXT keys:
`id` speaker id, `kind` column/horn, `pv` protocol version, `rtp` RTP port, `site` the site tag a
controller filters on (two sites on one LAN, or tests beside a demo, never see each other's
speakers).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

SERVICE_TYPE = "_bcspeaker._tcp.local."
PROTOCOL_VERSION = "1"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Advert:
    """What one speaker advertises."""

    speaker_id: str
    kind: str
    host: str
    port: int
    rtp_port: int
    site: str
    version: str = PROTOCOL_VERSION


def open_zeroconf(interfaces: list[str]) -> AsyncZeroconf:
    """An mDNS stack bound to the given interface addresses only (loopback by default)."""
    return AsyncZeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)


def _instance(advert: Advert) -> str:
    return f"{advert.site}-{advert.speaker_id}.{SERVICE_TYPE}"


def _info(advert: Advert) -> AsyncServiceInfo:
    return AsyncServiceInfo(
        SERVICE_TYPE,
        _instance(advert),
        addresses=[socket.inet_aton(advert.host)],
        port=advert.port,
        properties={
            "id": advert.speaker_id,
            "kind": advert.kind,
            "pv": advert.version,
            "rtp": str(advert.rtp_port),
            "site": advert.site,
        },
        server=f"{advert.site}-{advert.speaker_id}.local.",
    )


async def register(azc: AsyncZeroconf, adverts: list[Advert]) -> None:
    """Advertise many speakers at once (probing runs concurrently)."""
    tasks = await asyncio.gather(
        *(azc.async_register_service(_info(a), allow_name_change=False) for a in adverts)
    )
    await asyncio.gather(*tasks)


async def unregister(azc: AsyncZeroconf, adverts: list[Advert]) -> None:
    """Withdraw adverts (sends goodbye packets)."""
    tasks = await asyncio.gather(
        *(azc.async_unregister_service(_info(a)) for a in adverts), return_exceptions=True
    )
    await asyncio.gather(
        *(t for t in tasks if not isinstance(t, BaseException)), return_exceptions=True
    )


class Browser:
    """Browses for speakers of one site and reports each resolved advert to a callback.

    An advert is a claim anyone on the LAN can make: callers treat it as a hint to verify.
    `on_removed` gets the last advert resolved under a name when that name is withdrawn (a
    goodbye packet or its records expiring); names never resolved for this site are ignored.
    """

    def __init__(
        self,
        azc: AsyncZeroconf,
        site: str,
        on_found: Callable[[Advert], None],
        on_removed: Callable[[Advert], None] | None = None,
    ) -> None:
        self.azc = azc
        self.site = site
        self.on_found = on_found
        self.on_removed = on_removed
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task] = set()
        self._named: dict[str, Advert] = {}  # instance name → the last advert resolved for it

    async def start(self) -> None:
        """Begin browsing; QM questions so answers reach every process sharing port 5353."""
        self._browser = AsyncServiceBrowser(
            self.azc.zeroconf,
            SERVICE_TYPE,
            handlers=[self._changed],
            question_type=DNSQuestionType.QM,
        )

    def _changed(
        self, zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            advert = self._named.pop(name, None)
            if advert is not None and self.on_removed:
                self.on_removed(advert)
            return
        task = asyncio.ensure_future(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        for _ in range(3):
            if await info.async_request(self.azc.zeroconf, 3000, question_type=DNSQuestionType.QM):
                break
        else:
            log.debug("could not resolve %s", name)
            return
        advert = parse_info(info)
        if advert is not None and advert.site == self.site:
            self._named[name] = advert
            self.on_found(advert)

    async def close(self) -> None:
        """Stop browsing."""
        if self._browser is not None:
            await self._browser.async_cancel()
        for t in list(self._tasks):
            t.cancel()


def parse_info(info: AsyncServiceInfo) -> Advert | None:
    """An Advert from resolved service info, or None if it lacks what the protocol requires."""
    props = {k.decode(): (v.decode() if v else "") for k, v in info.properties.items()}
    addrs = info.parsed_addresses(IPVersion.V4Only)
    try:
        return Advert(
            props["id"],
            props.get("kind", ""),
            addrs[0],
            int(info.port or 0),
            int(props["rtp"]),
            props.get("site", ""),
            props.get("pv", ""),
        )
    except (KeyError, IndexError, ValueError):
        log.debug("ignoring malformed advert %s: %r", info.name, props)
        return None
