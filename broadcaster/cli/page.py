"""`broadcaster page`: speak live to speakers from the sound input, a WAV file or a WAV stream.

A client of the live page WebSocket (docs/paging.md) like any desk unit or phone app: it starts
the page, waits for `ready` (the speakers are armed and the chime, if any, has played), then
sends 20 ms of s16le mono PCM at a time as it is captured. Audio captured before `ready` is
discarded, not queued, so set-up never adds to the voice's delay. Ctrl-C or the end of the
input ends the page; a cut by a higher broadcast is printed at once and ends the command.

The sound input goes through `sounddevice` (PortAudio), imported only when it is used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
import wave
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO

import aiohttp

from broadcaster.protocol.codecs import CODECS
from broadcaster.sources.live import WavStreamParser

DEFAULT_URL = "http://127.0.0.1:8600"
FRAME_S = 0.02
EXIT_CUT = 3


class PageError(Exception):
    """The controller refused the page, or the connection failed; `message` is fit to print."""

    def __init__(self, message: str, code: str = "error", status: int = 0) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


class PageClient:
    """One page over the WebSocket: `open`, `send` PCM after `ready`, `end`, `finish`."""

    def __init__(
        self,
        url: str,
        token: str | None,
        to: list[str],
        *,
        chime: str | None = None,
        rate: int = 16000,
        codec: str = "pcmu",
        priority: str = "live",
        on_message: Callable[[dict], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.start = {
            "type": "start",
            "to": to,
            "chime": chime,
            "rate": rate,
            "codec": codec,
            "priority": priority,
        }
        self.rate = rate
        self.on_message = on_message
        self.messages: list[dict] = []
        self.accepted: dict | None = None
        self.ready_msg: dict | None = None
        self.ended_msg: dict | None = None
        self.cut_msg: dict | None = None
        self.ready = asyncio.Event()
        self.closed = asyncio.Event()
        self._answered = asyncio.Event()  # accepted, refused, or closed
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task | None = None

    async def open(self, timeout: float = 15.0) -> dict:
        """Connect and start the page; returns the `accepted` message or raises PageError."""
        ws_url = self.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                f"{ws_url}/api/page",
                headers=headers,
                heartbeat=10.0,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            await self.close()
            raise PageError(
                _handshake_message(exc),
                "unauthorized" if exc.status == 401 else "refused",
                exc.status,
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            await self.close()
            raise PageError(
                f"cannot reach the controller at {self.url}: {exc}", "unreachable"
            ) from None
        await self._ws.send_str(json.dumps(self.start))
        self._reader = asyncio.ensure_future(self._read())
        try:
            await asyncio.wait_for(self._answered.wait(), timeout)
        except TimeoutError:
            await self.close()
            raise PageError("the controller did not answer the page request", "timeout") from None
        if self.accepted is None:
            err = next((m for m in self.messages if m.get("type") == "error"), None)
            await self.close()
            if err:
                raise PageError(
                    err.get("message", "refused"),
                    err.get("error", "error"),
                    int(err.get("status") or 0),
                )
            raise PageError("the controller closed the page without an answer", "closed")
        return self.accepted

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                m = json.loads(msg.data)
                self.messages.append(m)
                kind = m.get("type")
                if kind == "accepted":
                    self.accepted = m
                    self._answered.set()
                elif kind == "ready":
                    self.ready_msg = m
                    self.ready.set()
                elif kind == "cut" and m.get("all"):
                    self.cut_msg = m
                elif kind == "ended":
                    self.ended_msg = m
                if self.on_message is not None:
                    self.on_message(m)
                if self.accepted is None and kind == "error":
                    break
        finally:
            self.closed.set()
            self._answered.set()
            self.ready.set()  # nobody waits for a ready that will never come

    async def send(self, pcm: bytes) -> bool:
        """Send audio; False once the page is over (ended, cut, or the connection is gone)."""
        if self._ws is None or self._ws.closed or self.closed.is_set() or self.cut_msg:
            return False
        try:
            await self._ws.send_bytes(pcm)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            return False
        return True

    async def end(self) -> None:
        """Say the page is over (the talk button released)."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                await self._ws.send_str(json.dumps({"type": "end"}))

    async def finish(self, timeout: float = 20.0) -> dict | None:
        """Wait for the `ended` message (and the recording's id) or the socket's close."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)
        await self.close()
        return self.ended_msg

    async def close(self) -> None:
        """Close the socket and the session."""
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def _handshake_message(exc: aiohttp.WSServerHandshakeError) -> str:
    if exc.status == 401:
        return "log in first: set BROADCASTER_TOKEN to an API token (broadcaster users token)"
    if exc.status == 403:
        return "the controller refused the connection (another origin, or no access)"
    return f"the controller refused the page connection (HTTP {exc.status})"


# --- audio inputs ----------------------------------------------------------------------------


def wav_stream_rate(stream: BinaryIO) -> tuple[int, bytes]:
    """Read a WAV stream's header (blocking); returns its rate and the PCM after the header."""
    parser = WavStreamParser()
    pcm = b""
    while not parser.started:
        chunk = stream.read(4096) if parser.rate is None else stream.read(1)
        if not chunk:
            raise PageError("the input ended before its WAV header", "bad_input")
        pcm = parser.feed(chunk)
    assert parser.rate is not None
    return parser.rate, pcm


