"""One dial-in speaker's open channel on the controller's side (docs/protocol.md §8).

Signed control requests go out as text frames and their answers are matched by id; media and
clock answers go out as binary frames, clock answers ahead of the media waiting (`DialIn` in
dialin.py decides what goes this way).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import Any

from aiohttp import web

from broadcaster.protocol import dialin as msg

# packets waiting for a slow channel (TCP backing up on a bad 4G link): 3 s of 20 ms audio; older
# ones are dropped first, they would play late anyway
CHANNEL_BACKLOG = 150


class ChannelClosed(ConnectionError):
    """The speaker's channel is closed: it is unreachable until it dials in again."""


class Channel:
    """One speaker's open control channel: requests out, answers matched by id."""

    def __init__(self, speaker_id: str, ws: web.WebSocketResponse) -> None:
        self.speaker_id = speaker_id
        self.ws = ws
        self.closed = False
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._media: deque[bytes] = deque(maxlen=CHANNEL_BACKLOG)
        self._urgent: deque[bytes] = deque(maxlen=8)  # clock answers: they jump the media queue
        self._media_ready = asyncio.Event()
        self._writer: asyncio.Task | None = None
        self.media_dropped = 0  # packets pushed out of a full backlog

    def send_media(self, packet: bytes) -> None:
        """Queue one SRTP/SRTCP packet as a binary frame; never blocks (a full backlog drops the
        oldest)."""
        if self.closed:
            return
        if len(self._media) == self._media.maxlen:
            self.media_dropped += 1
        self._media.append(packet)
        self._wake()

    def send_clock(self, answer: bytes) -> None:
        """Queue a clock answer as a binary frame, ahead of the media (a sample that waits
        behind them is only a queued one, but an unqueued one is what the filter looks for)."""
        if not self.closed:
            self._urgent.append(answer)
            self._wake()

    def _wake(self) -> None:
        self._media_ready.set()
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_media())

    async def _write_media(self) -> None:
        """One writer per channel keeps the packets in order."""
        while not self.closed:
            await self._media_ready.wait()
            self._media_ready.clear()
            while (self._urgent or self._media) and not self.closed:
                frame = self._urgent.popleft() if self._urgent else self._media.popleft()
                try:
                    await self.ws.send_bytes(frame)
                except (ConnectionError, RuntimeError):  # closing: the channel's end is near
                    return

    async def exchange(
        self, method: str, path: str, body: bytes, auth: str, timeout: float
    ) -> tuple[int, bytes, str]:
        """Send one signed request; its (status, body, X-BC-MAC), or ChannelClosed/Timeout."""
        if self.closed:
            raise ChannelClosed(f"dial-in channel of {self.speaker_id} is closed")
        rid = next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self.ws.send_str(msg.request_frame(rid, method, path, auth, body))
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)

    def answer(self, frame: dict[str, Any]) -> None:
        """An answer arrived: wake its request (unknown or late ids are ignored)."""
        fut = self._pending.get(frame.get("id"))  # type: ignore[arg-type]
        if fut is None or fut.done():
            return
        status, body, mac = frame.get("status"), frame.get("body"), frame.get("mac")
        if not isinstance(status, int) or not isinstance(body, str) or not isinstance(mac, str):
            fut.set_exception(ChannelClosed(f"{self.speaker_id}: malformed answer frame"))
            return
        fut.set_result((status, body.encode(), mac))

    def close(self) -> None:
        """Fail every request in flight; later ones fail at once; queued media are dropped."""
        self.closed = True
        self._media.clear()
        self._urgent.clear()
        if self._writer is not None:
            self._writer.cancel()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ChannelClosed(f"dial-in channel of {self.speaker_id} closed"))
