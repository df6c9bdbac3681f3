"""SRTP/SRTCP (RFC 3711, AES_CM_128_HMAC_SHA1_80) via pylibsrtp: the only module importing it."""

from __future__ import annotations

import base64
import os

import pylibsrtp

KEY_BYTES = 30  # 16-byte master key + 14-byte master salt
SUITE = "AES_CM_128_HMAC_SHA1_80"
AUTH_TAG = 10  # bytes of HMAC-SHA1-80 after an SRTP packet's payload


class SrtpDrop(Exception):
    """A packet failed authentication or the replay check; `reason` is 'auth' or 'replay'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_key() -> bytes:
    """A fresh random master key and salt for one broadcast."""
    return os.urandom(KEY_BYTES)


def sdp_crypto(key: bytes) -> str:
    """The SDP a=crypto attribute (RFC 4568) for a key, as ffmpeg and other receivers read it."""
    return f"1 {SUITE} inline:{base64.b64encode(key).decode()}"


class Sender:
    """Protects outgoing RTP and RTCP with one broadcast key."""

    def __init__(self, key: bytes) -> None:
        policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self._session = pylibsrtp.Session(policy)

    def rtp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate one RTP packet."""
        return self._session.protect(packet)

    def rtcp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate one RTCP packet."""
        return self._session.protect_rtcp(packet)


class Receiver:
    """Checks and decrypts incoming SRTP/SRTCP with one broadcast key, with a replay window."""

    def __init__(self, key: bytes) -> None:
        policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self._session = pylibsrtp.Session(policy)

    def rtp(self, packet: bytes) -> bytes:
        """Return the plain RTP packet, or raise SrtpDrop."""
        try:
            return self._session.unprotect(packet)
        except pylibsrtp.Error as exc:
            raise SrtpDrop(_reason(exc)) from None

    def rtcp(self, packet: bytes) -> bytes:
        """Return the plain RTCP packet, or raise SrtpDrop."""
        try:
            return self._session.unprotect_rtcp(packet)
        except pylibsrtp.Error as exc:
            raise SrtpDrop(_reason(exc)) from None


def _reason(exc: Exception) -> str:
    return "replay" if "replay" in str(exc) else "auth"
