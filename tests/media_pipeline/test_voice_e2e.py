"""Voice end to end: a real aiortc client through /ws/voice/ on a live daphne (embedded worker),
and the scaled set-up (daphne + ``runworker media`` processes on Redis) with a worker killed mid-call."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from tests.audio_fixtures import silence, speak
from tests.media_pipeline.live import LiveStack, WsPeer, redis_reachable, ws_connect_media
from tests.media_pipeline.voice_client import VoiceClient

pytestmark = pytest.mark.slow

PHRASE = "Hello, I would like to tell you about our new software."


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    stack = LiveStack(tmp_path_factory.mktemp("voice-embedded")).start()
    yield stack
    stack.stop()


async def voice_turn(peer: WsPeer, client: VoiceClient, codec: str) -> dict:
    await peer.send("asr_start", {"language": "en-US", "format": codec, "sample_rate": client.track.rate,
                                  "mode": "auto"})
    client.track.play(speak(PHRASE, rate=client.track.rate))
    client.track.play(silence(1200, client.track.rate))
    result = await peer.expect("asr_result", timeout=30)
    assert len(words(result["data"]["text"]) & words(PHRASE)) >= 6, result["data"]["text"]
    assert peer.of_type("asr_interim")
    response = await peer.expect("text_response", timeout=15)
    assert response["data"]["text"]
    complete = await peer.expect("tts_complete", timeout=30)
    assert complete["data"]["interrupted"] is False and complete["data"]["duration_ms"] > 300
    assert client.heard_rms_since(result["at"]) > 0.02
    return result


@pytest.mark.parametrize("codec", ["pcma", "opus"])
async def test_it_talks_over_webrtc_through_the_live_server(embedded, codec):
    peer = await WsPeer(embedded, embedded.scenario_id()).start()
    client = VoiceClient(codec)
    try:
        connected = await ws_connect_media(peer, client)
        assert connected["audio_codec"] == codec
        await voice_turn(peer, client, codec)
    finally:
        await peer.close()
        await client.close()
    # The worker stores the recording after the session ended; after-call processing must end up
    # with it archived (and the session pointing at a file that exists), whichever finished first.
    archived = embedded.tmp / "media" / "sessions" / peer.session_id / "archive" / "recording.webm"
    detail: dict = {}
    for _ in range(300):
        detail = await asyncio.to_thread(embedded.api, f"/api/sessions/{peer.session_id}/")
        if detail["processing"] == "done" and archived.exists() and detail["analytics"]:
            if detail["analytics"]["retranscript"].get("status") == "done":
                break
        await asyncio.sleep(0.2)
    assert detail["processing"] == "done" and detail["recording"], detail["processing"]
    assert archived.stat().st_size > 2000
    assert detail["analytics"]["retranscript"]["status"] == "done"  # the late recording was transcribed again
    assert not (archived.parent.parent / "recording-raw.wav").exists()
    buyer = [u for u in detail["utterances"] if u["speaker"] == "buyer" and u["seq"] > 1]
    assert buyer and buyer[0]["source"] == "voice" and buyer[0]["end_ms"] - buyer[0]["start_ms"] > 300
    assert 0.1 < detail["analytics"]["metrics"]["talk_ratio"] < 0.9


async def test_a_client_that_asks_for_opus_dtx_gets_few_packets_while_the_buyer_listens_and_hears_every_reply(embedded):
    """The practice page's offer asks for Opus DTX (``usedtx=1``): while the buyer is silent the
    client then receives a packet every 400 ms instead of every 20 ms, and the turn still works."""
    peer = await WsPeer(embedded, embedded.scenario_id()).start()
    client = VoiceClient("opus", dtx=True)
    try:
        connected = await ws_connect_media(peer, client)
        assert connected["audio_codec"] == "opus"
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 1.0:  # past any greeting: a second with nothing audible
            await asyncio.sleep(0.1)
            if client.sound_since(time.monotonic() - 0.15) is not None:
                quiet_since = time.monotonic()
        window_start = time.monotonic()
        await asyncio.sleep(2.0)
        frames = sum(1 for at, _ in client.heard if at > window_start)
        assert 2 <= frames <= 10, frames  # ~5 DTX packets; a packet every 20 ms would be ~100
        await voice_turn(peer, client, "opus")
    finally:
        await peer.close()
        await client.close()


async def test_it_connects_with_trickled_candidates_through_the_live_server(embedded):
    peer = await WsPeer(embedded, embedded.scenario_id()).start()
    client = VoiceClient("pcma")
    try:
        connected = await ws_connect_media(peer, client, trickle=True)
        assert connected["connection_state"] == "connected"
    finally:
        await peer.close()
        await client.close()


async def test_it_barges_in_through_the_live_server(embedded):
    peer = await WsPeer(embedded, embedded.scenario_id()).start()
    client = VoiceClient("pcma")
    try:
        await ws_connect_media(peer, client)
        await peer.send("asr_start", {"language": "en-US", "format": "pcma", "sample_rate": 8000, "mode": "auto"})
        text = " ".join(["Let me explain our whole pricing model in great detail now."] * 5)
        await peer.send("tts_request", {"request_id": "req_1", "text": text, "voice": "", "speed": 1.0, "pitch": 1.0})
        await peer.expect("tts_start", timeout=10)
        await asyncio.sleep(1.0)
        client.track.play(speak("Sorry, can I stop you there for a second?", rate=8000))
        client.track.play(silence(1000, 8000))
        complete = await peer.expect("tts_complete", timeout=15)
        assert complete["data"]["interrupted"] is True
        stop_heard = max((at for at, level in client.heard if level > 0.01), default=0.0)
        started = client.track.last_voiced_at or time.monotonic()
        assert stop_heard - started < 10
    finally:
        await peer.close()
        await client.close()


# --- scaled ----------------------------------------------------------------------------------------

@pytest.mark.scaled
async def test_it_survives_a_killed_media_worker_on_redis(tmp_path):
    if not redis_reachable():
        pytest.skip("Redis at 127.0.0.1:6379 is not reachable")
    stack = LiveStack(tmp_path, scaled=True).start()
    try:
        stack.start_worker("worker-a")
        await asyncio.to_thread(stack.wait_for_media_workers, 1)
        peer = await WsPeer(stack, stack.scenario_id()).start()
        client = VoiceClient("opus")
        await ws_connect_media(peer, client)
        await voice_turn(peer, client, "opus")
        stack.start_worker("worker-b")
        await asyncio.to_thread(stack.wait_for_media_workers, 2)
        stack.kill("worker-a")
        error = await peer.expect("error", timeout=40, code="ERR_WEBRTC_FAILED")
        assert error["data"]["details"]["error_type"] == "media_worker_lost"
        await client.close()
        client = VoiceClient("opus")
        await ws_connect_media(peer, client)
        await voice_turn(peer, client, "opus")
        # The opening line, then one trainee turn and one buyer reply on each worker: nothing lost,
        # nothing doubled. A reply is persisted once it has played, so give the last one a moment.
        expected = ["buyer", "trainee", "buyer", "trainee", "buyer"]
        for _ in range(40):
            speakers = [u["speaker"] for u in stack.api(f"/api/sessions/{peer.session_id}/")["utterances"]]
            if speakers == expected:
                break
            await asyncio.sleep(0.25)
        assert speakers == expected
        await peer.close()
        await client.close()
    finally:
        stack.stop()
