"""Admission control: past MAX_CALLS_PER_WORKER a new call is refused with a clear "all lines busy"
(ERR_RATE_LIMIT, reason capacity, retry_after) and the call in progress carries on; with two workers
a full one hands the offer to the one with room, and a busier one a fresh offer to the one with fewer
calls. Real aiortc clients through the channel-layer contract."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from asgiref.sync import sync_to_async

from media_pipeline import host_capacity, metrics
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


@pytest.mark.parametrize("limit", ["setting", "auto"])
async def test_a_call_over_capacity_is_refused_and_the_call_in_progress_carries_on(
        media_worker, contract_peer, call_session, scenario, settings, monkeypatch, limit):
    if limit == "auto":  # sized to the host (host_capacity): here as if its reference decode allowed one
        settings.MAX_CALLS_PER_WORKER = None
        monkeypatch.setattr(host_capacity, "_measured", 1)
    else:
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


@contextlib.asynccontextmanager
async def second_worker(media_worker, scenario, calls: int, name: str, *, serve_shared: bool = False):
    """A second media worker on media_worker's layer, and ``calls`` sessions with a peer and a client
    each; all stopped afterwards."""
    from media_pipeline.worker import MediaWorker

    other = MediaWorker(media_worker.layer)
    await other.ensure_started(serve_shared=serve_shared)
    peers = [await ContractPeer(media_worker.layer, await new_session(scenario, f"{name}{i}")).start()
             for i in range(calls)]
    clients = [VoiceClient("pcma") for _ in range(calls)]
    try:
        yield other, peers, clients
    finally:
        for peer in peers:
            await peer.stop()
        for client in clients:
            await client.close()
        await other.stop()


async def test_a_full_worker_hands_the_offer_to_a_worker_with_room(media_worker, scenario, settings):
    settings.MAX_CALLS_PER_WORKER = 1
    async with second_worker(media_worker, scenario, 3, "u", serve_shared=True) as (other, peers, clients):
        for peer, client in zip(peers[:2], clients[:2], strict=True):
            await connect(peer, client)
        # One call on each worker, wherever each offer landed first.
        assert {peers[0].worker_channel, peers[1].worker_channel} == {media_worker.channel, other.channel}
        assert media_worker.live_calls() == other.live_calls() == 1

        await offer_only(peers[2], clients[2])  # both full now
        error = await peers[2].expect("error", timeout=10)
        assert error["data"]["details"]["reason"] == "capacity"
        assert peers[2].session_id not in media_worker.sessions and peers[2].session_id not in other.sessions


async def test_a_new_call_goes_to_the_worker_with_fewer_calls(media_worker, scenario, settings):
    """Which worker takes an offer from the shared channel is a race (Redis serves waiting workers in
    turn), not the load; here media_worker wins every race (the other serves only its own channel).
    A worker holding more calls than another live one passes a fresh offer there: four calls end
    two and two, with no limit set, and an offer passed on once is not passed back."""

    settings.MAX_CALLS_PER_WORKER = 0  # no limit: the spread comes from the load, not from a full worker
    balanced_before = metrics.CALLS_BALANCED_TOTAL._value.get()
    # The other serves its pinned channel only: every offer reaches media_worker first.
    async with second_worker(media_worker, scenario, 4, "b") as (other, peers, clients):
        for peer, client in zip(peers, clients, strict=True):
            await connect(peer, client)
        here, there = media_worker.channel, other.channel
        assert [peer.worker_channel for peer in peers] == [here, there, here, there]
        assert media_worker.live_calls() == other.live_calls() == 2
        assert metrics.CALLS_BALANCED_TOTAL._value.get() == balanced_before + 2


async def offer_message(peer, client, offer_id: int = 1) -> dict:
    """The ``media.offer`` signaling would send for ``client``'s offer, to deliver by hand."""
    from media_pipeline.contract import to_worker

    offer, _ = await client.offer()
    return to_worker("media.offer", session_id=peer.session_id, reply_channel=peer.reply_channel,
                     scenario_id=0, user_id=0, offer_id=offer_id, **offer)


