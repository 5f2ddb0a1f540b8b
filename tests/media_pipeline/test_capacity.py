"""Admission control: past MAX_CALLS_PER_WORKER a new call is refused with a clear "all lines busy"
(ERR_RATE_LIMIT, reason capacity, retry_after) and the call in progress carries on; with two workers
a full one hands the offer to the one with room. Real aiortc clients through the channel-layer contract."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from media_pipeline import metrics
from media_pipeline.contract import ErrorCode
from media_pipeline.executor import RateBudget
from roleplay import services
from roleplay.models import RealtimeSession
from tests.audio_fixtures import silence, speak
from tests.factories import make_user
from tests.media_pipeline.voice_client import ContractPeer, VoiceClient, connect

pytestmark = [pytest.mark.django_db(transaction=True)]

PHRASE = "How do you handle your invoices today?"


@sync_to_async
def new_session(scenario, name: str) -> str:
    return services.session_create(trainee=make_user(name), scenario=scenario,
                                   transport=RealtimeSession.Transport.WEBRTC).pk


async def offer_only(peer: ContractPeer, client: VoiceClient) -> None:
    offer, _ = await client.offer()
    await peer.send("media.offer", scenario_id=0, user_id=0, **offer)


async def test_a_call_over_capacity_is_refused_and_the_call_in_progress_carries_on(
        media_worker, contract_peer, call_session, scenario, settings):
    settings.MAX_CALLS_PER_WORKER = 1
    settings.CAPACITY_RETRY_AFTER_SECONDS = 20
    refused_before = metrics.CALLS_REFUSED_TOTAL._value.get()
    first, second = VoiceClient("pcma"), VoiceClient("pcma")
    late = await ContractPeer(media_worker.layer, await new_session(scenario, "late")).start()
    try:
        await connect(contract_peer, first)
        await contract_peer.send("media.asr_start", language="en", format="pcma", sample_rate=16000, mode="auto")

        await offer_only(late, second)
        error = await late.expect("error", timeout=10)
        assert error["data"]["code"] == ErrorCode.RATE_LIMIT
        assert error["data"]["details"] == {"reason": "capacity", "retry_after": 20_000}
        assert "busy" in error["data"]["message"] and "20 s" in error["data"]["message"]
        assert not late.of_type("answer") and late.worker_channel is None
        assert late.session_id not in media_worker.sessions
        assert metrics.CALLS_REFUSED_TOTAL._value.get() == refused_before + 1

        # The call that was let in is unaffected: it is heard and answered by voice.
        first.track.play(speak(PHRASE, rate=8000))
        first.track.play(silence(1200, 8000))
        result = await contract_peer.expect("asr_result", timeout=20)
        assert "invoice" in result["data"]["text"].lower()
        await contract_peer.expect("tts_complete", timeout=30)
        assert first.heard_rms_since(result["at"]) > 0.02

        # A line is free again once that call hangs up: the same offer is now taken.
        await contract_peer.send("media.hangup", reason="user_requested")
        for _ in range(200):
            if media_worker.live_calls() == 0:
                break
            await asyncio.sleep(0.05)
        await second.close()
        second = VoiceClient("pcma")
        await connect(late, second)
    finally:
        await late.stop()
        await first.close()
        await second.close()


async def test_a_full_worker_hands_the_offer_to_a_worker_with_room(media_worker, scenario, settings):
    from media_pipeline.worker import MediaWorker

    settings.MAX_CALLS_PER_WORKER = 1
    other = MediaWorker(media_worker.layer)
    await other.ensure_started(serve_shared=True)
    peers = [await ContractPeer(media_worker.layer, await new_session(scenario, f"u{i}")).start() for i in range(3)]
    clients = [VoiceClient("pcma") for _ in range(3)]
    try:
        for peer, client in zip(peers[:2], clients[:2], strict=True):
            await connect(peer, client)
        # One call on each worker, wherever each offer landed first.
        assert {peers[0].worker_channel, peers[1].worker_channel} == {media_worker.channel, other.channel}
        assert media_worker.live_calls() == other.live_calls() == 1

        await offer_only(peers[2], clients[2])  # both full now
        error = await peers[2].expect("error", timeout=10)
        assert error["data"]["details"]["reason"] == "capacity"
        assert peers[2].session_id not in media_worker.sessions and peers[2].session_id not in other.sessions
    finally:
        for peer in peers:
            await peer.stop()
        for client in clients:
            await client.close()
        await other.stop()


def test_the_interim_budget_is_shared_and_refills():
    now = [0.0]
    budget = RateBudget(2.0, burst=2.0, clock=lambda: now[0])
    assert [budget.try_take() for _ in range(3)] == [True, True, False]
    now[0] += 0.5  # one more unit at 2 per second
    assert [budget.try_take(), budget.try_take()] == [True, False]
    assert all(RateBudget(0).try_take() for _ in range(100))  # 0 = no budget
