"""Security of the speaker link (issue 4): an attacker on the LAN cannot make a horn play, stop or
change volume, every attempt is counted and reported, and a real broadcast plays intact meanwhile.

The attacker is tests/support/attacker.py in its own process; it knows addresses, ports and whatever
a network tap captured, never a key. The tap for audio is an extra destination the controller sends
the real bytes to (or, for multicast, a socket that joins the group like any host on the LAN); the
tap for control requests records what the controller signed and put on the wire.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import contextlib
import io
import json
import logging
import math
import os
import random
import socket
import stat
import struct
import sys
import time
from pathlib import Path

import pytest

import broadcaster.drivers.bcspeaker.link as link
import broadcaster.protocol.auth as auth
import broadcaster.protocol.clock as clock
import broadcaster.site as zones
from broadcaster.cli.main import main as cli_main
from broadcaster.errors import AuthError
from broadcaster.protocol.rtp import RtpPacket
from broadcaster.protocol.srtp import Receiver, Sender, SrtpDrop, new_key
from broadcaster.protocol.stream import Destination
from tests.support.audio import assert_recording_matches
from tests.support.harness import (
    SimProcess,
    controller,
    make_zones,
    playout_records,
    recorded_pcm,
    wait_done,
    wait_online,
)

ATTACKER = Path(__file__).resolve().parents[1] / "support" / "attacker.py"
A, B = "horn-01-01-1", "horn-01-01-2"  # A is attacked; B shares the broadcasts and must stay quiet


# --- helpers ---------------------------------------------------------------------------------


def source_pcm(seconds: float, seed: int) -> bytes:
    """A deterministic test signal (two tones plus noise), 8 kHz s16le, whole 20 ms frames."""
    rng = random.Random(seed)
    n = int(seconds * 50) * 160
    return b"".join(
        struct.pack(
            "<h",
            int(
                6000 * math.sin(2 * math.pi * 440 * i / 8000)
                + 3000 * math.sin(2 * math.pi * 1230 * i / 8000)
                + rng.randint(-2000, 2000)
            ),
        )
        for i in range(n)
    )


def pcmu_roundtrip(pcm: bytes) -> bytes:
    """What a speaker must play for PCMU: the source through µ-law and back."""
    return audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)


class Tap(asyncio.DatagramProtocol):
    """A capture socket on 127.0.0.1 (or a multicast group) that keeps every datagram."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def datagram_received(self, data: bytes, addr) -> None:
        self.packets.append(data)

    def take(self) -> list[bytes]:
        """Everything captured since the last take."""
        out, self.packets = self.packets, []
        return out


async def open_tap(sock: socket.socket | None = None) -> tuple[asyncio.DatagramTransport, Tap, int]:
    """A tap on a fresh loopback port (or on a prepared socket); returns transport, tap, port."""
    loop = asyncio.get_running_loop()
    if sock is None:
        transport, tap = await loop.create_datagram_endpoint(Tap, local_addr=("127.0.0.1", 0))
    else:
        transport, tap = await loop.create_datagram_endpoint(Tap, sock=sock)
    return transport, tap, transport.get_extra_info("sockname")[1]


async def tap_broadcast(ctl, bid: str, rtp_tap: int, rtcp_tap: int) -> bytes:
    """Once the broadcast streams, add the tap as one more destination; returns its SRTP key."""
    for _ in range(200):
        player = ctl.players.get(bid)
        if player and ctl.broadcast(bid).state == "playing":
            sender = player.parts[0].delivery.sender
            sender.destinations.append(Destination(("127.0.0.1", rtp_tap), ("127.0.0.1", rtcp_tap)))
            return sender.key
        await asyncio.sleep(0.01)
    raise TimeoutError(f"broadcast {bid} never started streaming")


async def speaker_status(ctl, sid: str) -> dict:
    """The speaker's own status, asked the legitimate way (signed by the controller)."""
    st = ctl.registry.get(sid)
    return await ctl.link.call(sid, st.host, st.port, "GET", "/status")


