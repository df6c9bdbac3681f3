"""The controller's side of the speaker control API: signed requests, verified answers."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import aiohttp

from broadcaster import jsonio
from broadcaster.errors import SpeakerError
from broadcaster.protocol.auth import NONCE_BYTES, new_nonce, response_mac, sign_request
from broadcaster.protocol.control import (
    MAX_DATAGRAM,
    ControlAnswer,
    ControlDatagramError,
    ControlRequest,
)

# waits before each send of a control datagram (the same request again: the speaker answers a
# repeat from its cache); no answer after the last, and the request goes by HTTP, freshly signed
DATAGRAM_TRIES = (0.15, 0.3, 0.45)
WAVE = 32  # requests `call_many` has in flight at once by datagram (one wave, one turn)
SINGLE = 64  # requests it has in flight one by one (HTTP, channel)
_RANDOM_EACH = NONCE_BYTES + 4  # random bytes a request of a wave takes: its nonce and its id


class _Signed(NamedTuple):
    """A request of `call_many` signed for its datagram: its place in the answers, the key and
    nonce its answer is checked with, where it goes, its id and its bytes."""

    at: int
    key: bytes
    nonce: str
    route: tuple[str, int]
    rid: int
    data: bytes


class _Wave:
    """The answers to a wave of request datagrams, by request id, and one future that is done
    when every request has its answer: a thousand requests are a few dozen futures and wake-ups,
    not one each (scripts/bench_setup)."""

    __slots__ = ("signed", "answers", "all_in")

    def __init__(self, signed: list[_Signed]) -> None:
        self.signed = signed
        self.answers: dict[int, ControlAnswer] = {}
        self.all_in: asyncio.Future = asyncio.get_running_loop().create_future()

    def answer(self, rid: int, answer: ControlAnswer) -> None:
        """An answer came (the first for its request counts)."""
        self.answers.setdefault(rid, answer)
        if len(self.answers) == len(self.signed) and not self.all_in.done():
            self.all_in.set_result(None)


class Call(NamedTuple):
    """One control request of `SpeakerLink.call_many`."""

    speaker: str
    host: str
    port: int
    method: str
    path: str
    body: dict | None = None


class SpeakerLink:
    """Sends HMAC-signed control requests to our endpoints over one shared HTTP session."""

    def __init__(
        self, keys: dict[str, bytes], timeout: float = 2.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.keys = keys
        self.clock = clock
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        # speakers that dialed in (drivers/bcspeaker/dialin.py): their requests take the channel
        self.channels: dict[str, Any] = {}
        # where a speaker takes control datagrams, if it does and its UDP path works (the
        # driver decides from its heartbeats); and how to send one
        # (speaker, host, port) → address for datagrams; only for the address it is known at, so
        # a request meant for another address (verifying an advert) never goes by datagram
        self.datagram_to: Callable[[str, str, int], tuple[str, int] | None] = lambda *a: None
        self.send_datagram: Callable[[bytes, tuple[str, int]], None] | None = None
        # request id → the wave awaiting its answer, and where the request went
        self._pending: dict[int, tuple[_Wave, tuple[str, int]]] = {}
        self.datagram_fallbacks = 0  # requests that found no answer by datagram and took HTTP
        self._slots = asyncio.Semaphore(SINGLE)

    def awaiting(self) -> bool:
        """Whether control answers by datagram are awaited (their socket is then read at once)."""
        return bool(self._pending)

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # no keep-alive: HTTP is the way when datagrams fail, which is rare for most
            # speakers, and the connector closed its idle connections to a thousand of them in
            # one callback (143 ms in asyncio's debug mode at 1,000: bench_scale --slow-callback)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=4, force_close=True),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def call(
        self,
        speaker_id: str,
        host: str,
        port: int,
        method: str,
        path: str,
        body: dict | None = None,
        timeout: float | None = None,
        datagram: bool = True,
    ) -> dict[str, Any]:
        """One signed request; returns the JSON answer or raises SpeakerError naming the speaker.
        `datagram=False`: not by datagram (its datagrams went unanswered already)."""
        key = self.keys.get(speaker_id)
        if key is None:
            raise SpeakerError(
                f"speaker {speaker_id}: no pairing key in the key store", code="speaker_unpaired"
            )
        raw = _body(body)
        channel = self.channels.get(speaker_id)
        route = None
        if channel is None and datagram:
            route = self.datagram_to(speaker_id, host, port)
        if route is not None and self.send_datagram is not None:
            nonce, auth = self._sign(speaker_id, key, method, path, raw)
            req = ControlRequest(secrets.randbits(32), method, path, auth, raw)
            data = req.encode()
            if len(data) <= MAX_DATAGRAM:
                answer = await self._by_datagram(req.id, data, route)
                if answer is not None:
                    return _verified(speaker_id, key, nonce, answer.status, answer.body, answer.mac)
                self.datagram_fallbacks += 1
        nonce, auth = self._sign(speaker_id, key, method, path, raw)
        try:
            if channel is not None:  # dialed in: the same signed request over its channel
                status, data, mac = await channel.exchange(
                    method, path, raw, auth, timeout or self.timeout
                )
            else:
                http = await self._http()
                async with http.request(
                    method,
                    f"http://{host}:{port}{path}",
                    data=raw or None,
                    headers={"Authorization": auth, "Content-Type": "application/json"},
                    timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
                ) as resp:
                    status, data = resp.status, await resp.read()
                    mac = resp.headers.get("X-BC-MAC", "")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise SpeakerError(
                f"speaker {speaker_id} at {host}:{port} did not answer ({type(exc).__name__})",
                code="speaker_unreachable",
            ) from None
        return _verified(speaker_id, key, nonce, status, data, mac)

    def _sign(
        self,
        speaker_id: str,
        key: bytes,
        method: str,
        path: str,
        raw: bytes,
        nonce: str | None = None,
    ) -> tuple[str, str]:
        """A request's nonce (kept, to check the answer against) and its Authorization value."""
        nonce = nonce or new_nonce()
        return nonce, sign_request(speaker_id, key, method, path, raw, self.clock(), nonce)

    async def call_many(
        self, calls: Iterable[Call], limit: int = WAVE
    ) -> list[dict[str, Any] | SpeakerError]:
        """Many signed requests at once, each answer or SpeakerError in the order given.

        Those that can go by datagram go in waves of `limit`: a wave is signed and sent in one
        pass, and the next is signed (and `calls`, which may be a generator, drawn from) while
        it is in flight, in a turn of the loop of its own (no turn signs two waves); a wave
        waits for its answers (sending the missing ones again at the same intervals as `call`)
        before the next is sent, and what stays unanswered goes the way `call` takes. Setting a
        broadcast up on a thousand speakers is then a few dozen turns of the loop of a few
        milliseconds each, not a task, a future and a timer per speaker, nor one long block of
        signing (scripts/bench_setup)."""
        out: list[dict[str, Any] | SpeakerError | None] = []
        asked: list[Call] = []
        one_by_one: list[int] = []  # not by datagram
        unanswered: list[int] = []  # by datagram, in vain
        it = iter(calls)
        flying: _Wave | None = None
        first = True
        try:
            while True:
                drawn = len(asked)
                wave = self._sign_wave(it, limit, asked, out, one_by_one)
                drawn = len(asked) - drawn  # (none can go by datagram: the wave is empty)
                if flying is not None:  # the wave in flight answers while this one was signed
                    await self._await_wave(flying)
                    self._collect(flying, asked, out, unanswered)
                    flying = None
                if wave:
                    flying = self._send_wave(wave)
                    if first and len(wave) == limit:  # more may follow: each turn signs one wave
                        first = False
                        await asyncio.sleep(0)
                elif not drawn:  # every call drawn
                    break
        finally:
            if flying is not None:  # cancelled in between: nothing is left awaited
                for signed in flying.signed:
                    self._pending.pop(signed.rid, None)

        async def single(i: int, datagram: bool) -> None:
            c = asked[i]
            async with self._slots:
                try:
                    out[i] = await self.call(
                        c.speaker, c.host, c.port, c.method, c.path, c.body, datagram=datagram
                    )
                except SpeakerError as exc:
                    out[i] = exc

        await asyncio.gather(
            *(single(i, True) for i in one_by_one), *(single(i, False) for i in unanswered)
        )
        return out  # type: ignore[return-value]  # every slot is filled by now

    def _sign_wave(
        self,
        calls: Iterator[Call],
        limit: int,
        asked: list[Call],
        out: list,
        one_by_one: list[int],
    ) -> list[_Signed]:
        """Sign the datagrams of the next `limit` calls; those that cannot go by datagram wait
        for `call` (their index in `one_by_one`). The wave's nonces and request ids are cut
        from one draw of random bytes (one call for the wave, not two per request)."""
        wave = []
        rand = secrets.token_bytes(_RANDOM_EACH * limit)
        for k, c in enumerate(itertools.islice(calls, limit)):
            i = len(asked)
            asked.append(c)
            out.append(None)
            key = self.keys.get(c.speaker)
            route = None
            if key is not None and c.speaker not in self.channels and self.send_datagram:
                route = self.datagram_to(c.speaker, c.host, c.port)
            if route is None or key is None:
                one_by_one.append(i)
                continue
            raw = _body(c.body)
            at = k * _RANDOM_EACH
            nonce, auth = self._sign(
                c.speaker, key, c.method, c.path, raw, rand[at : at + NONCE_BYTES].hex()
            )
            rid = int.from_bytes(rand[at + NONCE_BYTES : at + _RANDOM_EACH], "big")
            data = ControlRequest(rid, c.method, c.path, auth, raw).encode()
            if len(data) > MAX_DATAGRAM:
                one_by_one.append(i)
                continue
            wave.append(_Signed(i, key, nonce, route, rid, data))
        return wave

    def _collect(self, wave: _Wave, asked: list[Call], out: list, unanswered: list[int]) -> None:
        """Verify a wave's answers into `out`; the unanswered wait for `call`."""
        answers = wave.answers
        for w in wave.signed:
            a = answers.get(w.rid)
            if a is None:
                self.datagram_fallbacks += 1
                unanswered.append(w.at)
                continue
            try:
                out[w.at] = _verified(asked[w.at].speaker, w.key, w.nonce, a.status, a.body, a.mac)
            except SpeakerError as exc:
                out[w.at] = exc

    def _send_wave(self, signed: list[_Signed]) -> _Wave:
        """Send every request of a wave once; the wave, to await its answers."""
        send = self.send_datagram
        assert send is not None
        wave = _Wave(signed)
        for w in signed:
            self._pending[w.rid] = (wave, w.route)
        for w in signed:
            send(w.data, w.route)
        return wave

    async def _await_wave(self, wave: _Wave) -> None:
        """Wait for a sent wave's answers, sending the missing ones again after each wait but
        the last."""
        send = self.send_datagram
        assert send is not None
        try:
            for k, wait in enumerate(DATAGRAM_TRIES):
                if wave.all_in.done():
                    break
                if k:  # the same request again: answered from the speaker's cache
                    for w in wave.signed:
                        if w.rid not in wave.answers:
                            send(w.data, w.route)
                await asyncio.wait((wave.all_in,), timeout=wait)
        finally:
            for w in wave.signed:
                self._pending.pop(w.rid, None)

    async def _by_datagram(
        self, rid: int, data: bytes, to: tuple[str, int]
    ) -> ControlAnswer | None:
        """Send a request datagram, again after each wait; the answer, or None."""
        wave = self._send_wave([_Signed(0, b"", "", to, rid, data)])
        await self._await_wave(wave)
        return wave.answers.get(rid)

    def on_answer(self, data: bytes, addr: tuple) -> None:
        """A control answer datagram: to the request it answers, if it came from where that
        request went (its MAC is checked by the caller, as over HTTP)."""
        try:
            answer = ControlAnswer.decode(data)
        except ControlDatagramError:
            return
        pending = self._pending.get(answer.id)
        if pending is not None and tuple(addr[:2]) == pending[1]:
            pending[0].answer(answer.id, answer)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()


def _body(body: dict | None) -> bytes:
    return jsonio.dumps(body) if body is not None else b""


def _verified(
    speaker_id: str, key: bytes, nonce: str, status: int, data: bytes, mac: str
) -> dict[str, Any]:
    """The JSON of an answer whose MAC verifies, or the SpeakerError it deserves."""
    if not hmac.compare_digest(mac, response_mac(key, nonce, status, data)):
        raise SpeakerError(
            f"speaker {speaker_id}: answer is not authenticated (HTTP {status})",
            code="speaker_unauthenticated",
        )
    try:
        out = jsonio.loads(data) if data else {}
    except ValueError:
        raise SpeakerError(
            f"speaker {speaker_id}: answer is not JSON", code="speaker_malformed"
        ) from None
    if status >= 400:
        raise SpeakerError(
            f"speaker {speaker_id}: {out.get('message', status)}",
            code=out.get("error", "speaker_error"),
        )
    return out