async def duplicates_dropped_since(before: float) -> float:
    """Offers dropped as delivered twice since ``before`` (waits up to 2 s for the first)."""
    for _ in range(100):
        if metrics.OFFERS_DUPLICATED_TOTAL._value.get() > before:
            break
        await asyncio.sleep(0.02)
    return metrics.OFFERS_DUPLICATED_TOTAL._value.get() - before


@pytest.mark.parametrize("again_to", ["another worker", "the same worker"])
async def test_an_offer_delivered_twice_is_answered_once(media_worker, scenario, again_to):
    """channels-redis can hand one message of a shared channel to two readers, or back to the one that
    read it (its in-flight list is shared, django/channels_redis#163). Another worker finds the offer
    claimed; the worker that took it finds its call holds that offer already. Either drops it, so the
    caller gets one answer: a second one would replace the peer the client accepted, which then never
    connects. A real re-offer, with the connection's next offer id, is still answered."""
    dropped_before = metrics.OFFERS_DUPLICATED_TOTAL._value.get()
    async with second_worker(media_worker, scenario, 1, "dup") as (other, (peer,), (client,)):
        message = await offer_message(peer, client)
        await media_worker.layer.send(media_worker.channel, message)
        await peer.expect("answer")
        target = other if again_to == "another worker" else media_worker
        await media_worker.layer.send(target.channel, message)  # the same offer, delivered again
        assert await duplicates_dropped_since(dropped_before) == 1
        await asyncio.sleep(0.2)
        assert (media_worker.live_calls(), other.live_calls()) == (1, 0)
        assert len(peer.of_type("answer")) == 1
        await media_worker.layer.send(media_worker.channel, dict(message, offer_id=2))  # a re-offer
        await peer.expect("answer")
        assert len(peer.of_type("answer")) == 2


def test_the_interim_budget_is_shared_and_refills():
    now = [0.0]
    budget = RateBudget(2.0, burst=2.0, clock=lambda: now[0])
    assert [budget.try_take() for _ in range(3)] == [True, True, False]
    now[0] += 0.5  # one more unit at 2 per second
    assert [budget.try_take(), budget.try_take()] == [True, False]
    assert all(RateBudget(0).try_take() for _ in range(100))  # 0 = no budget


async def test_calls_scored_together_by_the_vad_batcher_each_hear_their_own_trainee(media_worker, scenario):
    """Three live calls speak different sentences at once: their VAD hops share the VAD thread's
    passes (vad_batch), and each call's own Silero state and endpointer still end its own turn."""
    from media_pipeline.engine_pool import get_engines
    from media_pipeline.vad_batch import vad_batcher

    batcher = vad_batcher(get_engines().vad_pool)
    hops_before = batcher.hops
    said = ["How do you handle your invoices today?", "What would it take to get a pilot started?",
            "Hello, I would like to tell you about our new software."]
    keys = ["invoice", "pilot", "software"]
    peers = [await ContractPeer(media_worker.layer, await new_session(scenario, f"b{i}")).start() for i in range(3)]
    clients = [VoiceClient("opus") for _ in range(3)]  # a browser's codec: the words survive it best
    try:
        for peer, client in zip(peers, clients, strict=True):
            await connect(peer, client)
            await peer.send("media.asr_start", language="en", format="opus", sample_rate=client.track.rate,
                            mode="auto")
        for client, text in zip(clients, said, strict=True):
            client.track.play(speak(text, rate=client.track.rate))
            client.track.play(silence(1500, client.track.rate))
        results = await asyncio.gather(*(peer.expect("asr_result", timeout=30) for peer in peers))
        for result, key, others in zip(results, keys, [keys[1:], keys[::2], keys[:2]], strict=True):
            text = result["data"]["text"].lower()
            assert key in text and not any(other in text for other in others), text
        assert batcher.hops > hops_before
    finally:
        for peer in peers:
            await peer.stop()
        for client in clients:
            await client.close()