async def run_attacker(plan: list[dict]) -> dict:
    """Run tests/support/attacker.py as a separate process with this plan; returns its report."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ATTACKER),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(plan).encode()), 30)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


def delta(after: dict, before: dict, name: str) -> int:
    """How much one counter grew between two status answers."""
    return after["counters"].get(name, 0) - before["counters"].get(name, 0)


def rtp_header(pkt: bytes) -> tuple[int, int, int]:
    """(seq, ts, ssrc) from the clear header of an SRTP packet."""
    _, _, seq, ts, ssrc = struct.unpack("!BBHII", pkt[:12])
    return seq, ts, ssrc


def is_rtcp(pkt: bytes) -> bool:
    """RTCP packet types 192-223 sit where RTP keeps marker + payload type."""
    return 192 <= pkt[1] <= 223


@pytest.fixture
def wire(monkeypatch) -> list[dict]:
    """Every control request the controller signs, as a tap between it and the speakers sees it."""
    seen: list[dict] = []
    real = link.sign_request

    def recording(speaker_id, key, method, path, body, now, nonce=None):
        header = real(speaker_id, key, method, path, body, now, nonce)
        seen.append(
            {
                "speaker": speaker_id,
                "method": method,
                "path": path,
                "body": body,
                "authorization": header,
            }
        )
        return header

    monkeypatch.setattr(link, "sign_request", recording)
    return seen


def captured(wire: list[dict], speaker: str, method: str, path: str, contains: str = "") -> dict:
    """The last captured request of that kind."""
    for req in reversed(wire):
        if (req["speaker"], req["method"], req["path"]) == (
            speaker,
            method,
            path,
        ) and contains in req["body"].decode():
            return req
    raise AssertionError(f"no {method} {path} to {speaker} was captured")


def http_step(
    name: str,
    host: str,
    port: int,
    req: dict,
    *,
    body: bytes | None = None,
    authorization: str | None | bool = True,
    forge: dict | None = None,
) -> dict:
    """An attacker plan step that sends a (captured, altered or forged) control request."""
    return {
        "op": "http",
        "name": name,
        "host": host,
        "port": port,
        "method": req["method"],
        "path": req["path"],
        "body": (req["body"] if body is None else body).hex(),
        "authorization": req["authorization"] if authorization is True else authorization,
        "forge": forge,
    }


# --- the attack during a live broadcast --------------------------------------------------------


async def test_attacker_on_the_lan_changes_nothing_and_is_reported(
    site_unicast, zones_unicast, data, record, tag, wire, caplog
):
    """Forged, tampered and replayed audio and control against a playing horn: the broadcast plays
    bit-exact, volume and state stay, each attempt is counted, the controller raises `attack`."""
    caplog.set_level(logging.DEBUG)
    sim = SimProcess(zones_unicast, data, record, tag, only=[A, B])
    sim.cmd[3:3] = ["--log-level", "DEBUG"]  # the speakers' own logs are checked for keys too
    sim.start()
    sim_log = b""
    rtp_t, rtp_tap, rtp_port = await open_tap()
    rtcp_t, rtcp_tap, rtcp_port = await open_tap()
    try:
        async with controller(site_unicast, data, tag, poll_interval=0.5) as (ctl, client):
            await wait_online(ctl, 2)
            sa = ctl.registry.get(A)
            host, ctl_port, audio_port = sa.host, sa.port, sa.rtp_port
            s0 = await speaker_status(ctl, A)
            vol0 = s0["volume"]
            broadcast_keys = []

            # 1. A first broadcast, tapped; the operator sets the volume and stops it midway.
            src1 = source_pcm(2.0, seed=1)
            b1 = await ctl.play(src1, [A, B])
            broadcast_keys.append(await tap_broadcast(ctl, b1.id, rtp_port, rtcp_port))
            await asyncio.sleep(0.6)
            await ctl.link.call(A, host, ctl_port, "POST", "/volume", {"volume": vol0})
            await ctl.stop(b1.id)
            await wait_done(ctl, b1.id)
            old_pkts = rtp_tap.take() + rtcp_tap.take()
            assert len(old_pkts) > 20

            # 2. The broadcast the attacker tries to disrupt.
            src2 = source_pcm(3.0, seed=2)
            b2 = await ctl.play(src2, [A, B])
            broadcast_keys.append(await tap_broadcast(ctl, b2.id, rtp_port, rtcp_port))
            await asyncio.sleep(0.5)
            live_rtp, live_rtcp = rtp_tap.take(), rtcp_tap.take()
            assert len(live_rtp) >= 15 and live_rtcp
            seq, ts, ssrc = rtp_header(live_rtp[-1])
            s1 = await speaker_status(ctl, A)
            assert s1["playing"] == b2.id

            def signed_long_ago(method: str, path: str, body: dict, age: float) -> dict:
                # a request the controller really signed `age` seconds ago, captured then
                raw = json.dumps(body).encode()
                return {
                    "method": method,
                    "path": path,
                    "body": raw,
                    "authorization": auth.sign_request(
                        A, ctl.keys[A], method, path, raw, time.time() - age
                    ),
                }

            vol_req = captured(wire, A, "POST", "/volume")
            stop_req = captured(wire, A, "POST", "/stop", b1.id)
            play_req = captured(wire, A, "POST", "/play", b2.id)
            play_b = captured(wire, B, "POST", "/play", b2.id)
            quiet = json.dumps({"volume": 5}).encode()
            stop_b2 = json.dumps({"broadcast": b2.id}).encode()
            control = [
                http_step("replayed volume", host, ctl_port, vol_req),
                http_step("replayed stop", host, ctl_port, stop_req),
                http_step("replayed play", host, ctl_port, play_req),
                http_step("volume, altered body", host, ctl_port, vol_req, body=quiet),
                http_step("stop, altered body", host, ctl_port, stop_req, body=stop_b2),
                http_step(
                    "stop, forged MAC",
                    host,
                    ctl_port,
                    stop_req,
                    body=stop_b2,
                    forge={"id": A, "ts_offset": 0},
                ),
                http_step(
                    "play, forged MAC", host, ctl_port, play_req, forge={"id": A, "ts_offset": 0}
                ),
                http_step(
                    "volume, no signature", host, ctl_port, vol_req, body=quiet, authorization=None
                ),
                http_step("B's play sent to A", host, ctl_port, play_b),
                http_step(
                    "volume, stale",
                    host,
                    ctl_port,
                    signed_long_ago("POST", "/volume", {"volume": 5}, 120),
                ),
                http_step(
                    "stop, from the future",
                    host,
                    ctl_port,
                    signed_long_ago("POST", "/stop", {"broadcast": b2.id}, -120),
                ),
            ]
            expect_codes = {
                "auth_replay": 3,
                "auth_bad_mac": 4,
                "auth_missing": 1,
                "auth_wrong_speaker": 1,
                "auth_stale": 2,
            }
            hexes = lambda pkts: [p.hex() for p in pkts]  # noqa: E731
            audio = [
                {"op": "udp", "to": [host, audio_port], "packets": hexes(live_rtp)},
                {"op": "udp", "to": [host, audio_port], "packets": hexes(live_rtp), "flip": True},
                {
                    "op": "udp",
                    "to": [host, audio_port],
                    "packets": hexes(p for p in old_pkts if not is_rtcp(p)),
                },
                # made-up packets for sequence numbers the horn has not played yet
                {
                    "op": "forge_rtp",
                    "to": [host, audio_port],
                    "ssrc": ssrc,
                    "seq": seq + 50,
                    "ts": ts + 50 * 160,
                    "count": 40,
                },
                {"op": "udp", "to": [host, audio_port + 1], "packets": hexes(live_rtcp)},
                {
                    "op": "udp",
                    "to": [host, audio_port + 1],
                    "packets": hexes(live_rtcp),
                    "flip": True,
                    "seed": 2,
                },
                {
                    "op": "udp",
                    "to": [host, audio_port + 1],
                    "packets": hexes(p for p in old_pkts if is_rtcp(p)),
                },
                {"op": "forge_rtcp_bye", "to": [host, audio_port + 1], "ssrc": ssrc, "count": 5},
            ]
            report = await run_attacker(audio + control)
            forged = 40 + 5

            # every control attempt refused, and the refusal is not a MAC'd answer
            for res in report["http"]:
                assert res["status"] == 401, res
                assert res["mac_header"] is None
            await wait_done(ctl, b2.id)
            s2 = await speaker_status(ctl, A)

            # 3. Later: the whole captured broadcast replayed once it is over.
            after_pkts = rtp_tap.take() + rtcp_tap.take()
            late = await run_attacker(
                [
                    {
                        "op": "udp",
                        "to": [host, audio_port],
                        "packets": hexes(p for p in live_rtp + after_pkts if not is_rtcp(p)),
                    },
                    {
                        "op": "udp",
                        "to": [host, audio_port + 1],
                        "packets": hexes(p for p in live_rtcp + after_pkts if is_rtcp(p)),
                    },
                ]
            )
            await asyncio.sleep(0.2)
            s3 = await speaker_status(ctl, A)

            # the legitimate broadcast played intact on both speakers: every frame is the
            # source's, or silence the speaker reports lost (a busy 2-core machine may make a
            # frame late); nothing the attacker sent was played
            assert ctl.broadcast(b2.id).state == "done"
            records = playout_records(record, b2.id)
            for sid in (A, B):
                pcm, rate = recorded_pcm(record, sid, b2.id)
                assert rate == 8000
                assert_recording_matches(pcm, pcmu_roundtrip(src2), rate, records[sid]["lost"])
            rec = records[A]
            assert (rec["ended"], rec["duplicates"], rec["foreign"]) == ("end", 0, 0)

            # nothing changed: volume, broadcasts started, what the horn recorded
            assert s3["volume"] == vol0
            assert s3["playing"] is None
            assert s3["counters"]["broadcasts"] - s0["counters"].get("broadcasts", 0) == 2
            assert sorted(p.stem for p in (record / A).glob("*.wav")) == sorted([b1.id, b2.id])

            # the speaker counted every attempt
            for code, n in expect_codes.items():
                assert delta(s2, s1, f"control_refused_{code}") == n, code
            assert delta(s2, s1, "control_refused") == len(control)
            audio_dropped = delta(s2, s1, "dropped_unauthenticated") + delta(
                s2, s1, "dropped_replay"
            )
            assert audio_dropped == report["datagrams"]
            assert delta(s2, s1, "dropped_replay") >= len(live_rtp) + len(live_rtcp)
            assert delta(s2, s1, "dropped_unauthenticated") >= forged
            assert (
                delta(s3, s2, "dropped_unauthenticated") + delta(s3, s2, "dropped_replay")
            ) == late["datagrams"]

            # the controller noticed, logged a warning and shows it; B saw nothing
            await asyncio.sleep(1.2)
            attacks = [e for e in ctl.events if e["kind"] == "attack"]
            assert {e["speaker"] for e in attacks} == {A}
            seen = ctl.registry.get(A).attacks
            assert seen.get("control_refused") == len(control)
            assert (
                seen.get("dropped_unauthenticated", 0) + seen.get("dropped_replay", 0)
                == report["datagrams"] + late["datagrams"]
            )
            assert ctl.registry.get(B).attacks == {}
            assert any(
                r.levelno == logging.WARNING and "attack" in r.getMessage() for r in caplog.records
            )

            out = io.StringIO()
            url = str(client.make_url("")).rstrip("/")

            def speakers_cli() -> int:
                with contextlib.redirect_stdout(out):
                    return cli_main(["--controller", url, "speakers"])

            assert await asyncio.to_thread(speakers_cli) == 0
            header, *lines = out.getvalue().splitlines()
            col = header.index("alerts")  # columns are fixed-width ASCII up to the zone path
            alerts = {ln.split()[0]: ln[col : col + 10].strip() for ln in lines}
            assert alerts[A] == str(sum(seen.values()))
            assert alerts[B] == "-"

            secrets_ = [ctl.keys[A], ctl.keys[B], *broadcast_keys]
        sim.proc.terminate()
        sim_log = sim.proc.stdout.read()  # until the child exits
    finally:
        rtp_t.close()
        rtcp_t.close()
        sim.stop()

    # keys never appear in the logs (ours, the speakers', the journal), in any usual spelling
    journal = "".join(
        f.read_text(errors="replace")
        for f in data.rglob("*")
        if f.is_file() and not f.name.startswith("speaker-keys.")
    )
    logs = caplog.text + sim_log.decode(errors="replace") + journal
    assert '"attack"' in (data / "log" / "events.jsonl").read_text()  # the journal keeps it too
    assert len(sim_log) < 30000, len(sim_log)  # well under a pipe buffer: the child never blocks
    assert "refused control request" in logs  # the speakers' refusals were logged
    for key in secrets_:
        for spelling in (key.hex(), key.hex().upper(), base64.b64encode(key).decode()):
            assert spelling not in logs


# --- multicast ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zones_multicast(tmp_path_factory) -> Path:
    """The standard site with multicast groups, moved to a prefix of its own: loopback is shared
    with every other test run, and a horn counts any foreign stream on its group as forged."""
    path = make_zones(tmp_path_factory.mktemp("zones-mc") / "zones.yaml", multicast=True)
    prefix = f"239.{random.SystemRandom().randrange(20, 250)}."
    path.write_text(path.read_text(encoding="utf-8").replace("239.10.", prefix), encoding="utf-8")
    return path


def join_group(group: str, port: int) -> socket.socket:
    """A socket that joins a multicast group on loopback, as any host on the LAN could."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((group, port))
    sock.setsockopt(
        socket.IPPROTO_IP,
        socket.IP_ADD_MEMBERSHIP,
        socket.inet_aton(group) + socket.inet_aton("127.0.0.1"),
    )
    sock.setblocking(False)
    return sock


