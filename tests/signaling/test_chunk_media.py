"""The audio-chunk path's calls live in a media worker (signaling.chunk_media, media_pipeline.chunked).

In-process consumers (Channels' WebsocketCommunicator) and a real media worker on the project's
channel layer: in-memory in the embedded pass, Redis in the scaled pass."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from media_pipeline.chunked.call import ChunkCall
from media_pipeline.worker import MediaWorker
from roleplay.models import RealtimeSession
from signaling.chunk_sessions import manager
from tests.signaling.test_socketio_hostile import open_sio, start_session

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("_quiet_backends")]


@pytest.fixture
async def _quiet_backends(settings, default_layer_worker):
    settings.POSTPROCESS_EAGER_IN_BACKGROUND = False
    settings.MEDIA_WORKER_MODE = "external"
    default_layer_worker.publish()


async def session_state(session_id: str) -> str:
    return await sync_to_async(lambda: RealtimeSession.objects.get(pk=session_id).state)()


async def test_the_call_of_a_chunk_session_is_held_by_the_media_worker(alice, scenario, default_layer_worker):
    client = await open_sio(alice)
    sid = await start_session(client, scenario)
    call = default_layer_worker.sessions[sid]
    assert isinstance(call, ChunkCall) and call.turns is not None  # decoding and turns run there, not here
    assert (await client.event("ai-response"))["text"]  # the opening line came back through the link
    ended = await client.call("end-session", {"sessionId": sid}, ack_id=7)
    assert ended == {"sessionId": sid}
    assert sid not in default_layer_worker.sessions and manager.get(sid) is None
    assert await session_state(sid) == "ended"


async def test_a_full_worker_refuses_a_chunk_call_and_leaves_the_session_resumable(
    alice, bob, scenario, settings, default_layer_worker,
):
    settings.MAX_CHUNK_CALLS_PER_WORKER = 1
    first = await open_sio(alice)
    await start_session(first, scenario)
    second = await open_sio(bob)
    refused = await second.call("start-session", {"scenarioId": scenario.pk}, ack_id=5)
    error = refused["error"]
    assert error["code"] == "ERR_RATE_LIMIT", error
    assert error["details"]["reason"] == "capacity" and error["details"]["retry_after"] > 0
    assert "busy" in error["message"]
    assert len(default_layer_worker.sessions) == 1
    dropped = await sync_to_async(lambda: list(RealtimeSession.objects.filter(trainee=bob)
                                               .values_list("state", flat=True)))()
    assert dropped == ["dropped"]  # resumable once a line is free, not a dead session


async def test_a_chunk_session_whose_worker_stops_is_told_and_goes_on_with_another_worker(
    alice, scenario, monkeypatch, default_layer_worker,
):
    monkeypatch.setattr("signaling.chunk_media.CHECK_SECONDS", 0.1)
    client = await open_sio(alice)
    sid = await start_session(client, scenario)
    await client.event("ai-response")
    # The worker dies: no heartbeat, nobody serving its channels (its calls are not closed cleanly).
    default_layer_worker.stop_heartbeat()
    await default_layer_worker._stop_tasks()  # noqa: SLF001 - a crash, not a drain
    lost = await client.event("error")
    assert lost["code"] == "ERR_CONNECTION_FAILED" and lost["details"]["reason"] == "media_worker_lost"
    assert manager.get(sid) is None
    assert await session_state(sid) == "live"  # not ended: the trainee goes on

    replacement = MediaWorker(get_channel_layer())
    await replacement.ensure_started(serve_shared=True)
    try:
        resumed = await client.call("start-session", {"sessionId": sid}, ack_id=6)
        assert resumed["sessionId"] == sid and resumed["resumed"] and resumed["streamReset"]
        assert isinstance(replacement.sessions[sid], ChunkCall)
        ended = await client.call("end-session", {"sessionId": sid}, ack_id=7)
        assert ended == {"sessionId": sid}
    finally:
        await replacement.stop()


async def test_a_draining_worker_ends_its_chunk_sessions_and_their_clients_hear_why(alice, scenario,
                                                                                    default_layer_worker):
    client = await open_sio(alice)
    sid = await start_session(client, scenario)
    await client.event("ai-response")
    result = await default_layer_worker.drain("server_shutdown", timeout=10.0)
    ended = await client.event("session-ended")
    assert ended["reason"] == "server_shutdown"
    assert result["unfinished"] == 0 and manager.get(sid) is None
    assert await session_state(sid) == "ended"


async def test_two_sessions_opening_at_once_both_start_on_one_link(alice, bob, scenario):
    from signaling.chunk_media import link

    link._loop = None  # noqa: SLF001 - as after a restart: the first requests start the link
    clients = await asyncio.gather(open_sio(alice), open_sio(bob))
    started = await asyncio.gather(*(client.call("start-session", {"scenarioId": scenario.pk}, ack_id=3)
                                     for client in clients))
    assert all("sessionId" in body for body in started), started
    assert len([t for t in link._tasks if not t.done()]) == 2  # noqa: SLF001 - one receiver, one watcher
