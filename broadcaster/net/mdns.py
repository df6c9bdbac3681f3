"""mDNS (zeroconf) for speakers: advertise an endpoint, browse for them; the only zeroconf module.

Service type `_bcspeaker._tcp.local.`; the port is the speaker's control API (HTTP). TXT keys:
`id` speaker id, `kind` column/horn, `pv` protocol version, `rtp` RTP port, `site` the site tag a
controller filters on (two sites on one LAN, or tests beside a demo, never see each other's
speakers).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from broadcaster import jsonio

SERVICE_TYPE = "_bcspeaker._tcp.local."
PROTOCOL_VERSION = "1"
log = logging.getLogger(__name__)
LINES_PER_TURN = 50  # adverts handed to the caller per turn of its loop
RESTART_FIRST, RESTART_LAST = 1.0, 60.0  # s: a browsing process that died is started again
START_WAIT = 30  # s a browsing process has to say it browses
END_WAIT = 5.0  # s a browsing process is given to close zeroconf before it is killed


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

    Zeroconf runs in a process of its own (`python -m broadcaster.net.mdns browse`), which
    writes each advert of this site to its standard output as a line of JSON; the callbacks are
    called on the caller's loop. The process ends when its standard input closes, so it never
    outlives the controller. In a thread of the controller, zeroconf's compiled (Cython) code
    kept the GIL until it returned: the clean-up of 1,000 speakers' records expiring together,
    ~120 s after a discovery, held the controller's loop 14-25 ms, and zeroconf's garbage was
    the controller's to collect (docs/scale.md, items 46 and 49). If the process dies it is
    started again, after 1 s and up to a minute apart.
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
        self.pid: int | None = None  # the browsing process's, while it runs
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    async def start(self) -> None:
        """Start the browsing process; returns once it browses (or raises what stopped it)."""
        self._closing = False
        await self._spawn()
        self._task = asyncio.ensure_future(self._run())

    async def _spawn(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # where `broadcaster` is importable
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        args = ["browse", "--site", self.site, *(f"--interface={i}" for i in self.interfaces)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), START_WAIT)
        except TimeoutError:
            first = b'{"error": "no word from it in %d s"}' % START_WAIT
        except asyncio.CancelledError:  # closed while it starts: it ends too
            await _end(proc)
            raise
        try:
            hello = jsonio.loads(first) if first else {"error": "exited before browsing"}
        except ValueError:
            hello = {"error": f"said {first[:80]!r}"}
        if "error" in hello or not hello.get("browsing"):
            await _end(proc)
            raise OSError(f"mDNS browser did not start: {hello.get('error')}")
        self._proc, self.pid = proc, proc.pid

    async def _run(self) -> None:
        wait = RESTART_FIRST
        while True:
            proc = self._proc
            if proc is not None:
                began = time.monotonic()
                await self._read(proc)
                await _end(proc)
                self._proc = self.pid = None
                if time.monotonic() - began > RESTART_LAST:  # it ran well: a new series of waits
                    wait = RESTART_FIRST
            if self._closing:
                return
            log.warning(
                "mDNS browser ended (exit %s); starting it again in %.0f s",
                proc.returncode if proc else None,
                wait,
            )
            await asyncio.sleep(wait)
            wait = min(wait * 2, RESTART_LAST)
            try:
                await self._spawn()
                self.restarts += 1
            except OSError as e:
                log.warning("%s", e)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        """Hand each line's advert to its callback, a few dozen per turn of the loop."""
        assert proc.stdout is not None
        n = 0
        while line := await proc.stdout.readline():
            try:
                said = jsonio.loads(line)
                advert = Advert(**said["advert"])
                callback = self.on_found if said["event"] == "found" else self.on_removed
            except (ValueError, KeyError, TypeError):
                log.warning("mDNS browser said %r", line[:120])
                continue
            if callback is not None:
                try:
                    callback(advert)
                except Exception:  # the caller's fault: logged, and browsing goes on
                    log.exception("mDNS callback failed for %s", advert.speaker_id)
            n += 1
            if n % LINES_PER_TURN == 0:
                await asyncio.sleep(0)

    async def close(self) -> None:
        """Stop browsing: the process ends when its input closes."""
        self._closing = True
        if self._proc is not None:
            await _end(self._proc)
        if self._task is not None:
            self._task.cancel()  # it may be waiting to start the process again
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._proc = self.pid = None


async def _end(proc: asyncio.subprocess.Process) -> None:
    """Close the process's input (it then closes zeroconf and exits); kill it if it lingers."""
    if proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), END_WAIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _say(obj: dict) -> None:
    """One line of JSON to the controller (the browsing process's only way to speak)."""
    try:
        sys.stdout.buffer.write(jsonio.dumps(obj) + b"\n")
        sys.stdout.buffer.flush()
    except OSError:  # the caller is gone: the end of standard input ends this process
        pass


async def _browse(interfaces: list[str], site: str) -> bool:
    """The browsing process: adverts of `site` out as JSON lines until standard input closes."""
    loop = asyncio.get_running_loop()
    named: dict[str, Advert] = {}  # instance name → the last advert resolved for it
    tasks: set[asyncio.Task] = set()

    def say(event: str, advert: Advert) -> None:
        _say({"event": event, "advert": asdict(advert)})

    async def resolve(azc: AsyncZeroconf, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        for _ in range(3):
            if await info.async_request(azc.zeroconf, 3000, question_type=DNSQuestionType.QM):
                break
        else:
            log.debug("could not resolve %s", name)
            return
        advert = parse_info(info)
        if advert is not None and advert.site == site:
            named[name] = advert
            say("found", advert)

    def changed(zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            advert = named.pop(name, None)
            if advert is not None:
                say("removed", advert)
            return
        task = asyncio.ensure_future(resolve(azc, service_type, name))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        azc = open_zeroconf(interfaces)
        browser = AsyncServiceBrowser(
            azc.zeroconf, SERVICE_TYPE, handlers=[changed], question_type=DNSQuestionType.QM
        )
    except Exception as e:  # noqa: BLE001 - told to the controller, which raises it
        _say({"error": f"{type(e).__name__}: {e}"})
        return False
    _say({"browsing": True})
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while await stdin.read(4096):  # nothing is said on it: its end is the signal
        pass
    await browser.async_cancel()
    for t in list(tasks):
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await azc.async_close()
    return True


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


def main(argv: list[str] | None = None) -> None:
    """`python -m broadcaster.net.mdns browse --site TAG --interface ADDR`: see Browser."""
    p = argparse.ArgumentParser(prog="python -m broadcaster.net.mdns")
    p.add_argument("command", choices=["browse"])
    p.add_argument("--site", required=True)
    p.add_argument("--interface", action="append", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="mdns: %(levelname)s %(message)s")
    raise SystemExit(0 if asyncio.run(_browse(args.interface, args.site)) else 1)


if __name__ == "__main__":
    main()