async def test_multicast_group_stream_is_authenticated(zones_multicast, data, record, tag):
    """A management area's horns on one multicast group: forged and replayed group traffic is
    dropped and counted by every horn, and the broadcast plays exactly on each."""
    site = zones.load(zones_multicast)
    area = "area-01"
    horns = sorted(site.speakers_under(area))
    sim = SimProcess(zones_multicast, data, record, tag, only=horns).start()
    tap_t = None
    try:
        async with controller(site, data, tag) as (ctl, _client):
            await wait_online(ctl, len(horns))
            src = source_pcm(2.0, seed=3)
            b = await ctl.play(src, [area])
            for _ in range(200):
                if ctl.broadcast(b.id).state == "playing":
                    break
                await asyncio.sleep(0.01)
            # one group for all (the widest zone whose online horns are all targeted)
            routes = {r.route for r in ctl.broadcast(b.id).results.values()}
            assert len(routes) == 1 and routes.pop().startswith("multicast ")
            host, port = ctl.broadcast(b.id).results[horns[0]].route.split()[1].split(":")
            group = (host, int(port))
            tap_t, tap, _ = await open_tap(join_group(*group))
            await asyncio.sleep(0.4)
            before = {sid: await speaker_status(ctl, sid) for sid in horns}
            live = tap.take()
            rtp = [p for p in live if not is_rtcp(p)]
            seq, ts, ssrc = rtp_header(rtp[-1])
            report = await run_attacker(
                [
                    {"op": "udp", "to": list(group), "packets": [p.hex() for p in live]},
                    {
                        "op": "udp",
                        "to": list(group),
                        "packets": [p.hex() for p in rtp],
                        "flip": True,
                    },
                    {
                        "op": "forge_rtp",
                        "to": list(group),
                        "ssrc": ssrc,
                        "seq": seq + 3,
                        "ts": ts + 480,
                        "count": 20,
                    },
                    {"op": "forge_rtcp_bye", "to": list(group), "ssrc": ssrc, "count": 3},
                ]
            )
            await wait_done(ctl, b.id)
            for sid in horns:
                after = await speaker_status(ctl, sid)
                dropped = delta(after, before[sid], "dropped_unauthenticated") + delta(
                    after, before[sid], "dropped_replay"
                )
                assert dropped == report["datagrams"], sid
                pcm, rate = recorded_pcm(record, sid, b.id)
                lost = playout_records(record, b.id)[sid]["lost"]
                assert_recording_matches(pcm, pcmu_roundtrip(src), rate, lost)
    finally:
        if tap_t is not None:
            tap_t.close()
        sim.stop()


