"""Speaker-link authentication: HMAC-signed control requests, wrapped broadcast keys, the key store.

Pure functions take the clock as an argument; the key store is the only file I/O here.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broadcaster.errors import AuthError, StorageError

SCHEME = "BC-HMAC-SHA256"
MAX_SKEW = 30.0  # seconds a signed request stays fresh
PAIRING_KEY_BYTES = 32
NONCE_BYTES = 12  # a request nonce's random bytes (96 bits; sent as 24 hex digits)
log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8192)
def _derive(key: bytes, label: bytes) -> bytes:
    # every control message and clock datagram derives its key: at 1,000 speakers re-deriving
    # was 6 % of the controller's idle CPU (issue 14's profile); the cache holds ~4 per speaker
    return hmac.new(key, label, hashlib.sha256).digest()


@functools.lru_cache(maxsize=8192)
def _keyed(key: bytes, label: bytes) -> hmac.HMAC:
    # an HMAC keyed once (its inner and outer pads hashed): each message copies it, which is a
    # quarter cheaper than keying a new one (measured: 3.1 vs 3.9 µs for a clock datagram)
    return hmac.new(_derive(key, label), digestmod=hashlib.sha256)


def _mac(key: bytes, label: bytes, msg: bytes) -> hmac.HMAC:
    h = _keyed(key, label).copy()
    h.update(msg)
    return h


def request_mac(key: bytes, method: str, path: str, ts: str, nonce: str, body: bytes) -> str:
    """The MAC over one control request: method, path, timestamp, nonce and body digest."""
    msg = "\n".join([method.upper(), path, ts, nonce, hashlib.sha256(body).hexdigest()]).encode()
    return _mac(key, b"control", msg).hexdigest()


def new_nonce() -> str:
    """A fresh request nonce (96 random bits)."""
    return secrets.token_hex(NONCE_BYTES)


def sign_request(
    speaker_id: str,
    key: bytes,
    method: str,
    path: str,
    body: bytes,
    now: float,
    nonce: str | None = None,
) -> str:
    """The Authorization header value for a control request sent at `now` (with `nonce`, if the
    caller keeps it to check the answer: cheaper than parsing it back out of the header)."""
    ts = f"{now:.3f}"
    nonce = nonce or new_nonce()
    mac = request_mac(key, method, path, ts, nonce, body)
    return f'{SCHEME} id="{speaker_id}", ts="{ts}", nonce="{nonce}", mac="{mac}"'


def parse_authorization(value: str) -> dict[str, str]:
    """Split an Authorization header into its fields; raises AuthError if it is not ours."""
    if not value.startswith(SCHEME + " "):
        raise AuthError("missing or foreign Authorization scheme", code="auth_missing")
    fields: dict[str, str] = {}
    for part in value[len(SCHEME) + 1 :].split(","):
        name, _, raw = part.strip().partition("=")
        fields[name] = raw.strip('"')
    for need in ("id", "ts", "nonce", "mac"):
        if not fields.get(need):
            raise AuthError(f"Authorization lacks {need}", code="auth_malformed")
    return fields


def response_mac(key: bytes, nonce: str, status: int, body: bytes) -> str:
    """The MAC a speaker puts on its answer, binding it to the request's nonce."""
    msg = f"{nonce}\n{status}\n{hashlib.sha256(body).hexdigest()}".encode()
    return _mac(key, b"response", msg).hexdigest()


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

    def check(
        self,
        key: bytes,
        method: str,
        path: str,
        body: bytes,
        header: str,
        now: float,
        speaker_id: str,
    ) -> str:
        """Verify a signed request; return its nonce, or raise AuthError naming why not."""
        f = parse_authorization(header)
        if f["id"] != speaker_id:
            raise AuthError(
                f"request is for speaker {f['id']!r}, this is {speaker_id!r}",
                code="auth_wrong_speaker",
            )
        expect = request_mac(key, method, path, f["ts"], f["nonce"], body)
        if not hmac.compare_digest(expect, f["mac"]):
            raise AuthError("request MAC does not verify (forged or altered)", code="auth_bad_mac")
        try:
            ts = float(f["ts"])
        except ValueError:
            raise AuthError("request timestamp is not a number", code="auth_malformed") from None
        if abs(now - ts) > self.window:
            raise AuthError(
                f"request is stale ({now - ts:+.0f} s old by the signer's clock as "
                "this speaker knows it)",
                code="auth_stale",
            )
        while self._seen and next(iter(self._seen.values())) < now - 2 * self.window:
            self._seen.popitem(last=False)
        if f["nonce"] in self._seen:
            raise AuthError("request was replayed (nonce already used)", code="auth_replay")
        if len(self._seen) >= self.limit:
            self._seen.popitem(last=False)
        self._seen[f["nonce"]] = now
        return f["nonce"]


