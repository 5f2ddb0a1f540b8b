"""Bounds on what a /ws/voice/ client controls: nesting, SDP size and shape, trickled candidates,
speech requests. Each refusal is ERR_INVALID_MESSAGE or ERR_RATE_LIMIT and the socket goes on."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from signaling import protocol
from signaling.protocol import MAX_CANDIDATES, MAX_JSON_DEPTH, MAX_SDP_MLINES, ProtocolError, parse_client_frame
from tests.signaling.test_voice_protocol import FakeWorker, _clean_shared_state, media_up, start  # noqa: F401

pytestmark = pytest.mark.django_db(transaction=True)

M_LINE = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
CANDIDATE = "a=candidate:1 1 UDP 2122260223 10.0.0.1 5000 typ host\r\n"


def frame(message_type: str, data: dict[str, Any], **envelope: Any) -> str:
    return json.dumps({"type": message_type, "session_id": "S", "data": data, **envelope})


# ---- the frame parser ---------------------------------------------------------------------------


def test_it_refuses_a_hundred_thousand_deep_frame_quickly():
    started = time.perf_counter()
    with pytest.raises(ProtocolError) as refused:
        parse_client_frame("[" * 100_000 + "]" * 100_000)
    took = time.perf_counter() - started
    assert refused.value.code == "ERR_INVALID_MESSAGE" and refused.value.details["reason"] == "too_complex"
    assert took < 0.02, took


def test_it_refuses_nesting_deeper_than_the_limit_inside_a_valid_envelope():
    details = {"d": 0}
    for _ in range(MAX_JSON_DEPTH):
        details = {"d": details}
    with pytest.raises(ProtocolError) as refused:
        parse_client_frame(frame("error", {"code": "ERR_TIMEOUT", "message": "x", "details": details}))
    assert refused.value.details["reason"] == "too_complex"


def test_it_accepts_nesting_within_the_limit_and_brackets_inside_strings():
    details: dict[str, Any] = {"d": "[[[[{{{{\\\"]]]]" * 100}
    for _ in range(MAX_JSON_DEPTH - 4):
        details = {"d": details}
    message = parse_client_frame(frame("error", {"code": "ERR_TIMEOUT", "message": "[{\"", "details": details}))
    assert message.type == "error"


def test_it_refuses_a_frame_with_too_many_values():
    with pytest.raises(ProtocolError) as refused:
        parse_client_frame(frame("error", {"code": "ERR_TIMEOUT", "message": "x", "details": {"l": [0] * 5000}}))
    assert refused.value.details["reason"] == "too_complex"


@pytest.mark.parametrize(
    ("message_type", "data", "field"),
    [
        ("offer", {"sdp": "v=0\r\n" + M_LINE * (MAX_SDP_MLINES + 1)}, "sdp"),
        ("offer", {"sdp": "v=0\r\n" + M_LINE + CANDIDATE * (MAX_CANDIDATES + 1)}, "sdp"),
        ("offer", {"sdp": "v=0\r\n" + CANDIDATE * 40, "candidates": ["candidate:x"] * 30}, "sdp"),
        ("offer", {"sdp": "v=0\r\n", "candidates": ["candidate:x"] * (MAX_CANDIDATES + 1)}, "candidates"),
        ("offer", {"sdp": "x" * (protocol.MAX_SDP_CHARS + 1)}, "sdp"),
        ("ping", {"client_time": 2**60}, "client_time"),
        ("tts_request", {"request_id": "t", "text": "x" * (protocol.MAX_TTS_CHARS + 1)}, "text"),
        ("tts_request", {"request_id": "t", "text": "hi", "voice": "v" * 65}, "voice"),
        ("tts_request", {"request_id": "t", "text": "hi", "speed": 3}, "speed"),
        ("tts_request", {"request_id": "t", "text": "hi", "pitch": 0.1}, "pitch"),
        ("tts_request", {"request_id": "t" * 65, "text": "hi"}, "request_id"),
        ("ice_candidate", {"candidate": "c" * 1025}, "candidate"),
        ("ice_candidate", {"candidate": "", "sdp_mline_index": 65}, "sdp_mline_index"),
        ("text_message", {"message_id": "m", "text": "x" * (protocol.MAX_TEXT_CHARS + 1)}, "text"),
    ],
)
def test_it_refuses_every_client_number_past_its_bound(message_type, data, field):
    with pytest.raises(ProtocolError) as refused:
        parse_client_frame(frame(message_type, data))
    assert refused.value.code == "ERR_INVALID_MESSAGE" and field in refused.value.details["fields"]


def test_it_accepts_a_browser_sized_offer():
    sdp = "v=0\r\n" + (M_LINE + CANDIDATE * 6) * 2
    assert parse_client_frame(frame("offer", {"sdp": sdp, "candidates": ["candidate:y"] * 8})).type == "offer"


@pytest.mark.parametrize(("key", "value"), [("timestamp", 2**60), ("session_id", "s" * 129)])
def test_it_bounds_the_envelope(key, value):
    with pytest.raises(ProtocolError) as refused:
        parse_client_frame(frame("ping", {}, **{key: value}))
    assert refused.value.details["fields"][key]


# ---- through the consumer -------------------------------------------------------------------------


async def test_a_deeply_nested_frame_is_refused_and_the_socket_goes_on(alice, scenario):
    client, _ = await start(alice, scenario)
    await client.ws.send_to(text_data="[" * 60_000)
    error = await client.recv_type("error")
    assert error["error"] == "ERR_INVALID_MESSAGE" and error["data"]["details"]["reason"] == "too_complex"
    await client.usable()
    await client.ws.disconnect()


async def test_an_offer_with_too_many_m_lines_is_refused_and_the_socket_goes_on(alice, scenario):
    client, _ = await start(alice, scenario)
    await client.send("offer", {"sdp": "v=0\r\n" + M_LINE * 50})
    error = await client.recv_type("error")
    assert error["data"]["details"]["fields"]["sdp"].startswith("must have at most")
    await client.usable()
    await client.ws.disconnect()


async def test_it_refuses_trickled_candidates_past_the_limit(alice, scenario, settings):
    settings.WS_RATE_BURST = 1000
    async with FakeWorker() as worker:
        client, _ = await start(alice, scenario)
        await media_up(client, worker)  # one end-of-candidates already trickled
        for i in range(MAX_CANDIDATES - 1):
            await client.send("ice_candidate", {"candidate": f"candidate:{i} 1 UDP 1 10.0.0.1 {5000 + i} typ host"})
        await client.send("ice_candidate", {"candidate": "candidate:x 1 UDP 1 10.0.0.1 6000 typ host"})
        error = await client.recv_type("error")
        assert error["data"]["details"] == {"reason": "too_many_candidates", "limit": MAX_CANDIDATES}
        assert worker.kinds().count("media.ice") <= MAX_CANDIDATES
        await client.usable()
        await client.ws.disconnect()


class QuietSpeaker(FakeWorker):
    """A FakeWorker that starts speaking but finishes a request only when the test says so."""

    async def emit(self, reply_channel: str, session_id: str, message_type: str, data: dict[str, Any]) -> None:
        if message_type == "tts_complete" and not data.get("_finish"):
            return
        data.pop("_finish", None)
        await super().emit(reply_channel, session_id, message_type, data)

    async def finish(self, request_id: str) -> None:
        offer = await self.wait_for("media.offer")
        await self.emit(offer["reply_channel"], offer["session_id"], "tts_complete",
                        {"request_id": request_id, "duration_ms": 500, "_finish": True})

    async def fail(self, request_id: str) -> None:
        offer = await self.wait_for("media.offer")
        await self.emit(offer["reply_channel"], offer["session_id"], "error",
                        {"code": "ERR_TTS_FAILED", "message": "no", "details": {"request_id": request_id}})


async def _speak(client, request_id: str) -> None:
    await client.send("tts_request", {"request_id": request_id, "text": "Hello there."})


async def test_it_keeps_at_most_two_speech_requests_pending_and_releases_one_per_tts_complete(alice, scenario):
    async with QuietSpeaker() as worker:
        client, _ = await start(alice, scenario)
        await media_up(client, worker)
        await _speak(client, "t1")
        await _speak(client, "t2")
        assert (await client.recv_type("tts_start"))["data"]["request_id"] == "t1"
        assert (await client.recv_type("tts_start"))["data"]["request_id"] == "t2"
        await _speak(client, "t3")
        error = await client.recv_type("error")
        assert error["error"] == "ERR_RATE_LIMIT"
        assert error["data"]["details"] == {"retry_after": 1000, "pending": 2, "limit": 2, "request_id": "t3"}
        assert worker.kinds().count("media.tts_request") == 2

        await worker.finish("t1")
        assert (await client.recv_type("tts_complete"))["data"]["request_id"] == "t1"
        await _speak(client, "t4")
        assert (await client.recv_type("tts_start"))["data"]["request_id"] == "t4"
        await _speak(client, "t5")
        assert (await client.recv_type("error"))["error"] == "ERR_RATE_LIMIT"

        await worker.fail("t2")  # a failed request is released too
        assert (await client.recv_type("error"))["error"] == "ERR_TTS_FAILED"
        await _speak(client, "t6")
        assert (await client.recv_type("tts_start"))["data"]["request_id"] == "t6"
        assert worker.kinds().count("media.tts_request") == 4
        await client.ws.disconnect()


async def test_a_media_reset_releases_the_pending_speech_requests(alice, scenario, settings):
    settings.MAX_PENDING_TTS_REQUESTS = 1
    async with QuietSpeaker() as worker:
        client, _ = await start(alice, scenario)
        await media_up(client, worker)
        await _speak(client, "t1")
        await client.recv_type("tts_start")
        await _speak(client, "t2")
        assert (await client.recv_type("error"))["data"]["details"]["limit"] == 1
        offer = await worker.wait_for("media.offer")
        await worker.emit(offer["reply_channel"], client.session_id, "error",
                          {"code": "ERR_WEBRTC_FAILED", "message": "ice failed", "details": {}})
        assert (await client.recv_type("error"))["error"] == "ERR_WEBRTC_FAILED"
        await client.send("offer", {"sdp": "v=0\r\n"})
        await client.recv_type("answer")
        await client.send("ice_candidate", {"candidate": ""})
        await client.recv_type("connected")
        await client.send("ready", {"direction": "both"})
        await client.recv_type("ready")
        await _speak(client, "t3")
        assert (await client.recv_type("tts_start"))["data"]["request_id"] == "t3"
        await client.ws.disconnect()