# --- pure checks of the building blocks ---------------------------------------------------------


def test_control_refusals_name_the_reason():
    """The replay guard refuses missing, forged, altered, stale, replayed and misaddressed
    requests, each with its own code; the MAC is checked before anything else is trusted."""
    key, other = os.urandom(32), os.urandom(32)
    body = b'{"volume": 40}'
    now = 1_700_000_000.0
    g = auth.ReplayGuard()

    def code(
        header: str, *, b: bytes = body, at: float = now, sid: str = "h1", path: str = "/volume"
    ) -> str:
        try:
            g.check(key, "POST", path, b, header, at, sid)
        except AuthError as exc:
            return exc.code
        return "accepted"

    good = auth.sign_request("h1", key, "POST", "/volume", body, now)
    assert code("") == "auth_missing"
    assert code("Basic aDE6cHc=") == "auth_missing"
    assert code('BC-HMAC-SHA256 id="h1", ts="1"') == "auth_malformed"
    assert code(auth.sign_request("h1", other, "POST", "/volume", body, now)) == "auth_bad_mac"
    assert code(good, b=b'{"volume": 0}') == "auth_bad_mac"
    assert code(good, path="/stop") == "auth_bad_mac"
    assert code(good.replace('ts="', 'ts="1')) == "auth_bad_mac"  # a moved timestamp breaks it
    assert code(good, sid="h2") == "auth_wrong_speaker"
    assert code(auth.sign_request("h1", key, "POST", "/volume", body, now - 31)) == "auth_stale"
    assert code(auth.sign_request("h1", key, "POST", "/volume", body, now + 31)) == "auth_stale"
    assert code(good) == "accepted"
    assert code(good) == "auth_replay"
    assert code(good, at=now + 29) == "auth_replay"
    assert code(good, at=now + 31) == "auth_stale"  # after the window, staleness still refuses it


