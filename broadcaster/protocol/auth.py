"""Speaker-link authentication: HMAC-signed control requests, wrapped broadcast keys, the key store.

Pure functions take the clock as an argument; the key store is the only file I/O here.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broadcaster.errors import AuthError

SCHEME = "BC-HMAC-SHA256"
MAX_SKEW = 30.0  # seconds a signed request stays fresh
PAIRING_KEY_BYTES = 32


def _derive(key: bytes, label: bytes) -> bytes:
    return hmac.new(key, label, hashlib.sha256).digest()


def request_mac(key: bytes, method: str, path: str, ts: str, nonce: str, body: bytes) -> str:
    """The MAC over one control request: method, path, timestamp, nonce and body digest."""
    msg = "\n".join([method.upper(), path, ts, nonce, hashlib.sha256(body).hexdigest()]).encode()
    return hmac.new(_derive(key, b"control"), msg, hashlib.sha256).hexdigest()


def sign_request(speaker_id: str, key: bytes, method: str, path: str, body: bytes,
                 now: float) -> str:
    """The Authorization header value for a control request sent at `now`."""
    ts = f"{now:.3f}"
    nonce = secrets.token_hex(12)
    mac = request_mac(key, method, path, ts, nonce, body)
    return f'{SCHEME} id="{speaker_id}", ts="{ts}", nonce="{nonce}", mac="{mac}"'


def parse_authorization(value: str) -> dict[str, str]:
    """Split an Authorization header into its fields; raises AuthError if it is not ours."""
    if not value.startswith(SCHEME + " "):
        raise AuthError("missing or foreign Authorization scheme", code="auth_missing")
    fields: dict[str, str] = {}
    for part in value[len(SCHEME) + 1:].split(","):
        name, _, raw = part.strip().partition("=")
        fields[name] = raw.strip('"')
    for need in ("id", "ts", "nonce", "mac"):
        if not fields.get(need):
            raise AuthError(f"Authorization lacks {need}", code="auth_malformed")
    return fields


def response_mac(key: bytes, nonce: str, status: int, body: bytes) -> str:
    """The MAC a speaker puts on its answer, binding it to the request's nonce."""
    msg = f"{nonce}\n{status}\n{hashlib.sha256(body).hexdigest()}".encode()
    return hmac.new(_derive(key, b"response"), msg, hashlib.sha256).hexdigest()


class ReplayGuard:
    """Accepts each (timestamp, nonce) once within the freshness window; pure, clock passed in.

    `now` is the verifier's best estimate of the *signer's* clock (a speaker passes the
    controller's play clock as its clock sync estimates it), so neither machine's wall clock
    matters. Safe if `now` jumps: a nonce is forgotten only once `now` is 2 windows past the
    instant it was seen, when any request fresh then is stale now.
    """

    def __init__(self, window: float = MAX_SKEW, limit: int = 100_000) -> None:
        self.window = window
        self.limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(self, key: bytes, method: str, path: str, body: bytes, header: str,
              now: float, speaker_id: str) -> str:
        """Verify a signed request; return its nonce or raise AuthError naming why it was refused."""
        f = parse_authorization(header)
        if f["id"] != speaker_id:
            raise AuthError(f"request is for speaker {f['id']!r}, this is {speaker_id!r}",
                            code="auth_wrong_speaker")
        expect = request_mac(key, method, path, f["ts"], f["nonce"], body)
        if not hmac.compare_digest(expect, f["mac"]):
            raise AuthError("request MAC does not verify (forged or altered)", code="auth_bad_mac")
        try:
            ts = float(f["ts"])
        except ValueError:
            raise AuthError("request timestamp is not a number", code="auth_malformed") from None
        if abs(now - ts) > self.window:
            raise AuthError(f"request is stale ({now - ts:+.0f} s old by the signer's clock as "
                            "this speaker knows it)", code="auth_stale")
        while self._seen and next(iter(self._seen.values())) < now - 2 * self.window:
            self._seen.popitem(last=False)
        if f["nonce"] in self._seen:
            raise AuthError("request was replayed (nonce already used)", code="auth_replay")
        if len(self._seen) >= self.limit:
            self._seen.popitem(last=False)
        self._seen[f["nonce"]] = now
        return f["nonce"]


def wrap_key(pairing_key: bytes, broadcast_key: bytes, context: str) -> str:
    """Encrypt a broadcast key for one speaker (AES-256-GCM, bound to `context`), base64."""
    nonce = os.urandom(12)
    sealed = AESGCM(_derive(pairing_key, b"wrap")).encrypt(nonce, broadcast_key, context.encode())
    return base64.b64encode(nonce + sealed).decode()


def unwrap_key(pairing_key: bytes, wrapped: str, context: str) -> bytes:
    """Decrypt a wrapped broadcast key; raises AuthError if it was not sealed for this speaker."""
    try:
        raw = base64.b64decode(wrapped, validate=True)
        return AESGCM(_derive(pairing_key, b"wrap")).decrypt(raw[:12], raw[12:], context.encode())
    except Exception:
        raise AuthError("broadcast key does not unwrap with this speaker's key",
                        code="auth_bad_key") from None


def clock_mac(key: bytes, payload: bytes) -> bytes:
    """A 16-byte MAC for one clock-sync datagram."""
    return hmac.new(_derive(key, b"clock"), payload, hashlib.sha256).digest()[:16]


@dataclass
class KeyStore:
    """Pairing keys by speaker id, kept in one JSON file readable only by its owner."""

    path: Path

    def load(self) -> dict[str, bytes]:
        """All keys in the file (empty if there is none)."""
        if not self.path.exists():
            return {}
        data = json.loads(self.path.read_text())
        return {sid: bytes.fromhex(hexkey) for sid, hexkey in data.get("speakers", {}).items()}

    def save(self, keys: dict[str, bytes]) -> None:
        """Write all keys atomically with mode 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # O_CREAT keeps the mode of a temp file a crash left behind
        with os.fdopen(fd, "w") as fh:
            json.dump({"speakers": {k: v.hex() for k, v in sorted(keys.items())}}, fh, indent=1)
        os.replace(tmp, self.path)

    def ensure(self, speaker_ids: list[str]) -> dict[str, bytes]:
        """Load the keys, minting a new random key for every speaker that has none."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a controller and a simulator starting together must not mint two different keys
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = self.load()
            missing = [sid for sid in speaker_ids if sid not in keys]
            for sid in missing:
                keys[sid] = secrets.token_bytes(PAIRING_KEY_BYTES)
            if missing or not self.path.exists():
                self.save(keys)
        return keys