async def stream_frames(stream: BinaryIO, rate: int, first: bytes = b"") -> AsyncIterator[bytes]:
    """20 ms frames of a live stream (stdin) as they arrive, read by a thread."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    step = rate // 50 * 2

    def pump() -> None:
        buf = bytearray(first)
        try:
            while True:
                while len(buf) >= step:
                    loop.call_soon_threadsafe(queue.put_nowait, bytes(buf[:step]))
                    del buf[:step]
                chunk = stream.read1(step) if hasattr(stream, "read1") else stream.read(step)
                if not chunk:
                    break
                buf.extend(chunk)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, daemon=True, name="page-input").start()
    while (frame := await queue.get()) is not None:
        yield frame


async def file_frames(path: str) -> AsyncIterator[bytes]:
    """20 ms frames of a WAV file at its real-time pace (from the first frame's instant)."""
    try:
        w = wave.open(path, "rb")  # noqa: SIM115 - closed below
    except (OSError, wave.Error, EOFError) as exc:
        raise PageError(
            f"cannot read {path} as a WAV file: {exc}; convert it first "
            "(ffmpeg -i IN -ac 1 -f wav OUT.wav)",
            "bad_input",
        ) from None
    with w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise PageError(
                f"{path}: 16-bit mono WAV only (got {w.getnchannels()} channel(s), "
                f"{8 * w.getsampwidth()} bits)",
                "bad_input",
            )
        rate = w.getframerate()
        t0 = time.monotonic()
        k = 0
        while frame := w.readframes(rate // 50):
            wait = t0 + (k + 1) * FRAME_S - time.monotonic()  # a frame exists once captured
            if wait > 0:
                await asyncio.sleep(wait)
            yield frame
            k += 1


def wav_rate(path: str) -> int:
    """A WAV file's sample rate (PageError if it is not one)."""
    try:
        with wave.open(path, "rb") as w:
            return w.getframerate()
    except (OSError, wave.Error, EOFError) as exc:
        raise PageError(f"cannot read {path} as a WAV file: {exc}", "bad_input") from None


def _sounddevice() -> Any:
    """The sounddevice module, or PageError saying what is missing."""
    try:
        import sounddevice
    except ImportError:
        raise PageError(
            "the sound input needs the sounddevice package: pip install sounddevice "
            "(or use --input FILE|-)",
            "no_input",
        ) from None
    except OSError as exc:  # the module is there but PortAudio is not
        raise PageError(
            f"the sound input needs PortAudio ({exc}): apt-get install libportaudio2 "
            "(or use --input FILE|-)",
            "no_input",
        ) from None
    return sounddevice


def check_input_device(rate: int) -> None:
    """PageError unless a default sound input exists that records at `rate`."""
    sd = _sounddevice()
    try:
        dev = sd.query_devices(kind="input")
        sd.check_input_settings(samplerate=rate, channels=1, dtype="int16")
    except Exception as exc:  # noqa: BLE001 - PortAudio reports a missing device many ways
        raise PageError(
            f"no sound input device here ({exc}); use --input FILE|- instead", "no_input"
        ) from None
    if not dev:
        raise PageError("no sound input device here; use --input FILE|- instead", "no_input")


async def mic_frames(rate: int) -> AsyncIterator[bytes]:
    """20 ms frames from the default sound input, as the card delivers them."""
    sd = _sounddevice()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    def callback(data: Any, frames: int, when: Any, status: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, bytes(data))

    with sd.RawInputStream(
        samplerate=rate,
        channels=1,
        dtype="int16",
        blocksize=rate // 50,
        latency="low",
        callback=callback,
    ):
        while True:
            yield await queue.get()


# --- the command -----------------------------------------------------------------------------


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _print_message(m: dict) -> None:
    kind = m.get("type")
    if kind == "accepted":
        _say(f"page {m['broadcast']} accepted ({m['speakers']} speaker(s)); arming …")
    elif kind == "speakers":
        refused = m.get("refused") or {}
        extra = "".join(f", {len(m[k])} {k}" for k in ("offline",) if m.get(k))
        extra += f", {len(refused)} refused/unreachable" if refused else ""
        _say(f"  {len(m.get('playing', []))} speaker(s) playing{extra}")
    elif kind == "ready":
        _say(f"speak now (lead {m.get('lead_ms')} ms); Ctrl-C ends the page")
    elif kind == "cut":
        who = f" ({m['priority']} by {m['owner']})" if m.get("priority") else ""
        scope = "the page" if m.get("all") else f"{len(m.get('speakers', []))} speaker(s)"
        _say(f"cut: broadcast {m['by']}{who} took {scope}")
    elif kind == "ended":
        s = m.get("summary") or {}
        _say(
            f"page {m['broadcast']} ended: {m['state']} — {s.get('played', 0)}/"
            f"{s.get('speakers', 0)} speaker(s) played it"
        )
    elif kind == "recorded":
        _say(f"recorded as library clip {m['clip']}")
    elif kind == "error":
        _say(f"error: {m.get('message')}")


async def run_page(
    url: str,
    token: str | None,
    to: list[str],
    chime: str | None,
    source: str | None,
    rate: int | None = None,
    codec: str = "pcmu",
) -> int:
    """Page from the input until it ends or Ctrl-C; returns the exit status."""
    stdin_pcm = b""
    if source == "-":
        in_rate, stdin_pcm = await asyncio.to_thread(wav_stream_rate, sys.stdin.buffer)
    elif source:
        in_rate = wav_rate(source)
    else:
        in_rate = rate or 16000
        check_input_device(in_rate)
    frames: AsyncIterator[bytes] | None = None
    if source == "-":  # read from now on: what comes before `ready` is dropped, not queued
        frames = stream_frames(sys.stdin.buffer, in_rate, stdin_pcm)
    client = PageClient(
        url, token, to, chime=chime, rate=in_rate, codec=codec, on_message=_print_message
    )
    await client.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        feed = asyncio.ensure_future(_feed(client, frames, source, in_rate))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait(
            {feed, stopper, asyncio.ensure_future(client.closed.wait())},
            return_when=asyncio.FIRST_COMPLETED,
        )
        feed.cancel()
        stopper.cancel()
        await asyncio.gather(feed, return_exceptions=True)
        await client.end()
        ended = await client.finish()
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
        await client.close()
    if client.cut_msg is not None:
        return EXIT_CUT
    return 0 if ended is not None and ended.get("state") in ("done", "stopped") else 1


async def _feed(
    client: PageClient, frames: AsyncIterator[bytes] | None, source: str | None, rate: int
) -> None:
    """Send the input's frames once the page is ready (earlier ones are dropped)."""
    if frames is not None:  # a live stream: keep reading, send only from `ready` on
        async for frame in frames:
            if client.ready.is_set() and not await client.send(frame):
                return
        return
    await client.ready.wait()
    frames = file_frames(source) if source else mic_frames(rate)
    async for frame in frames:
        if not await client.send(frame):
            return


def cmd_page(args: argparse.Namespace) -> int:
    """broadcaster page --to T [--to …] [--chime NAME] [--input FILE|-]."""
    url = args.controller or os.environ.get("BROADCASTER_URL") or DEFAULT_URL
    try:
        return asyncio.run(
            run_page(
                url,
                os.environ.get("BROADCASTER_TOKEN"),
                args.to,
                args.chime,
                args.input,
                args.rate,
                args.codec,
            )
        )
    except PageError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `page` command to a `broadcaster` sub-command parser."""
    p = subparsers.add_parser(
        "page", help="speak live to speakers (sound input, WAV file or a WAV stream on stdin)"
    )
    p.add_argument(
        "--to",
        action="append",
        required=True,
        help="a speaker, village, area, group or the subdistrict (repeatable)",
    )
    p.add_argument("--chime", help="a chime before the voice (two-tone, four-tone, …)")
    p.add_argument(
        "--input",
        metavar="FILE|-",
        help="a WAV file (sent at its real-time pace) or - for a WAV stream on stdin "
        "(as `sox … -t wav -` writes it); default: the sound input",
    )
    p.add_argument(
        "--rate", type=int, default=16000, help="sound input sample rate (default 16000)"
    )
    p.add_argument(
        "--codec",
        default="pcmu",
        choices=list(CODECS),
        help="what the speakers receive (default pcmu)",
    )
    p.set_defaults(func=cmd_page)
