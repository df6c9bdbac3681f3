"""The controller's side of the speaker control API: signed requests, verified answers."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from broadcaster.errors import SpeakerError
from broadcaster.protocol.auth import parse_authorization, response_mac, sign_request


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

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=4),
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
    ) -> dict[str, Any]:
        """One signed request; returns the JSON answer or raises SpeakerError naming the speaker."""
        key = self.keys.get(speaker_id)
        if key is None:
            raise SpeakerError(
                f"speaker {speaker_id}: no pairing key in the key store", code="speaker_unpaired"
            )
        raw = json.dumps(body).encode() if body is not None else b""
        auth = sign_request(speaker_id, key, method, path, raw, self.clock())
        nonce = parse_authorization(auth)["nonce"]
        channel = self.channels.get(speaker_id)
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
        if not hmac.compare_digest(mac, response_mac(key, nonce, status, data)):
            raise SpeakerError(
                f"speaker {speaker_id}: answer is not authenticated (HTTP {status})",
                code="speaker_unauthenticated",
            )
        try:
            out = json.loads(data) if data else {}
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

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