WRAP_NONCE = 12  # bytes of AES-GCM nonce before each wrapped broadcast key


@functools.lru_cache(maxsize=4096)
def _wrapper(pairing_key: bytes) -> AESGCM:
    # one cipher object per speaker, not one per broadcast: set-up of a thousand speakers
    return AESGCM(_derive(pairing_key, b"wrap"))


def wrap_key(
    pairing_key: bytes, broadcast_key: bytes, context: str, nonce: bytes | None = None
) -> str:
    """Encrypt a broadcast key for one speaker (AES-256-GCM, bound to `context`), base64.

    `nonce` (WRAP_NONCE random bytes, never used twice with a key) may be cut from one draw for
    many speakers: a thousand draws of 12 bytes were a thousand system calls at a set-up."""
    if nonce is None:
        nonce = os.urandom(WRAP_NONCE)
    elif len(nonce) != WRAP_NONCE:
        raise ValueError(f"a key-wrapping nonce is {WRAP_NONCE} bytes, not {len(nonce)}")
    sealed = _wrapper(pairing_key).encrypt(nonce, broadcast_key, context.encode())
    return base64.b64encode(nonce + sealed).decode()


def unwrap_key(pairing_key: bytes, wrapped: str, context: str) -> bytes:
    """Decrypt a wrapped broadcast key; raises AuthError if it was not sealed for this speaker."""
    try:
        raw = base64.b64decode(wrapped, validate=True)
        return _wrapper(pairing_key).decrypt(raw[:WRAP_NONCE], raw[WRAP_NONCE:], context.encode())
    except Exception:  # noqa: BLE001 - any failure means "not sealed for this speaker"
        raise AuthError(
            "broadcast key does not unwrap with this speaker's key", code="auth_bad_key"
        ) from None


def clock_mac(key: bytes, payload: bytes) -> bytes:
    """A 16-byte MAC for one clock-sync datagram."""
    return _mac(key, b"clock", payload).digest()[:16]


def fingerprint(key: bytes) -> str:
    """A key's public name: the first 8 hex digits of its SHA-256 (safe to print and log)."""
    return hashlib.sha256(key).hexdigest()[:8]


REPAIR_HINT = (
    "restore it from a backup, or re-key every speaker with `broadcaster keys rekey "
    "--all` and re-pair them"
)