def test_broadcast_key_is_sealed_for_one_speaker_and_one_broadcast():
    """A wrapped broadcast key opens only with its speaker's pairing key and its own context."""
    ka, kb, bkey = os.urandom(32), os.urandom(32), new_key()
    wrapped = auth.wrap_key(ka, bkey, "h1/b1")
    assert auth.unwrap_key(ka, wrapped, "h1/b1") == bkey
    for pk, ctx in ((kb, "h1/b1"), (ka, "h2/b1"), (ka, "h1/b2")):
        with pytest.raises(AuthError):
            auth.unwrap_key(pk, wrapped, ctx)
    raw = bytearray(base64.b64decode(wrapped))
    raw[20] ^= 1
    with pytest.raises(AuthError):
        auth.unwrap_key(ka, base64.b64encode(raw).decode(), "h1/b1")
    assert bkey.hex() not in wrapped and base64.b64encode(bkey).decode() not in wrapped


def test_srtp_packets_of_one_broadcast_never_verify_in_another():
    """Fresh key per broadcast: old packets fail authentication; replays and flips are caught."""
    k1, k2 = new_key(), new_key()
    pkts = [Sender(k1).rtp(bytes(RtpPacket(0, i, 160 * i, 7, bytes(160)))) for i in range(5)]
    rx1, rx2 = Receiver(k1), Receiver(k2)
    assert rx1.rtp(pkts[0])
    reasons = []
    for p in (pkts[0], pkts[1][:-1] + bytes([pkts[1][-1] ^ 0x80])):
        with pytest.raises(SrtpDrop) as e:
            rx1.rtp(p)
        reasons.append(e.value.reason)
    assert reasons == ["replay", "auth"]
    with pytest.raises(SrtpDrop) as e:
        rx2.rtp(pkts[2])
    assert e.value.reason == "auth"


