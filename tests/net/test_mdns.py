"""Browsing by mDNS on loopback: zeroconf runs in a process of its own, callbacks on the caller's
loop; the process ends with its caller and is started again if it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from broadcaster.net.mdns import Advert, Browser, open_zeroconf, register, unregister
from tests.support.harness import site_tag


async def wait_for(cond, timeout: float = 15.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "not in time"
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_speaker_is_found_and_withdrawn_by_a_browsing_process_of_its_own():
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
        pid = browser.pid
        assert pid is not None and pid != os.getpid() and alive(pid)
        await register(speaker, [mine, other])
        await wait_for(lambda: found)
        assert found == [(mine, here)]  # on the caller's thread; the other site's ignored
        await unregister(speaker, [mine])
        await wait_for(lambda: removed)
        assert removed == [(mine, here)]
    finally:
        await browser.close()
        await speaker.async_close()
    assert not alive(pid)
    assert browser.pid is None
    await browser.close()  # a second close is harmless


async def test_a_browsing_process_that_dies_is_started_again_and_finds_the_speakers_again():
    tag = site_tag()
    found: list[Advert] = []
    mine = Advert("h1-2", "horn", "127.0.0.1", 40127, 40204, tag)
    speaker = open_zeroconf(["127.0.0.1"])
    browser = Browser(["127.0.0.1"], tag, found.append)
    try:
        await register(speaker, [mine])
        await browser.start()
        await wait_for(lambda: found)
        first = browser.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: browser.pid not in (None, first))
        assert browser.restarts == 1
        await wait_for(lambda: len(found) == 2)
        assert found == [mine, mine]
    finally:
        await browser.close()
        await unregister(speaker, [mine])
        await speaker.async_close()


async def test_a_browser_that_cannot_open_says_why():
    browser = Browser(["no-such-address"], site_tag(), lambda a: None)
    with pytest.raises(OSError, match="no-such-address"):
        await browser.start()
    assert browser.pid is None
    await browser.close()


def test_the_browsing_process_ends_when_its_caller_is_killed(tmp_path):
    """SIGKILL gives the caller no chance to close it: the end of its input does."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from broadcaster.net.mdns import Browser

        async def main():
            b = Browser(["127.0.0.1"], sys.argv[1], lambda a: None)
            await b.start()
            print(b.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    caller = subprocess.Popen(
        [sys.executable, "-c", script, site_tag()], stdout=subprocess.PIPE, text=True
    )
    try:
        assert caller.stdout is not None
        pid = int(caller.stdout.readline())
        assert alive(pid)
    finally:
        caller.kill()
        caller.wait()
    for _ in range(100):
        if not alive(pid):
            break
        time.sleep(0.1)
    assert not alive(pid)


async def test_a_callback_that_raises_is_logged_and_browsing_goes_on(caplog):
    tag = site_tag()
    found: list[str] = []

    def on_found(a: Advert) -> None:
        found.append(a.speaker_id)
        if a.speaker_id == "h1-3":
            raise RuntimeError("the caller's own fault")

    first = Advert("h1-3", "horn", "127.0.0.1", 40129, 40206, tag)
    second = Advert("h1-4", "horn", "127.0.0.1", 40131, 40208, tag)
    speaker = open_zeroconf(["127.0.0.1"])
    browser = Browser(["127.0.0.1"], tag, on_found)
    try:
        await browser.start()
        await register(speaker, [first])
        await wait_for(lambda: found == ["h1-3"])
        await register(speaker, [second])
        await wait_for(lambda: found == ["h1-3", "h1-4"])
        assert "mDNS callback failed for h1-3" in caplog.text
        assert browser.restarts == 0
    finally:
        await browser.close()
        await unregister(speaker, [first, second])
        await speaker.async_close()


async def test_close_while_waiting_to_start_the_process_again_is_prompt():
    browser = Browser(["127.0.0.1"], site_tag(), lambda a: None)
    await browser.start()
    pid = browser.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: browser.pid is None)  # died; the next start is 1 s away
    began = asyncio.get_running_loop().time()
    await browser.close()
    assert asyncio.get_running_loop().time() - began < 0.5
    await asyncio.sleep(1.5)  # past the restart's wait: nothing was started again
    assert browser.pid is None and browser.restarts == 0
