"""The media worker's ends: a graceful drain, hang-ups that reach the call whatever the pinning, the idle reaper,
and (scaled) a real ``runworker media`` process stopped with SIGTERM or killed with SIGKILL mid-call."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from asgiref.sync import sync_to_async

from media_pipeline import metrics
from media_pipeline.contract import MEDIA_CHANNEL, MEDIA_WORKERS_GROUP, hangup, to_worker
from roleplay.models import RealtimeSession
from tests.audio_fixtures import silence, speak
from tests.media_pipeline.live import LiveStack, WsPeer, redis_reachable, ws_connect_media
from tests.media_pipeline.voice_client import VoiceClient, connect

pytestmark = [pytest.mark.django_db(transaction=True)]


def active_calls() -> float:
    return metrics.ACTIVE_CALLS._value.get()


@sync_to_async
def reload(session_id: str) -> RealtimeSession:
    return RealtimeSession.objects.get(pk=session_id)


async def gone(worker, session_id: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while session_id in worker.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return session_id not in worker.sessions


async def recording_of(session_id: str, timeout: float = 10.0) -> RealtimeSession:
    deadline = time.monotonic() + timeout
    while True:
        session = await reload(session_id)
        if session.recording or time.monotonic() > deadline:
            return session
        await asyncio.sleep(0.05)


async def offer(peer, client: VoiceClient, offer_id: int) -> None:
    sdp, _ = await client.offer()
    await peer.send("media.offer", scenario_id=0, user_id=0, offer_id=offer_id, **sdp)


# --- drain ----------------------------------------------------------------------------------------

async def test_drain_tells_the_client_stores_the_recording_and_returns_in_time(media_worker, contract_peer,
                                                                                call_session):
    client = VoiceClient("pcma")
    try:
        await connect(contract_peer, client)
        client.track.play(speak("Hello there, this is a call about invoices.", rate=8000))
        await asyncio.sleep(2.0)
        started = time.monotonic()
        result = await media_worker.drain("server_shutdown", timeout=5.0)
        took = time.monotonic() - started
        assert took < 5.0 and result == {"calls": 1, "unfinished": 0, "seconds": pytest.approx(took, abs=0.05)}
        end = await contract_peer.expect("session_end", timeout=1)
        assert end["data"]["reason"] == "server_shutdown"
        session = await recording_of(call_session.pk)
        assert session.recording.name.endswith("recording-raw.wav")
        assert session.audio_metadata["recording"]["duration_ms"] > 1000
        assert media_worker.sessions == {} and active_calls() == 0
    finally:
        await client.close()


class StuckCall:
    """A call whose close never finishes (a storage that hangs)."""

    closed = False
    session_id = "sess_stuck"

    async def end_session(self, reason: str) -> None:
        self.told = reason

    async def close(self, reason: str) -> None:
        self.closed = True
        await asyncio.sleep(3600)


async def test_drain_returns_within_its_timeout_when_a_call_cannot_close(media_worker):
    stuck = StuckCall()
    media_worker.sessions[stuck.session_id] = stuck
    started = time.monotonic()
    result = await media_worker.drain("server_shutdown", timeout=0.5)
    assert time.monotonic() - started < 0.8
    assert result["unfinished"] == 1 and stuck.told == "server_shutdown"
    media_worker.sessions.clear()


async def test_a_draining_worker_leaves_new_offers_to_the_others(media_worker, call_session):
    await media_worker.drain(timeout=1.0)
    message = to_worker("media.offer", session_id=call_session.pk, reply_channel="reply!x", sdp="", candidates=[],
                        scenario_id=0, user_id=0, offer_id=1)
    await media_worker.dispatch(message)
    assert media_worker.sessions == {}
    assert await asyncio.wait_for(media_worker.layer.receive(MEDIA_CHANNEL), 1) == message  # back in the queue


# --- hang-ups and media resets ---------------------------------------------------------------------

async def test_a_hangup_sent_before_any_worker_answered_closes_the_call(media_worker, contract_peer, call_session):
    client = VoiceClient("pcma")
    try:
        await offer(contract_peer, client, offer_id=1)
        await contract_peer.expect("answer")
        # The consumer never saw media.pinned (its socket dropped first): it hangs up through the group.
        await media_worker.layer.group_send(MEDIA_WORKERS_GROUP, hangup(
            session_id=call_session.pk, reply_channel=contract_peer.reply_channel, reason="dropped", offer_id=1))
        assert await gone(media_worker, call_session.pk)
        assert active_calls() == 0
    finally:
        await client.close()


async def test_an_offer_given_up_before_it_was_taken_never_becomes_a_call(media_worker, contract_peer, call_session):
    await media_worker.layer.group_send(MEDIA_WORKERS_GROUP, hangup(
        session_id=call_session.pk, reply_channel=contract_peer.reply_channel, reason="dropped", offer_id=7))
    await asyncio.sleep(0.1)
    client = VoiceClient("pcma")
    try:
        await offer(contract_peer, client, offer_id=7)
        await asyncio.sleep(0.5)
        assert media_worker.sessions == {} and active_calls() == 0
        assert not contract_peer.of_type("answer")
    finally:
        await client.close()


async def test_a_media_reset_closes_the_call_but_not_one_answering_a_newer_offer(media_worker, contract_peer,
                                                                                call_session):
    client = VoiceClient("pcma")
    try:
        await offer(contract_peer, client, offer_id=1)
        await contract_peer.expect("answer")
        await offer(contract_peer, client, offer_id=2)  # re-offered: the same call answers it
        await contract_peer.expect("answer")
        await contract_peer.send("media.hangup", reason="media_reset", offer_id=1)  # the reset of the old one
        await asyncio.sleep(0.3)
        assert call_session.pk in media_worker.sessions
        await contract_peer.send("media.hangup", reason="media_reset", offer_id=2)
        assert await gone(media_worker, call_session.pk)
        assert active_calls() == 0
    finally:
        await client.close()


# --- through the real signaling consumer ----------------------------------------------------------

@pytest.fixture
async def consumer_and_worker(settings):
    """The /ws/voice/ consumer and a real media worker on the default (in-memory) channel layer."""
    from channels.layers import get_channel_layer
    from django.core.cache import cache

    from media_pipeline.worker import MediaWorker

    settings.MEDIA_WORKER_MODE = "external"  # no embedded worker: this one serves the shared channel
    settings.POSTPROCESS_EAGER_IN_BACKGROUND = False
    cache.clear()
    worker = MediaWorker(get_channel_layer())
    await worker.ensure_started(serve_shared=True)
    await asyncio.sleep(0.05)  # its tick joins the workers' group
    yield worker
    await worker.stop()
    cache.clear()


async def next_of_type(client, kind: str, timeout: float = 10.0) -> dict:
    """The next server message of ``kind``, read raw (the worker's answer lists candidates as objects)."""
    import json

    deadline = time.monotonic() + timeout
    while True:
        output = await client.ws.receive_output(max(0.1, deadline - time.monotonic()))
        message = json.loads(output["text"])
        if message["type"] == kind:
            return message


async def test_a_socket_dropped_before_the_worker_answered_leaves_no_call(consumer_and_worker, alice, scenario):
    from tests.signaling.test_voice_protocol import start

    client, _ = await start(alice, scenario)
    peer = VoiceClient("pcma")
    try:
        sdp, _ = await peer.offer()
        await client.send("offer", sdp)
        await client.ws.disconnect()  # gone before media.pinned reached the consumer
        assert await gone(consumer_and_worker, client.session_id)
        await asyncio.sleep(0.5)  # an offer taken after the hang-up is refused too
        assert consumer_and_worker.sessions == {} and active_calls() == 0
    finally:
        await peer.close()


async def test_a_media_reset_in_the_consumer_closes_the_workers_call(consumer_and_worker, alice, scenario):
    from tests.signaling.test_voice_protocol import start

    client, _ = await start(alice, scenario)
    peer = VoiceClient("pcma")
    try:
        sdp, _ = await peer.offer()
        await client.send("offer", sdp)
        await next_of_type(client, "answer")
        call = consumer_and_worker.sessions[client.session_id]
        await call.error("ERR_WEBRTC_FAILED", "The WebRTC connection failed; send a new offer.",
                         {"error_type": "peer_failed"})  # the consumer unpins: the call must not stay behind
        assert (await next_of_type(client, "error"))["data"]["code"] == "ERR_WEBRTC_FAILED"
        assert await gone(consumer_and_worker, client.session_id)
        assert active_calls() == 0
        sdp, _ = await peer.offer()
        await client.send("offer", sdp)  # a new offer makes a new call
        await next_of_type(client, "answer")
        assert client.session_id in consumer_and_worker.sessions and active_calls() == 1
        await client.send("disconnect", {"reason": "user_requested"})
        assert await gone(consumer_and_worker, client.session_id)
        assert active_calls() == 0
    finally:
        await client.ws.disconnect()
        await peer.close()


# --- the idle reaper -------------------------------------------------------------------------------

async def test_runworker_serves_its_pinned_channel_before_any_offer(monkeypatch):
    """A worker's heartbeat names its pinned channel from boot, and other workers pass offers there
    (full, or busier): ``runworker media`` reads that channel from its start, not from the first
    message it happens to win on the shared channel."""
    from channels.layers import get_channel_layer

    from media_pipeline import worker
    from media_pipeline.management.commands.runworker import DrainingWorker

    async def no_app(scope, receive, send):  # nothing arrives on the shared channel in this test
        await receive()

    monkeypatch.setattr(worker, "_worker", None)  # this process's worker, fresh for the test
    layer = get_channel_layer()
    runner = DrainingWorker(application=no_app, channels=[MEDIA_CHANNEL], channel_layer=layer)
    loop = asyncio.get_running_loop()
    handling = asyncio.ensure_future(runner.handle())
    media = worker.process_worker()
    try:
        reply = await layer.new_channel()
        await layer.send(media.channel, to_worker("media.hangup", session_id="never-offered", reply_channel=reply,
                                                  request_id="r1"))
        answer = await asyncio.wait_for(layer.receive(reply), 5)
        assert answer["type"] == "media.chunk_done" and answer["request_id"] == "r1"
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # the command's own end: listeners stopped, the worker drained
        await asyncio.wait_for(handling, 15)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await media.stop()


async def test_the_idle_reaper_closes_a_call_nobody_signals_for(media_worker, contract_peer, call_session, settings):
    settings.MEDIA_IDLE_REAP_SECONDS = 1.5
    client = VoiceClient("pcma")
    try:
        await connect(contract_peer, client)
        for _ in range(4):  # a consumer's keepalives keep it
            await asyncio.sleep(0.5)
            await contract_peer.send("media.keepalive")
        assert call_session.pk in media_worker.sessions
        client.track.play(speak("Is anyone there?", rate=8000))
        assert await gone(media_worker, call_session.pk, timeout=5)
        error = await contract_peer.expect("error")
        assert error["data"]["details"]["error_type"] == "media_idle"
        assert active_calls() == 0
        assert (await recording_of(call_session.pk)).recording
    finally:
        await client.close()


# --- scaled: a real runworker process --------------------------------------------------------------

PHRASE = "Hello, I would like to tell you about our new software."


async def talk(peer: WsPeer, client: VoiceClient, seconds: float) -> None:
    await peer.send("asr_start", {"language": "en-US", "format": "opus", "sample_rate": client.track.rate,
                                  "mode": "auto"})
    rate = client.track.rate
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        client.track.play(speak(PHRASE, rate=rate))
        client.track.play(silence(800, rate))
        await asyncio.sleep(4.0)


def scaled_stack(tmp_path) -> LiveStack:
    if not redis_reachable():
        pytest.skip("Redis at 127.0.0.1:6379 is not reachable")
    stack = LiveStack(tmp_path, scaled=True)
    # A killed worker's session is processed by the sweep once its recording lease runs out; a
    # short sweep period keeps that wait to the lease itself (~16 s) instead of up to 30 s more.
    stack.env.update({"SHUTDOWN_DRAIN_SECONDS": "10", "RECORDING_SEGMENT_SECONDS": "5",
                      "POSTPROCESS_EAGER_IN_BACKGROUND": "1", "SESSION_SWEEP_SECONDS": "2"})
    return stack.start()


async def processed(stack: LiveStack, session_id: str, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = stack.api(f"/api/sessions/{session_id}/")
        if data.get("processing") in ("done", "failed") or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.5)


@pytest.mark.scaled
@pytest.mark.slow
async def test_sigterm_drains_a_runworker_mid_call(tmp_path):
    stack = scaled_stack(tmp_path)
    try:
        worker = stack.start_worker("worker-a")
        await asyncio.to_thread(stack.wait_for_media_workers, 1)
        peer = await WsPeer(stack, stack.scenario_id()).start()
        client = VoiceClient("opus")
        await ws_connect_media(peer, client)
        await talk(peer, client, 8)
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        disconnect = await peer.expect("disconnect", timeout=10)
        assert disconnect["data"]["reason"] == "server_shutdown"
        code = await asyncio.to_thread(worker.wait, 15)
        drain_seconds = time.monotonic() - signalled
        assert code == 0, stack.log("worker-a")
        assert drain_seconds < 10, drain_seconds
        print(f"\nrunworker drained and exited in {drain_seconds:.2f} s")
        data = await processed(stack, peer.session_id)
        assert data["end_reason"] == "server_shutdown"
        assert data["processing"] == "done", data.get("processing_detail")
        assert data["recording"]
        assert data["audio_metadata"]["recording"]["duration_ms"] > 8000  # stored by the drain, all of it
        await client.close()
    finally:
        stack.stop()


@pytest.mark.scaled
@pytest.mark.slow
async def test_a_killed_runworker_keeps_the_recording_up_to_its_last_segment(tmp_path):
    stack = scaled_stack(tmp_path)
    try:
        stack.start_worker("worker-a")
        await asyncio.to_thread(stack.wait_for_media_workers, 1)
        peer = await WsPeer(stack, stack.scenario_id()).start()
        session_start = time.monotonic()  # the session's clock starts with the socket (within a few ms)
        client = VoiceClient("opus")
        await ws_connect_media(peer, client)
        await talk(peer, client, 14)
        killed_at_ms = (time.monotonic() - session_start) * 1000
        stack.kill("worker-a")  # SIGKILL: no drain, no save; only the stored segments survive
        await peer.close()  # the trainee hangs up: the session ends and is processed
        await client.close()
        data = await processed(stack, peer.session_id)
        assert data["processing"] == "done", data.get("processing_detail")
        recording = data["audio_metadata"]["recording"]
        assert recording["recovered_segments"] >= 2
        lost_ms = killed_at_ms - recording["duration_ms"]
        print(f"\nkilled at {killed_at_ms:.0f} ms, recording kept {recording['duration_ms']} ms "
              f"(lost {lost_ms:.0f} ms)")
        assert 0 <= lost_ms <= 5000 + 1000 + 500  # at most the segment being filled, plus its late-audio wait
        assert data["recording"]
    finally:
        stack.stop()
