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
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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

    Zeroconf runs on an event loop of its own, in a thread of its own (`mdns`); the callbacks
    are called on the caller's loop. A thousand speakers' records cost zeroconf's cache up to
    25 ms in one turn when they expire together, ~120 s after a discovery, and discovery's
    reads 16-19 ms turns (scripts/bench_scale --turns-ms): no longer turns of the caller's loop.
    Zeroconf's own compiled (Cython) code still holds the GIL until it is done, so the caller
    may wait that long for it (docs/scale.md, item 46); our Python parts let go at the switch
    interval.
    """

    def __init__(
        self,
        interfaces: list[str],
        site: str,
        on_found: Callable[[Advert], None],
        on_removed: Callable[[Advert], None] | None = None,
    ) -> None:
        self.interfaces = interfaces
        self.site = site
        self.on_found = on_found
        self.on_removed = on_removed
        self._loop: asyncio.AbstractEventLoop | None = None  # the caller's
        self._own: asyncio.AbstractEventLoop | None = None  # zeroconf's, on its thread
        self._thread: threading.Thread | None = None
        # the rest lives on zeroconf's loop only
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task] = set()
        self._named: dict[str, Advert] = {}  # instance name → the last advert resolved for it

    async def start(self) -> None:
        """Begin browsing; QM questions so answers reach every process sharing port 5353."""
        self._loop = asyncio.get_running_loop()
        self._own = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._own.run_forever, name="mdns", daemon=True)
        self._thread.start()
        await self._there(self._start())

    async def _there(self, coro: Any) -> Any:
        """Run a coroutine on zeroconf's loop and wait for it from the caller's."""
        assert self._own is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._own))

    async def _start(self) -> None:
        self._azc = open_zeroconf(self.interfaces)
        self._browser = AsyncServiceBrowser(
            self._azc.zeroconf,
            SERVICE_TYPE,
            handlers=[self._changed],
            question_type=DNSQuestionType.QM,
        )

    def _tell(self, callback: Callable[[Advert], None], advert: Advert) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, advert)
        except RuntimeError:  # the caller's loop closed first: nobody left to tell
            pass

    def _changed(
        self, zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            advert = self._named.pop(name, None)
            if advert is not None and self.on_removed:
                self._tell(self.on_removed, advert)
            return
        task = asyncio.ensure_future(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        assert self._azc is not None
        info = AsyncServiceInfo(service_type, name)
        for _ in range(3):
            if await info.async_request(self._azc.zeroconf, 3000, question_type=DNSQuestionType.QM):
                break
        else:
            log.debug("could not resolve %s", name)
            return
        advert = parse_info(info)
        if advert is not None and advert.site == self.site:
            self._named[name] = advert
            self._tell(self.on_found, advert)

    async def _close(self) -> None:
        if self._browser is not None:
            await self._browser.async_cancel()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._azc is not None:
            await self._azc.async_close()

    async def close(self) -> None:
        """Stop browsing, close zeroconf and end its thread."""
        if self._own is None or self._thread is None:
            return
        try:
            await self._there(self._close())
        finally:
            self._own.call_soon_threadsafe(self._own.stop)
            await asyncio.to_thread(self._thread.join, 10)
            if not self._thread.is_alive():
                self._own.close()
            self._own = self._thread = None


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
