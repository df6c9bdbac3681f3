"""Control requests by datagram (protocol/control.py): the same signed request without HTTP.

Real endpoints in this process, a real UDP socket standing for the controller's clock socket,
and the controller's own `SpeakerLink`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import pytest

from broadcaster.drivers.bcspeaker.link import Call
from broadcaster.errors import SpeakerError
from broadcaster.net.udp import open_udp
from broadcaster.protocol.auth import sign_request
from broadcaster.protocol.control import (
    ControlAnswer,
    ControlDatagramError,
    ControlRequest,
)
from tests.endpoint.direct import Stream, call, endpoints
from tests.support.net import free_port


def test_datagrams_round_trip_and_refuse_garbage():
    req = ControlRequest(7, "POST", "/play?x=1", "BC1 speaker=a", b'{"a": 1}')
    assert ControlRequest.decode(req.encode()) == req
    ans = ControlAnswer(7, 409, "ab" * 16, b'{"error": "outranked"}')
    assert ControlAnswer.decode(ans.encode()) == ans
    for bad in (b"BCC1\x00", req.encode()[:12], b"XXXX" + req.encode()[4:]):
        with pytest.raises(ControlDatagramError):
            ControlRequest.decode(bad)


async def _by_datagram(link, sp):
    """Route the link's requests for `sp` by datagram, from a socket of our own."""
    port = await open_udp("127.0.0.1", 0, link.on_answer)
    link.send_datagram = port.sendto
    link.datagram_to = lambda sid, host, port: (sp.spec.host, sp.rtp_port)
    return port


async def test_a_request_by_datagram_is_answered_and_verified():
    async with endpoints(1) as (speakers, link):
        sp = speakers[0]
        port = await _by_datagram(link, sp)
        try:
            status = await call(link, sp, "GET", "/status")
            assert status["id"] == sp.spec.speaker_id
            assert sp.counters["control_datagrams"] == 1 and link.datagram_fallbacks == 0
            out = await call(link, sp, "POST", "/volume", {"volume": 35})
            assert out == {"ok": True, "volume": 35} and sp.volume == 35
            with pytest.raises(SpeakerError, match="no playout record"):
                await call(link, sp, "GET", "/playout/nothing-here")  # a signed 404, as by HTTP
        finally:
            port.close()


async def test_a_repeated_datagram_is_answered_again_not_done_twice():
    async with endpoints(1) as (speakers, link):
        sp = speakers[0]
        answers: list[bytes] = []
        port = await open_udp("127.0.0.1", 0, lambda data, addr: answers.append(data))
        stream = Stream("b1", 30, [sp])
        try:
            raw = json.dumps(stream.body(sp)).encode()
            auth = sign_request(sp.spec.speaker_id, sp.spec.key, "POST", "/play", raw, time.time())
            dgram = ControlRequest(secrets.randbits(32), "POST", "/play", auth, raw).encode()
            for _ in range(3):  # the controller heard no answer and sent it again
                port.sendto(dgram, (sp.spec.host, sp.rtp_port))
                await asyncio.sleep(0.1)
            assert sp.counters["broadcasts"] == 1  # played once
            assert len(answers) == 3 and len(set(answers)) == 1
            assert ControlAnswer.decode(answers[0]).status == 200
        finally:
            port.close()
            stream.close()


async def test_a_forged_or_malformed_datagram_is_refused_and_counted():
    async with endpoints(1) as (speakers, link):
        sp = speakers[0]
        answers: list[bytes] = []
        port = await open_udp("127.0.0.1", 0, lambda data, addr: answers.append(data))
        try:
            auth = sign_request(sp.spec.speaker_id, b"x" * 32, "POST", "/stop", b"{}", time.time())
            port.sendto(
                ControlRequest(1, "POST", "/stop", auth, b"{}").encode(),
                (sp.spec.host, sp.rtp_port),
            )
            port.sendto(b"BCC1 not a request", (sp.spec.host, sp.rtp_port))
            await asyncio.sleep(0.2)
            refused = ControlAnswer.decode(answers[0])
            assert refused.status == 401 and refused.mac == ""  # refusals are not signed
            assert sp.counters["control_refused"] == 1 and sp.counters["dropped_malformed"] == 1
            assert len(answers) == 1
        finally:
            port.close()


async def test_no_answer_by_datagram_falls_back_to_http():
    async with endpoints(1) as (speakers, link):
        sp = speakers[0]
        port = await _by_datagram(link, sp)
        nowhere = ("127.0.0.1", free_port())  # nobody takes datagrams there
        link.datagram_to = lambda sid, host, port: nowhere
        try:
            status = await call(link, sp, "GET", "/status")
            assert status["id"] == sp.spec.speaker_id
            assert link.datagram_fallbacks == 1 and sp.counters["control_datagrams"] == 0
        finally:
            port.close()


async def test_call_many_answers_in_order_over_several_waves_and_falls_back_one_by_one():
    async with endpoints(5) as (speakers, link):
        port = await open_udp("127.0.0.1", 0, link.on_answer)
        link.send_datagram = port.sendto
        deaf = speakers[3].spec.speaker_id  # its datagrams go where nobody listens
        nowhere = ("127.0.0.1", free_port())
        by_id = {sp.spec.speaker_id: sp for sp in speakers}
        link.datagram_to = lambda sid, host, p: (
            nowhere if sid == deaf else (host, by_id[sid].rtp_port)
        )
        drawn: list[str] = []

        def calls():  # a generator, drawn a wave at a time
            for sp in speakers + [speakers[0]]:  # one speaker twice: two calls, two answers
                drawn.append(sp.spec.speaker_id)
                yield Call(sp.spec.speaker_id, sp.spec.host, sp.control_port, "GET", "/status")
            yield Call("stranger", "127.0.0.1", free_port(), "GET", "/status")

        try:
            out = await link.call_many(calls(), limit=2)  # waves of 2, 2, 2 (and one alone)
            assert len(out) == 7 and len(drawn) == 6
            for sid, answer in zip(drawn, out[:6], strict=True):
                assert answer["id"] == sid  # each answer in the place of its call
            assert isinstance(out[6], SpeakerError) and out[6].code == "speaker_unpaired"
            assert link.datagram_fallbacks == 1  # the deaf one, by HTTP after its datagrams
            got = {sp.spec.speaker_id: sp.counters["control_datagrams"] for sp in speakers}
            assert got == {"s0": 2, "s1": 1, "s2": 1, "s3": 0, "s4": 1}
            assert not link.awaiting()  # nothing left pending
        finally:
            port.close()


async def test_call_many_asks_everyone_when_a_whole_wave_cannot_go_by_datagram():
    async with endpoints(3) as (speakers, link):  # no datagram route at all: all by HTTP
        calls = [
            Call(sp.spec.speaker_id, sp.spec.host, sp.control_port, "GET", "/status")
            for sp in speakers * 3
        ]
        out = await link.call_many(iter(calls), limit=2)  # waves of 2 that are all empty
        assert [a["id"] for a in out] == [c.speaker for c in calls]