@dataclass
class KeyStore:
    """Pairing keys by speaker id, kept in one JSON file readable only by its owner.

    Keys are minted only where that cannot unpair a speaker: for a new store (no file yet), and
    for speakers missing from a valid store that holds keys of the site. A store that exists but
    is damaged, or holds none of the site's keys, is an error; re-keying is `rekey` (the
    `broadcaster keys` command), never a side effect of starting.
    """

    path: Path

    def _fault(self, what: str, hint: str = REPAIR_HINT) -> StorageError:
        return StorageError(
            f"{self.path}: {what}; {hint}", code="key_store", detail={"file": str(self.path)}
        )

    def read(self, damaged_ok: frozenset[str] = frozenset()) -> dict[str, bytes] | None:
        """The keys in the file, None if there is no file; StorageError if it is damaged.

        `{}` is an empty store; keys of the speakers in `damaged_ok` may be damaged (they are
        about to be replaced) and are left out.
        """
        try:
            text = self.path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise self._fault(
                "is a directory, not the key store", "move it aside; the key store is a JSON file"
            ) from None
        except OSError as exc:
            raise self._fault(
                f"cannot be read ({exc.strerror})", "check its owner and permissions"
            ) from None
        except UnicodeDecodeError:
            raise self._fault("the speaker key store is damaged (not UTF-8 text)") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._fault(
                f"the speaker key store is damaged (not JSON: {exc.msg}, line "
                f"{exc.lineno} column {exc.colno})"
            ) from None
        if not isinstance(data, dict):
            raise self._fault("the speaker key store is damaged (not a JSON object)")
        speakers = data.get("speakers", {})
        if not isinstance(speakers, dict):
            raise self._fault('the speaker key store is damaged ("speakers" is not a mapping)')
        keys: dict[str, bytes] = {}
        for sid, value in speakers.items():
            key = _parse_key(value)
            if key is None and sid not in damaged_ok:
                raise self._fault(
                    f"the key of speaker {sid} is damaged (not {2 * PAIRING_KEY_BYTES} hex digits)",
                    f"restore the file from a backup, or run `broadcaster keys rekey "
                    f"{sid}` and re-pair that speaker",
                )
            if key is not None:
                keys[sid] = key
        return keys

    def load(self) -> dict[str, bytes]:
        """All keys in the file (empty if there is none); StorageError if it is damaged."""
        return self.read() or {}

    def save(self, keys: dict[str, bytes]) -> None:
        """Write all keys atomically with mode 0600."""
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # O_CREAT keeps the mode of a temp file a crash left behind
            with os.fdopen(fd, "w") as fh:
                json.dump({"speakers": {k: v.hex() for k, v in sorted(keys.items())}}, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            raise self._fault(
                f"cannot be written ({exc.strerror})",
                f"make {self.path.parent} writable by this user",
            ) from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock beside the file: a controller and a simulator starting together
        must not mint two different keys for one speaker."""
        lock_path = self.path.with_suffix(".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._fault(
                f"cannot be locked ({exc.strerror}: {lock_path})",
                f"make {self.path.parent} writable by this user",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def ensure(self, speaker_ids: list[str]) -> dict[str, bytes]:
        """Load the keys; mint keys for a new store, or for speakers newly added to the site.

        Raises StorageError for a damaged store, or one that holds none of the site's keys
        (wiped or replaced: minting would silently unpair every speaker).
        """
        with self._locked():
            found = self.read()
            if found is None:
                keys: dict[str, bytes] = {}
                self._mint(keys, speaker_ids)
                self.save(keys)
                log.info("%s: new key store, keys minted for %d speakers", self.path, len(keys))
                return keys
            keys = found
            missing = [sid for sid in speaker_ids if sid not in keys]
            if missing and len(missing) == len(set(speaker_ids)):
                raise self._fault(
                    f"has no keys for {len(missing)} speakers of zones.yaml",
                    "if this is a new site run `broadcaster keys init`, to re-key run "
                    "`broadcaster keys rekey SPEAKER|--all` and re-pair those speakers",
                )
            if missing:
                self._mint(keys, missing)
                self.save(keys)
                log.info(
                    "%s: keys minted for speakers new in zones.yaml: %s",
                    self.path,
                    ", ".join(missing),
                )
        return keys

    def init(self, speaker_ids: list[str]) -> list[str]:
        """Mint keys for every speaker that has none, even when the store holds none of the
        site's (a new site); never replaces a key. Returns the speakers minted."""
        with self._locked():
            keys = self.read() or {}
            minted = self._mint(keys, [sid for sid in speaker_ids if sid not in keys])
            if minted or not self.path.exists():
                self.save(keys)
        return minted

    def rekey(self, speaker_ids: list[str], *, everyone: bool = False) -> dict[str, bytes]:
        """Replace the keys of these speakers (their old keys may be damaged); `everyone`
        starts a new store with just them, whatever the old file holds. Returns all keys."""
        with self._locked():
            keys = {} if everyone else (self.read(frozenset(speaker_ids)) or {})
            for sid in speaker_ids:
                keys.pop(sid, None)
            self._mint(keys, speaker_ids)
            self.save(keys)
        log.info("%s: re-keyed %s", self.path, ", ".join(speaker_ids))
        return keys

    @staticmethod
    def _mint(keys: dict[str, bytes], speaker_ids: list[str]) -> list[str]:
        minted = []
        for sid in speaker_ids:
            if sid not in keys:
                keys[sid] = secrets.token_bytes(PAIRING_KEY_BYTES)
                minted.append(sid)
        return minted


def _parse_key(value: object) -> bytes | None:
    """A pairing key from its hex form, or None if it is not exactly one key's worth of hex."""
    if not isinstance(value, str) or len(value) != 2 * PAIRING_KEY_BYTES:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None