def test_forged_clock_answers_are_refused():
    """Clock datagrams carry a MAC: a made-up or altered answer cannot move a speaker's clock."""
    key = os.urandom(32)
    good = clock.encode_response(key, 1.0, 2.0, 3.0)
    assert clock.decode_response(good, key) == (1.0, 2.0, 3.0)
    for bad in (
        clock.encode_response(os.urandom(32), 1.0, 2.0, 3.0),
        good[:10] + bytes([good[10] ^ 1]) + good[11:],
    ):
        with pytest.raises(clock.ClockMessageError):
            clock.decode_response(bad, key)


# --- keys at rest -------------------------------------------------------------------------------


def test_key_store_is_owner_only(tmp_path):
    """The key store file is 0600, even when a stale temp file with wide permissions is left."""
    store = auth.KeyStore(tmp_path / "speaker-keys.json")
    keys = store.ensure(["h1", "h2"])
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.load() == keys and all(len(k) == 32 for k in keys.values())
    assert store.ensure(["h1", "h2"]) == keys  # a second start mints nothing new
    leftover = store.path.with_suffix(".tmp")
    leftover.write_text("{}")
    os.chmod(leftover, 0o644)
    store.save(keys)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600


def test_pair_writes_an_owner_only_key_file_and_never_prints_the_key(
    zones_unicast, tmp_path, monkeypatch, capsys
):
    """`broadcaster speaker pair ID --out FILE`: the key goes to a 0600 file, not to the screen."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("BROADCASTER_ZONES", str(zones_unicast))
    out = tmp_path / "horn.key"
    assert cli_main(["--data", str(data_dir), "speaker", "pair", A, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    info = json.loads(out.read_text())
    key = auth.KeyStore(data_dir / "speaker-keys.json").load()[A]
    assert info["speaker"] == A and bytes.fromhex(info["key"]) == key
    for spelling in (key.hex(), base64.b64encode(key).decode()):
        assert spelling not in printed.out + printed.err
