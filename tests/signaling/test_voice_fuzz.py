"""Property: no frame a client can send breaks the /ws/voice/ consumer.

Random text, random bytes, random JSON and mutated valid messages go in; every answer must be a
schema-valid server message, nothing may be an internal error, the socket must still answer a
ping, and the state machine must not have moved (no media worker is alive, so nothing can leave
Initialized) unless the frames legitimately ended the session.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.cache import cache
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from roleplay.models import RealtimeSession
from signaling import protocol
from tests.signaling.test_voice_protocol import start

pytestmark = pytest.mark.django_db(transaction=True)

VALID: dict[str, dict[str, Any]] = {
    "ping": {},
    "pong": {"server_time": 1},
    "error": {"code": "ERR_TIMEOUT", "message": "slow", "details": {}},
    "text_message": {"message_id": "m1", "text": "How do you reconcile invoices?", "language": "en"},
    "offer": {"sdp": "v=0\r\n", "candidates": ["candidate:1 1 UDP 1 10.0.0.1 5000 typ host"]},
    "ice_candidate": {"candidate": "", "sdp_mid": "0", "sdp_mline_index": 0},
    "connected": {"connection_state": "connected", "audio_codec": "pcma", "sample_rate": 8000},
    "ready": {"direction": "both"},
    "asr_start": {"language": "en", "format": "pcma", "sample_rate": 8000, "mode": "auto"},
    "asr_stop": {},
    "tts_request": {"request_id": "t1", "text": "Hello.", "voice": "en-us", "speed": 1.0, "pitch": 1.0},
    "disconnect": {"reason": "user_requested"},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(["type", "session_id", "timestamp", "data", "error", "extra"])
data_keys = st.sampled_from(sorted({k for d in VALID.values() for k in d} | {"bogus"}))


@st.composite
def mutated(draw) -> str:
    message_type = draw(st.sampled_from(sorted(VALID) + ["answer", "init", "nonsense"]))
    frame: dict[str, Any] = {
        "type": message_type,
        "session_id": "SESSION",
        "timestamp": 1703123456789,
        "data": dict(VALID.get(message_type, {})),
        "error": None,
    }
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "set", "data_drop", "data_set", "session"]))
        if action == "drop":
            frame.pop(draw(keys), None)
        elif action == "set":
            frame[draw(keys)] = draw(json_values)
        elif action == "data_drop" and isinstance(frame.get("data"), dict) and frame["data"]:
            frame["data"].pop(draw(st.sampled_from(sorted(frame["data"]))))
        elif action == "data_set" and isinstance(frame.get("data"), dict):
            frame["data"][draw(data_keys)] = draw(json_values)
        elif action == "session":
            frame["session_id"] = draw(st.text(max_size=12))
    return json.dumps(frame)


frames = st.one_of(
    mutated(),
    st.text(min_size=1, max_size=80),
    json_values.map(json.dumps),
    st.binary(min_size=1, max_size=64),
)


async def _exercise(user, scenario, batch: list[str | bytes]) -> None:
    cache.clear()  # no media worker heartbeat: nothing can leave Initialized
    client, _ = await start(user, scenario)
    for frame in batch:
        if isinstance(frame, bytes):
            await client.ws.send_to(bytes_data=frame)
        else:
            await client.ws.send_to(text_data=frame.replace('"SESSION"', json.dumps(client.session_id)))
    # A marker the server echoes in its error details: everything before it answers the batch.
    await client.send("fuzz_marker")
    ended = False
    while True:
        output = await client.ws.receive_output(10)
        if output["type"] == "websocket.close":
            ended = True
            break
        message = json.loads(output["text"])
        assert protocol.validate_server_message(message) == {}, message
        assert message["type"] in {"error", "pong", "text_response", "disconnect"}, message
        if message["type"] == "error":
            assert message["data"]["details"].get("reason") != "internal_error", message
            if message["data"]["details"].get("type") == "fuzz_marker":
                break
    row = await sync_to_async(RealtimeSession.objects.get)(pk=client.session_id)
    if ended:
        assert row.state == "ended" and row.end_reason
        await client.ws.disconnect()
        return
    assert row.state == "live"
    await client.send("ice_candidate", {"candidate": ""})
    assert (await client.recv())["data"]["details"]["state"] == "initialized"
    await client.usable()
    await client.send("disconnect", {"reason": "user_requested"})
    while (await client.ws.receive_output(10))["type"] != "websocket.close":
        pass  # let the session end fully before the next example connects
    await client.ws.disconnect()


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(frames, max_size=12))
def test_random_and_mutated_frames_never_break_the_consumer(alice, scenario, settings, batch):
    settings.WS_RATE_BURST = 1000
    settings.POSTPROCESS_EAGER_IN_BACKGROUND = False  # see test_voice_protocol._clean_shared_state
    settings.MEDIA_WORKER_MODE = "external"
    settings.MAX_LIVE_SESSIONS_PER_USER = 1000
    async_to_sync(_exercise)(alice, scenario, batch)
