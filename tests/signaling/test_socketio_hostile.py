"""Bounds on what a /socket.io/ client controls: chunk offsets and totals, nesting, attachments,
namespaces, ack ids, CONNECT and PING floods. Each refusal is ERR_INVALID_MESSAGE or
ERR_RATE_LIMIT and, where the protocol allows, the socket goes on.

Unit tests of the SessionManager and the wire, then the consumer through the full ASGI
application (Channels' WebsocketCommunicator), then one live daphne (slow).

"Refused at once" is measured in this thread's CPU time (``time.thread_time``): the work a hostile
input costs, which wall time on a shared 2-core machine cannot show without flaking."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from rest_framework_simplejwt.tokens import RefreshToken
from websockets.asyncio.client import connect as ws_connect

from lingecho.asgi import application
from signaling import auth
from signaling.chunk_sessions import OFFSET_WINDOW, ChunkLimits, ChunkRefused, SessionManager
from signaling.socketio_wire import MAX_ATTACHMENTS, Connect, Event, Ping, Pong, SocketIOWire, WireError
from tests.audio_fixtures import silence
from tests.signaling.socketio_live import LiveServer, media_recorder_pieces

# ================================================================================================
# SessionManager
# ================================================================================================


class NullSink:
    async def audio(self, data: bytes) -> None:
        return None

    async def idle(self) -> None:
        return None

    async def close(self, reason: str) -> None:
        return None


def limits(**overrides: Any) -> ChunkLimits:
    base = dict(flush_bytes=32 * 1024, idle_flush_seconds=2.0, session_timeout_seconds=1800.0,
                sweep_seconds=60.0, max_buffer_bytes=4 * 1024 * 1024, resume_seconds=60.0)
    return ChunkLimits(**{**base, **overrides})


@pytest.fixture
async def session():
    manager = SessionManager(limits())
    yield manager.open(session_id="s", user_id=1, sink=NullSink(), audio_config={})
    await manager.close("s", "user_requested")


@pytest.mark.parametrize("offset", [10**9, 2**62, OFFSET_WINDOW + 1])
async def test_it_refuses_an_offset_far_ahead_at_once(session, offset):
    started = time.thread_time()
    with pytest.raises(ChunkRefused) as refused:
        session.receive(offset, b"x")
    assert time.thread_time() - started < 0.005
    assert refused.value.code == "ERR_INVALID_MESSAGE"
    assert refused.value.details == {"offset": offset, "next_offset": 0, "limit": OFFSET_WINDOW}
    assert session.receive(0, b"a").next_offset == 1  # the session goes on


async def test_it_holds_at_most_a_window_of_chunks_and_reports_the_gap_in_bounded_time(session):
    for offset in range(1, OFFSET_WINDOW + 1):
        receipt = session.receive(offset, b"x")
    assert receipt.missing == [0] and len(session.held) == OFFSET_WINDOW
    with pytest.raises(ChunkRefused):
        session.receive(OFFSET_WINDOW + 1, b"x")
    assert session.receive(0, b"a").next_offset == OFFSET_WINDOW + 1 and not session.held
    session.receive(OFFSET_WINDOW + 1 + OFFSET_WINDOW, b"x")  # the window moved with next_offset
    started = time.thread_time()
    gap = session.receive(OFFSET_WINDOW + OFFSET_WINDOW, b"x")
    assert time.thread_time() - started < 0.005
    assert gap.missing[0] == OFFSET_WINDOW + 1 and len(gap.missing) == 32


async def test_a_repeated_offset_is_still_acknowledged_and_ignored(session):
    session.receive(0, b"a")
    session.receive(2, b"c")
    assert session.receive(0, b"a").duplicate and session.receive(2, b"c").duplicate
    assert session.receive(2, b"c").missing == [1]


# ================================================================================================
# wire
# ================================================================================================

MB = 1024 * 1024


@pytest.mark.parametrize(
    "frame",
    [
        "42" + "[" * 100_000,
        "42" + "[" * (MB - 2),
        "4" + "[" * 5000,
        '42["x",' + '{"a":' * 40 + "1" + "}" * 40 + "]",
        "42[" + "0," * 100_000 + "0]",
        '42["x",' + ",".join(["9" * 4299] * 240) + "]",  # 30 ms of int parsing
        "42" + " " * (MB - 2),
        "2" + "x" * 100,  # a ping carries a short probe at most
        "bAAAA",  # base64 binary is for polling
        "42/" + "n" * 200 + ',["x"]',
        "42" + "9" * 30 + '["x"]',
        "45" + "12-" + '["x"]',
        "41-" + '["x"]',
    ],
)
def test_it_refuses_hostile_frames_quickly_and_keeps_decoding(frame):
    wire = SocketIOWire()
    started = time.thread_time()
    with pytest.raises(WireError):
        wire.feed(frame)
    assert time.thread_time() - started < 0.02
    assert wire.feed('42["ok",{}]') == Event("ok", [{}], None)


def test_it_bounds_attachments_in_count_and_size():
    wire = SocketIOWire(max_frame_bytes=1000)
    with pytest.raises(WireError):
        wire.feed(f"45{MAX_ATTACHMENTS + 1}-" + '["x"]')
    assert wire.feed('451-["x",{"_placeholder":true,"num":0}]') is None
    with pytest.raises(WireError):
        wire.feed(b"\x00" * 1001)
    with pytest.raises(WireError):  # the event was dropped with its attachment
        wire.feed(b"\x00")
    assert wire.feed('451-["x",{"_placeholder":true,"num":7}]') is None
    with pytest.raises(WireError):  # a placeholder pointing nowhere
        wire.feed(b"\x00")
    assert wire.feed("3") == Pong()


def test_it_accepts_frames_within_every_bound():
    wire = SocketIOWire()
    deep: Any = "[{\\\"]}"
    for _ in range(30):
        deep = [deep]
    assert wire.feed("42" + json.dumps(["x", deep])) == Event("x", [deep], None)
    assert wire.feed("42" + str(2**53 - 1) + '["x"]').ack_id == 2**53 - 1
    assert wire.feed("2probe") == Ping("probe")
    assert wire.feed('40{"token":"' + "t" * 4000 + '"}') == Connect("/", {"token": "t" * 4000})


def test_it_decodes_a_one_megabyte_nested_frame_in_well_under_20_ms():
    wire = SocketIOWire()
    frames = ["42" + "[" * (MB - 2), "42[" * (MB // 3), '42["a",' + '{"a":' * (MB // 6)]
    for frame in frames:
        started = time.thread_time()
        with pytest.raises(WireError):
            wire.feed(frame)
        assert time.thread_time() - started < 0.02


# ================================================================================================
# the consumer, through the ASGI application
# ================================================================================================


class SioClient:
    """A raw Engine.IO/Socket.IO client over Channels' WebsocketCommunicator."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.ws = communicator

    async def send(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_to(bytes_data=frame)
        else:
            await self.ws.send_to(text_data=frame)

    async def emit(self, name: str, data: Any, ack_id: int | None = None) -> None:
        await self.send("42" + ("" if ack_id is None else str(ack_id)) + json.dumps([name, data]))

    async def frame(self, timeout: float = 10.0) -> str | int:
        """The next text frame, skipping server pings; a close is its code."""
        while True:
            output = await self.ws.receive_output(timeout)
            if output["type"] == "websocket.close":
                return output.get("code", 1000)
            if output.get("text") != "2":
                return output["text"]

    async def event(self, name: str, timeout: float = 10.0) -> Any:
        while True:
            frame = await self.frame(timeout)
            assert isinstance(frame, str), f"closed with {frame} waiting for {name}"
            if frame.startswith("42"):
                event, *args = json.loads(frame[2:])
                if event == name:
                    return args[0] if args else None

    async def ack(self, ack_id: int, timeout: float = 10.0) -> Any:
        prefix = f"43{ack_id}"
        while True:
            frame = await self.frame(timeout)
            assert isinstance(frame, str), f"closed with {frame} waiting for ack {ack_id}"
            if frame.startswith(prefix + "["):
                return json.loads(frame[len(prefix):])[0]

    async def call(self, name: str, data: Any, ack_id: int = 1) -> Any:
        await self.emit(name, data, ack_id)
        return await self.ack(ack_id)

    async def usable(self) -> None:
        await self.send("2")
        assert await self.frame() == "3"


def access_token(user) -> str:
    return str(RefreshToken.for_user(user).access_token)


async def open_sio(user=None, *, connect: bool = True) -> SioClient:
    query = "EIO=4&transport=websocket"
    if user is not None:
        query += "&token=" + await sync_to_async(access_token)(user)
    communicator = WebsocketCommunicator(application, "/socket.io/?" + query)
    accepted, _ = await communicator.connect()
    assert accepted
    client = SioClient(communicator)
    assert (await client.frame()).startswith("0{")
    if connect:
        await client.send("40")
        assert (await client.frame()).startswith('40{"sid":')
    return client


@pytest.fixture
async def _quiet_backends(settings, default_layer_worker):
    """No after-call job in the background; the chunk calls go to a media worker on the test's layer."""
    settings.POSTPROCESS_EAGER_IN_BACKGROUND = False
    settings.MEDIA_WORKER_MODE = "external"
    default_layer_worker.publish()
    yield
    cache.clear()


async def start_session(client: SioClient, scenario) -> str:
    started = await client.call("start-session", {"scenarioId": scenario.pk}, ack_id=99)
    return started["sessionId"]


async def end_session(client: SioClient, session_id: str) -> None:
    assert await client.call("end-session", {"sessionId": session_id}, ack_id=98) == {"sessionId": session_id}
    await client.ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_quiet_backends")
class TestTheConsumer:
    async def test_an_offset_of_two_to_the_62_is_refused_and_the_session_goes_on(self, alice, scenario):
        client = await open_sio(alice)
        sid = await start_session(client, scenario)
        piece = base64.b64encode(b"\x1a\x45\xdf\xa3").decode()
        refused = await client.call("audio-chunk", {"sessionId": sid, "offset": 2**62, "audioData": piece})
        assert refused["error"]["code"] == "ERR_INVALID_MESSAGE"
        assert refused["error"]["details"] == {"offset": 2**62, "next_offset": 0, "limit": OFFSET_WINDOW}
        ack = await client.call("audio-chunk", {"sessionId": sid, "offset": 0, "audioData": piece}, ack_id=2)
        assert ack["nextOffset"] == 1
        await end_session(client, sid)

    @pytest.mark.parametrize(
        ("event", "data"),
        [
            ("audio-chunk", {"offset": 2**40, "audioData": "AAAA"}),
            ("audio-chunk", {"offset": True, "audioData": "AAAA"}),
            ("audio-chunk", {"offset": 0, "totalChunks": 2**40, "audioData": "AAAA"}),
            ("audio-chunk", {"offset": 0, "totalChunks": "12", "audioData": "AAAA"}),
            ("audio-chunk", {"offset": 0, "totalChunks": 0, "audioData": "AAAA"}),
            ("start-session", {"sessionId": "s" * 65}),
            ("start-session", {"scenarioId": "9" * 40}),
            ("start-session", {"scenarioId": -3}),
            ("start-session", {"scenarioId": 2**70}),
            ("text-message", {"text": "x" * 4001}),
        ],
    )
    async def test_it_refuses_out_of_bound_numbers_and_ids(self, alice, scenario, event, data):
        client = await open_sio(alice)
        sid = await start_session(client, scenario)
        refused = await client.call(event, data)
        assert refused["error"]["code"] == "ERR_INVALID_MESSAGE", refused
        await client.usable()
        await end_session(client, sid)

    async def test_a_nested_packet_before_auth_is_refused_and_the_socket_goes_on(self, alice, settings):
        settings.WS_MAX_MESSAGE_BYTES = MB
        client = await open_sio(alice, connect=False)
        await client.send("42" + "[" * 100_000)
        error = await client.event("error")
        assert error["code"] == "ERR_INVALID_MESSAGE" and "JSON" in error["message"]
        await client.send("40" + '{"a":' * 50 + "1" + "}" * 50)
        assert (await client.event("error"))["code"] == "ERR_INVALID_MESSAGE"
        await client.send("40")
        assert (await client.frame()).startswith('40{"sid":')
        await client.ws.disconnect()

    async def test_an_event_on_another_namespace_is_refused(self, alice):
        client = await open_sio(alice)
        await client.send('42/admin,7["start-session",{}]')
        assert (await client.ack(7))["error"]["code"] == "ERR_INVALID_MESSAGE"
        await client.ws.disconnect()

    async def test_a_second_connect_is_refused_without_a_database_query(self, alice, monkeypatch):
        lookups: list[str] = []
        real = auth._user_from_token

        async def counted(token: str):
            lookups.append(token)
            return await real(token)

        monkeypatch.setattr(auth, "_user_from_token", counted)
        token = await sync_to_async(access_token)(alice)
        client = await open_sio(None, connect=False)
        await client.send("40" + json.dumps({"token": token}))
        assert (await client.frame()).startswith('40{"sid":')
        for _ in range(3):
            await client.send("40" + json.dumps({"token": token}))
            error = await client.event("error")
            assert error["code"] == "ERR_INVALID_MESSAGE" and "already connected" in error["message"]
        assert len(lookups) == 1
        await client.usable()
        await client.ws.disconnect()

    async def test_an_oversized_token_is_refused_without_a_database_query(self, monkeypatch):
        lookups: list[str] = []
        monkeypatch.setattr(auth, "_user_from_token", lambda token: lookups.append(token))
        client = await open_sio(None, connect=False)
        await client.send("40" + json.dumps({"token": "t" * (auth.MAX_TOKEN_CHARS + 1)}))
        assert json.loads((await client.frame())[2:])["message"] == "Authentication required"
        assert await client.frame() == 4401 and lookups == []

    async def test_a_ping_flood_is_rate_limited_then_closed(self, alice, settings):
        settings.WS_RATE_BURST, settings.WS_RATE_PER_SECOND, settings.WS_RATE_VIOLATIONS_BEFORE_CLOSE = 5, 0.1, 3
        client = await open_sio(alice)  # the CONNECT took one token
        for _ in range(10):
            await client.send("2")
        answers = [await client.frame() for _ in range(4 + 3 + 1)]
        assert answers[:4] == ["3"] * 4
        errors = [json.loads(a[2:])[1] for a in answers[4:7]]
        assert all(e["code"] == "ERR_RATE_LIMIT" and e["details"]["retry_after"] > 0 for e in errors)
        assert answers[7] == "41" and await client.frame() == 4429

    async def test_connect_attempts_and_events_count_against_the_same_bucket(self, alice, settings):
        settings.WS_RATE_BURST, settings.WS_RATE_PER_SECOND, settings.WS_RATE_VIOLATIONS_BEFORE_CLOSE = 4, 0.1, 2
        client = await open_sio(alice)
        await client.send("40")
        await client.send("not a packet")
        await client.send("3")
        await client.emit("text-message", {"text": "hi"}, ack_id=5)
        assert (await client.ack(5))["error"]["code"] == "ERR_RATE_LIMIT"
        await client.send("2")
        assert await client.event("error") is not None
        frames = [await client.frame() for _ in range(2)]
        assert frames[-1] == 4429


# ================================================================================================
# live daphne: a hostile socket does not slow anyone else down
# ================================================================================================


@pytest.fixture(scope="module")
def hostile_server():
    live = LiveServer(WS_MAX_MESSAGE_BYTES=str(MB - 16)).start()
    yield live
    live.stop()


async def _sio_socket(server: LiveServer, token: str):
    ws = await ws_connect(server.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
                          max_size=4 * MB)
    assert (await ws.recv()).startswith("0{")
    await ws.send("40" + json.dumps({"token": token}))
    assert (await ws.recv()).startswith('40{"sid":')
    return ws


async def _recv_until(ws, predicate, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        frame = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
        if frame == "2":
            await ws.send("3")
            continue
        if predicate(frame):
            return frame


async def _round_trip(ws, ack_id: int) -> float:
    """An event with an ack id the server answers at once (an unknown event: refused in the ack)."""
    started = time.perf_counter()
    await ws.send(f"42{ack_id}" + json.dumps(["ping-me", {}]))
    await _recv_until(ws, lambda f: f.startswith(f"43{ack_id}["))
    return time.perf_counter() - started


@pytest.mark.slow
async def test_a_hostile_socket_leaves_another_sockets_round_trip_under_50_ms(hostile_server):
    server = hostile_server
    token = server.token()
    bystander = await _sio_socket(server, token)
    hostile = await _sio_socket(server, token)
    try:
        await hostile.send("42" + json.dumps(["start-session", {"scenarioId": server.scenario_id()}]))
        started = json.loads((await _recv_until(hostile, lambda f: f.startswith('42["session-started"')))[2:])[1]
        # The opening line loads and warms the engines in threads: measure once the server is quiet.
        await _recv_until(hostile, lambda f: f.startswith('42["avatar-response"'), timeout=60)
        baseline = min([await _round_trip(bystander, i) for i in range(1, 6)])
        piece = base64.b64encode(media_recorder_pieces(silence(300))[0]).decode()

        await hostile.send("4277" + json.dumps(
            ["audio-chunk", {"sessionId": started["sessionId"], "offset": 2**62, "audioData": piece}]))
        await hostile.send("42" + "[" * 100_000)
        after = await _round_trip(bystander, 10)
        later = [await _round_trip(bystander, i) for i in range(11, 16)]

        refused = json.loads((await _recv_until(hostile, lambda f: f.startswith("4377[")))[4:])[0]
        assert refused["error"]["code"] == "ERR_INVALID_MESSAGE"
        assert refused["error"]["details"]["offset"] == 2**62
        nested = json.loads((await _recv_until(hostile, lambda f: f.startswith('42["error"') and "JSON" in f))[2:])
        assert nested[1]["code"] == "ERR_INVALID_MESSAGE"
        print(f"bystander round trip: baseline {baseline * 1000:.1f} ms, right after the hostile frames "
              f"{after * 1000:.1f} ms, next five max {max(later) * 1000:.1f} ms")
        assert after < 0.05 and max(later) < 0.05

        # The hostile socket is still open and its session goes on.
        await hostile.send("4278" + json.dumps(
            ["audio-chunk", {"sessionId": started["sessionId"], "offset": 0, "audioData": piece}]))
        ack = json.loads((await _recv_until(hostile, lambda f: f.startswith("4378[")))[4:])[0]
        assert ack["nextOffset"] == 1
        await hostile.send("4279" + json.dumps(["end-session", {"sessionId": started["sessionId"]}]))
        await _recv_until(hostile, lambda f: f.startswith("4379["), timeout=20)
    finally:
        await hostile.close()
        await bystander.close()
