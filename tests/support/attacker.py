#!/usr/bin/env python3
"""An attacker on the speaker network, run as its own process by tests/test_security.py.

It knows what anyone on the LAN can learn (the speaker's address, control port and RTP/RTCP
ports, the packets a network tap captured) and the public protocol (RTP, the BC-HMAC-SHA256
header layout), but no key. It imports nothing from `broadcaster`: everything it sends is built
here from raw bytes. It reads a JSON plan on stdin, a list of steps:

  {"op": "udp", "to": [host, port], "packets": [hex, ...], "flip": false, "seed": 1}
      send captured datagrams as they are, or each with one random bit flipped;
  {"op": "forge_rtp", "to": [host, port], "ssrc": n, "seq": n, "ts": n, "count": n, "pt": 0}
      send made-up RTP: half plain RTP, half with a made-up 10-byte SRTP auth tag;
  {"op": "forge_rtcp_bye", "to": [host, port], "ssrc": n, "count": n}
      send plain RTCP sender report + BYE packets that would end the broadcast;
  {"op": "http", "host": h, "port": p, "method": m, "path": path, "body": hex,
   "authorization": value | null, "forge": {"id": speaker, "ts_offset": s} | null}
      send a control request with a captured header (or none), or one signed with a key
      the attacker made up;
and prints one JSON line: the number of datagrams sent and each HTTP answer's status and body.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import random
import socket
import struct
import sys
import time


def flip_bit(data: bytes, rng: random.Random) -> bytes:
    """The datagram with one bit flipped at a random position (header, payload or tag)."""
    pos = rng.randrange(len(data))
    return data[:pos] + bytes([data[pos] ^ (1 << rng.randrange(8))]) + data[pos + 1 :]


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes) -> bytes:
    """A plain RTP packet (RFC 3550), version 2, no CSRC, no extension."""
    return struct.pack("!BBHII", 0x80, pt & 0x7F, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def rtcp_sr_bye(ssrc: int) -> bytes:
    """A plain RTCP compound: an empty sender report and a BYE for `ssrc`."""
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 0, 0, 0, 1, 160)
    bye = struct.pack("!BBHI", 0x81, 203, 1, ssrc)
    return sr + bye


def forged_authorization(
    speaker_id: str, method: str, path: str, body: bytes, ts_offset: float
) -> str:
    """A header in the right format, signed with a key the attacker invented."""
    key = os.urandom(32)
    ts = f"{time.time() + ts_offset:.3f}"
    nonce = os.urandom(12).hex()
    msg = "\n".join([method.upper(), path, ts, nonce, hashlib.sha256(body).hexdigest()]).encode()
    mac = hmac.new(key, msg, hashlib.sha256).hexdigest()
    return f'BC-HMAC-SHA256 id="{speaker_id}", ts="{ts}", nonce="{nonce}", mac="{mac}"'


def send_http(step: dict) -> dict:
    """One control request over a fresh TCP connection; the answer's status and JSON."""
    body = bytes.fromhex(step.get("body") or "")
    headers = {"Content-Type": "application/json"}
    auth = step.get("authorization")
    if step.get("forge"):
        f = step["forge"]
        auth = forged_authorization(
            f["id"], step["method"], step["path"], body, f.get("ts_offset", 0.0)
        )
    if auth:
        headers["Authorization"] = auth
    conn = http.client.HTTPConnection(step["host"], step["port"], timeout=5)
    try:
        conn.request(step["method"], step["path"], body=body or None, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"raw": raw.decode(errors="replace")}
    return {
        "name": step.get("name"),
        "status": resp.status,
        "answer": answer,
        "mac_header": resp.getheader("X-BC-MAC"),
    }


def main() -> int:
    """Run the plan from stdin; print what was sent and answered."""
    plan = json.load(sys.stdin)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # to reach a multicast group on loopback, as a host on the speakers' LAN would on its NIC
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    sent = 0
    http_results = []
    for step in plan:
        op = step["op"]
        rng = random.Random(step.get("seed", 1))
        if op == "udp":
            to = tuple(step["to"])
            for hexpkt in step["packets"]:
                data = bytes.fromhex(hexpkt)
                sock.sendto(flip_bit(data, rng) if step.get("flip") else data, to)
                sent += 1
                time.sleep(0.0005)  # paced like a real sender, so no socket buffer overflows
        elif op == "forge_rtp":
            to = tuple(step["to"])
            for i in range(step["count"]):
                payload = bytes(rng.randrange(256) for _ in range(160))
                pkt = rtp_packet(
                    step.get("pt", 0), step["seq"] + i, step["ts"] + 160 * i, step["ssrc"], payload
                )
                if i % 2:
                    pkt += os.urandom(10)  # looks like SRTP with an auth tag; it is not
                sock.sendto(pkt, to)
                sent += 1
                time.sleep(0.0005)
        elif op == "forge_rtcp_bye":
            to = tuple(step["to"])
            for _ in range(step["count"]):
                sock.sendto(rtcp_sr_bye(step["ssrc"]), to)
                sent += 1
        elif op == "http":
            http_results.append(send_http(step))
        else:
            raise SystemExit(f"unknown step {op!r}")
    sock.close()
    print(json.dumps({"datagrams": sent, "http": http_results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