async def test_every_outbound_track_sends_on_one_shared_20_ms_grid():
    """Frames of all calls fall due on the same 20 ms points, so one loop wake-up serves them all."""
    from media_pipeline.webrtc.outbound import OutboundAudioTrack, grid_after

    assert grid_after(0.031) == pytest.approx(0.04) and grid_after(0.04) == pytest.approx(0.04)
    tracks = [OutboundAudioTrack(8000) for _ in range(3)]
    for track in tracks:
        await track.recv()
        await asyncio.sleep(0.007)  # the calls start at different phases
    for track in tracks:
        await track.recv()
        assert track._start / 0.02 == pytest.approx(round(track._start / 0.02), abs=1e-6)
        track.stop()


def test_interims_wait_while_any_asr_decode_runs_even_with_a_free_thread():
    """Finals first: an interim started beside a final would take half the two cores from it."""
    import dataclasses
    import threading

    from media_pipeline.engine_pool import get_engines
    from media_pipeline.executor import BoundedExecutor

    with BoundedExecutor("asr-idle-test", max_workers=2, max_queue=2) as pool:
        engines = dataclasses.replace(get_engines(), asr_pool=pool)
        assert engines.asr_idle()
        gate, started = threading.Event(), threading.Event()
        job = pool.submit(lambda: (started.set(), gate.wait(30)))
        assert started.wait(30)
        assert pool.running == 1 < pool.max_workers  # a thread is free...
        assert not engines.asr_idle()  # ...and still no interim
        gate.set()
        job.result(timeout=30)
        assert engines.asr_idle()


def test_spare_cpu_counts_the_idle_cores_of_the_recent_past():
    """The interim gate's gauge, on a scripted /proc/stat: busy and idle jiffies over ~1 s."""
    from media_pipeline.spare_cpu import SpareCPU

    clock = [0.0]
    busy = [0.0]
    total = [0.0]

    def reader() -> tuple[float, float, int]:
        return busy[0], total[0], 2

    gauge = SpareCPU(0.75, reader=reader, clock=lambda: clock[0])
    assert gauge.idle_cores() is None and gauge.spare()  # one reading tells nothing yet: no gate
    for _ in range(4):  # 1.5 of 2 cores busy
        clock[0] += 0.3
        busy[0] += 0.3 * 150
        total[0] += 0.3 * 200
    assert gauge.idle_cores() == pytest.approx(0.5) and not gauge.spare()
    for _ in range(8):  # then nearly idle: the busy past leaves the window
        clock[0] += 0.3
        busy[0] += 0.3 * 20
        total[0] += 0.3 * 200
        gauge.spare()
    assert gauge.idle_cores() == pytest.approx(1.8) and gauge.spare()
    assert SpareCPU(0, reader=reader).spare()  # INTERIM_MIN_IDLE_CORES=0: no gate
    assert SpareCPU(0.75, reader=lambda: None).spare()  # no /proc/stat: as before, always spare


def test_spare_cpu_sees_this_machine_busy():
    """The real /proc/stat: with every core spinning, fewer than 0.75 cores are idle."""
    import os
    import subprocess
    import sys
    import time

    from media_pipeline.spare_cpu import PROC_STAT, SpareCPU

    if not PROC_STAT.exists():
        pytest.skip("no /proc/stat on this system: the gate always says spare there")
    cores = len(os.sched_getaffinity(0))
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        gauge = SpareCPU(0.75)
        time.sleep(0.3)
        gauge.idle_cores()
        for _ in range(5):
            time.sleep(0.3)
            idle = gauge.idle_cores()
        assert idle is not None and idle < 0.75 and not gauge.spare()
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
