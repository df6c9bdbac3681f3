"""Browsing by mDNS on loopback: zeroconf runs on a thread of its own, callbacks on the caller's."""

from __future__ import annotations

import asyncio
import threading

from broadcaster.net.mdns import Advert, Browser, open_zeroconf, register, unregister
from tests.support.harness import site_tag


async def wait_for(cond, timeout: float = 15.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "not in time"
        await asyncio.sleep(0.05)


async def test_a_speaker_is_found_and_withdrawn_with_zeroconf_off_the_callers_loop():
    tag = site_tag()
    found: list[tuple[Advert, str]] = []
    removed: list[tuple[Advert, str]] = []
    here = threading.current_thread().name

    def on_found(a: Advert) -> None:
        found.append((a, threading.current_thread().name))

    def on_removed(a: Advert) -> None:
        removed.append((a, threading.current_thread().name))

    mine = Advert("h1-1", "horn", "127.0.0.1", 40123, 40200, tag)
    other = Advert("h9-9", "horn", "127.0.0.1", 40125, 40202, site_tag())  # another site
    speaker = open_zeroconf(["127.0.0.1"])
    browser = Browser(["127.0.0.1"], tag, on_found, on_removed)
    try:
        await browser.start()
        assert any(t.name == "mdns" for t in threading.enumerate())
        await register(speaker, [mine, other])
        await wait_for(lambda: found)
        assert found == [(mine, here)]  # on the caller's thread; the other site's ignored
        await unregister(speaker, [mine])
        await wait_for(lambda: removed)
        assert removed == [(mine, here)]
    finally:
        await browser.close()
        await speaker.async_close()
    assert not any(t.name == "mdns" for t in threading.enumerate())
    await browser.close()  # a second close is harmless
