"""The media worker driven through the channel-layer contract, with a real aiortc client peer."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from asgiref.sync import sync_to_async

from media_pipeline import heartbeat
from media_pipeline.webrtc.peer import offered_audio_codecs, offered_opus_dtx, with_candidates
from roleplay.analytics import talk_ratio
from roleplay.analytics.metrics import Spoken
from roleplay.models import RealtimeSession, Utterance
from signaling import gateway
from tests.audio_fixtures import silence, speak
from tests.media_pipeline.voice_client import VoiceClient, connect, with_opus_dtx

pytestmark = [pytest.mark.django_db(transaction=True)]

PHRASE = "Hello, I would like to tell you about our new software."


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@sync_to_async
def utterances(session_id: str) -> list[Utterance]:
    return list(Utterance.objects.filter(session_id=session_id).order_by("seq"))


async def wait_utterances(session_id: str, count: int, timeout: float = 5.0) -> list[Utterance]:
    deadline = time.monotonic() + timeout
    while True:
        found = await utterances(session_id)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def played_facts(session_id: str, count: int, timeout: float = 5.0) -> list[Utterance]:
    """The utterances once the last one's playback facts are written (it is stored before it plays)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await utterances(session_id)
        if (len(found) >= count and found[-1].end_ms > found[-1].start_ms) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


@sync_to_async
def reload(session_id: str) -> RealtimeSession:
    return RealtimeSession.objects.get(pk=session_id)


async def speak_turn(client: VoiceClient, peer, text: str, rate: int) -> dict:
    client.track.play(speak(text, rate=rate))
    client.track.play(silence(1200, rate))
    return await peer.expect("asr_result", timeout=20)


# --- negotiation ---------------------------------------------------------------------------------

def test_it_reads_the_clients_codec_order_from_the_offer():
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 0 8 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n"
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 opus/48000/2\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AA"] * 32) + "\r\na=setup:actpass\r\n"
    )
    assert offered_audio_codecs(sdp) == [["pcma", "opus"]]
    # Opus DTX only for a client that asks for it (usedtx=1 on its Opus, as the page's offer does).
    assert not offered_opus_dtx(sdp)
    assert offered_opus_dtx(with_opus_dtx(sdp))
    opus = "a=rtpmap:96 opus/48000/2\r\n"
    assert not offered_opus_dtx(sdp.replace(opus, opus + "a=fmtp:96 usedtx=0\r\n"))
    assert not offered_opus_dtx(with_opus_dtx(sdp).replace("opus/48000/2", "telephone-event/48000"))
    merged = with_candidates(sdp, [{"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdp_mid": "0"}])
    assert "a=candidate:1 1 udp 1 127.0.0.1 5000 typ host" in merged

    # The protocol's own form: bare candidate lines, for the first m-line.
    merged = with_candidates(sdp, ["candidate:2 1 UDP 2130706431 192.168.1.100 54321 typ host"])
    assert "a=candidate:2 1 UDP 2130706431 192.168.1.100 54321 typ host" in merged


async def test_it_pins_answers_with_candidates_and_connects(media_worker, contract_peer):
    client = VoiceClient("opus", codecs=["opus", "pcma"])
    try:
        started = time.monotonic()
        connected = await connect(contract_peer, client)
        answer = contract_peer.of_type("answer")[0]["data"]
        assert contract_peer.worker_channel == media_worker.channel
        assert "a=candidate:" in answer["sdp"] and answer["candidates"]
        # answer.candidates are candidate lines, as the protocol defines them (a str_list).
        assert all(isinstance(c, str) and c.startswith("candidate:") for c in answer["candidates"])
        assert "stun" not in answer["sdp"].lower() or "typ srflx" not in answer["sdp"]
        assert connected == {"connection_state": "connected", "audio_codec": "opus", "sample_rate": 48000}
        assert time.monotonic() - started < 5
        beat = heartbeat.live_workers()[media_worker.worker_id]
        assert beat["channel"] == media_worker.channel
    finally:
        await client.close()


async def test_it_refuses_an_offer_without_a_supported_codec(media_worker, contract_peer):
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    await contract_peer.send("media.offer", sdp=sdp, candidates=[], scenario_id=0, user_id=0)
    error = await contract_peer.expect("error")
    assert error["data"]["code"] == "ERR_WEBRTC_FAILED"
    assert "codec" in error["data"]["message"]


async def test_it_connects_with_trickled_ice(media_worker, contract_peer):
    client = VoiceClient("pcma")
    try:
        connected = await connect(contract_peer, client, trickle=True)
        assert connected["audio_codec"] == "pcma"
    finally:
        await client.close()


# --- the voice turn ------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ["pcma", "opus"])
async def test_it_hears_a_turn_and_answers_by_voice(media_worker, contract_peer, call_session, codec):
    client = VoiceClient(codec)
    try:
        await connect(contract_peer, client)
        await contract_peer.send("media.asr_start", language="en", format=codec, sample_rate=16000, mode="auto")
        rate = client.track.rate
        result = await speak_turn(client, contract_peer, PHRASE, rate)
        assert contract_peer.of_type("asr_interim"), "an interim result while speaking"
        data = result["data"]
        assert len(words(data["text"]) & words(PHRASE)) >= 6, data["text"]
        assert data["is_final"] is True and 0 <= data["start_time"] < data["end_time"]
        response = await contract_peer.expect("text_response", timeout=10)
        assert response["data"]["message_id"] == data["result_id"] and response["data"]["text"]
        start = await contract_peer.expect("tts_start")
        complete = await contract_peer.expect("tts_complete", timeout=30, request_id=start["data"]["request_id"])
        assert complete["data"]["interrupted"] is False and complete["data"]["duration_ms"] > 300
        assert client.heard_rms_since(result["at"]) > 0.02, "the reply is audible on the client's track"
        turns = await wait_utterances(call_session.pk, 2)
        assert [u.speaker for u in turns] == ["trainee", "buyer"]
        assert turns[0].turn_latency_ms and turns[0].endpointing_ms is not None
        assert turns[1].text == response["data"]["text"]
        trainee, buyer = await played_facts(call_session.pk, 2)
        # The reply as heard: a voice utterance from its first frame out to its last frame played.
        assert (buyer.source, buyer.interrupted) == ("voice", False)
        assert trainee.end_ms <= buyer.start_ms < trainee.end_ms + 3000
        assert abs((buyer.end_ms - buyer.start_ms) - complete["data"]["duration_ms"]) < 150
        ratio = talk_ratio([Spoken(u.speaker, u.text, u.start_ms, u.end_ms) for u in (trainee, buyer)])
        assert 0.15 < ratio < 0.85, ratio  # both sides' speaking time counts
        await contract_peer.send("media.hangup", reason="user_requested")
        for _ in range(100):
            session = await reload(call_session.pk)
            if session.recording:
                break
            await asyncio.sleep(0.05)
        assert session.recording.name.endswith("recording-raw.wav")
        assert session.audio_metadata["recording"]["channels"] == 2
    finally:
        await client.close()


async def test_it_stops_speaking_when_the_trainee_barges_in(media_worker, contract_peer, call_session):
    client = VoiceClient("pcma")
    try:
        await connect(contract_peer, client)
        await contract_peer.send("media.asr_start", language="en", format="pcma", sample_rate=16000, mode="auto")
        long_text = " ".join(["This is a very long answer that goes on and on about our pricing."] * 6)
        await contract_peer.send("media.tts_request", request_id="req_long", text=long_text, voice="", speed=1.0,
                                 pitch=1.0)
        await contract_peer.expect("tts_start", request_id="req_long")
        await asyncio.sleep(1.0)
        client.track.play(speak("Sorry to interrupt, but what does it cost?", rate=8000))
        client.track.play(silence(1200, 8000))
        complete = await contract_peer.expect("tts_complete", timeout=10, request_id="req_long")
        assert complete["data"]["interrupted"] is True
        assert 500 < complete["data"]["duration_ms"] < 5000
        call = media_worker.sessions[call_session.pk]
        assert call.barge_in_stop_ms < 100
        await contract_peer.expect("asr_result", timeout=20)
    finally:
        await client.close()


async def test_it_persists_only_the_played_part_of_an_interrupted_reply(media_worker, contract_peer, call_session,
                                                                        settings):
    settings.ENDPOINT_SILENCE_MS = 400
    client = VoiceClient("pcma")
    try:
        await connect(contract_peer, client)
        await contract_peer.send("media.asr_start", language="en", format="pcma", sample_rate=16000, mode="auto")
        await speak_turn(client, contract_peer, "Hi, this is Sam from Acme. Do you have a minute?", 8000)
        await contract_peer.expect("tts_start", timeout=10)
        response = await contract_peer.expect("text_response", timeout=10)
        await asyncio.sleep(0.6)  # past the grace window: an interruption, not the same thought going on
        client.track.play(speak("Wait, one more thing about the price of the product.", rate=8000))
        client.track.play(silence(1200, 8000))
        complete = await contract_peer.expect("tts_complete", timeout=15)
        buyer = [u for u in await played_facts(call_session.pk, 2) if u.speaker == "buyer"]
        if complete["data"]["interrupted"]:
            assert buyer[0].interrupted is True
            assert len(buyer[0].text) < len(response["data"]["text"])
        else:  # the reply was shorter than the trainee's reaction: nothing to cut
            assert buyer[0].text == response["data"]["text"]
    finally:
        await client.close()


async def test_it_closes_a_turn_when_the_track_stops_mid_utterance(media_worker, contract_peer, call_session):
    client = VoiceClient("pcma")
    try:
        await connect(contract_peer, client)
        await contract_peer.send("media.asr_start", language="en", format="pcma", sample_rate=16000, mode="auto")
        client.track.play(speak(PHRASE, rate=8000))
        await client.track.done.wait()
        client.pc.getTransceivers()[0].sender.replaceTrack(None)  # the microphone goes away
        result = await contract_peer.expect("asr_result", timeout=10)
        assert len(words(result["data"]["text"]) & words(PHRASE)) >= 5
        assert (await utterances(call_session.pk))[0].speaker == "trainee"
    finally:
        await client.close()


async def test_a_track_read_without_inline_decoding_is_heard_and_a_stopped_one_closes_its_turn(
        media_worker, contract_peer, call_session, monkeypatch):
    """The path taken when aiortc's receiver is not the shape inline_decode knows: the track is read."""
    from media_pipeline.webrtc import inbound

    monkeypatch.setattr(inbound, "install", lambda receiver, decoder: False)
    client = VoiceClient("opus")
    try:
        await connect(contract_peer, client)
        await contract_peer.send("media.asr_start", language="en", format="opus", sample_rate=16000, mode="auto")
        client.track.play(speak(PHRASE, rate=client.track.rate))
        await client.track.done.wait()
        client.pc.getTransceivers()[0].sender.replaceTrack(None)  # the microphone goes away mid-utterance
        result = await contract_peer.expect("asr_result", timeout=10)
        assert len(words(result["data"]["text"]) & words(PHRASE)) >= 5, result["data"]["text"]
        assert (await utterances(call_session.pk))[0].speaker == "trainee"
    finally:
        await client.close()


async def test_it_recovers_from_garbage_payloads(media_worker, contract_peer, call_session):
    client = VoiceClient("opus")
    sender = client.pc.getTransceivers()[0].sender
    try:
        await connect(contract_peer, client)
        await contract_peer.send("media.asr_start", language="en", format="opus", sample_rate=16000, mode="auto")
        encoder = None
        for _ in range(100):
            encoder = getattr(sender, "_RTCRtpSender__encoder", None)
            if encoder is not None:
                break
            await asyncio.sleep(0.02)
        assert encoder is not None
        real_encode = encoder.encode
        rng = __import__("random").Random(7)

        def garbage(frame, force_keyframe=False):
            payloads, timestamp = real_encode(frame, force_keyframe)
            return [bytes(rng.getrandbits(8) for _ in range(len(p))) for p in payloads], timestamp

        encoder.encode = garbage
        await asyncio.sleep(1.5)
        encoder.encode = real_encode
        result = await speak_turn(client, contract_peer, PHRASE, 48000)
        # The garbage may decode to a burst of noise loud enough to be a turn; Whisper writes "." for
        # it, which is no words: an empty final, never answered. Then the phrase is heard whole.
        while not result["data"]["text"]:
            result = await contract_peer.expect("asr_result", timeout=20)
        assert len(words(result["data"]["text"]) & words(PHRASE)) >= 5
        # Turns are answered in order: once the phrase has been (its reply stored), a turn made of
        # the noise would be there before it. Only the phrase is a trainee turn.
        stored = await wait_utterances(call_session.pk, 2, timeout=20)
        assert [u.speaker for u in stored][:2] == ["trainee", "buyer"], [(u.speaker, u.text) for u in stored]
        assert len(words(stored[0].text) & words(PHRASE)) >= 5
    finally:
        await client.close()


async def test_it_reports_ice_that_never_connects(media_worker, contract_peer, monkeypatch):
    from media_pipeline.webrtc import call as pipeline

    monkeypatch.setattr(pipeline, "ICE_CONNECT_TIMEOUT_SECONDS", 1.0)
    client = VoiceClient("pcma")
    try:
        offer, _ = await client.offer(trickle=True)  # no candidates, and the answer is never applied
        offer["sdp"] = offer["sdp"].replace("a=ice-ufrag:", "a=ice-ufrag:x")
        await contract_peer.send("media.offer", scenario_id=0, user_id=0, **offer)
        await contract_peer.expect("answer")
        error = await contract_peer.expect("error", timeout=5)
        assert error["data"]["code"] == "ERR_WEBRTC_FAILED"
        assert error["data"]["details"]["error_type"] in ("ice_timeout", "peer_failed")
    finally:
        await client.close()


async def test_a_typed_turn_during_a_voice_reply_keeps_both_replies_in_order(media_worker, contract_peer,
                                                                           call_session):
    client = VoiceClient("pcma")
    try:
        await connect(contract_peer, client)
        await contract_peer.send("media.asr_start", language="en", format="pcma", sample_rate=16000, mode="auto")
        await speak_turn(client, contract_peer, PHRASE, 8000)
        voiced = await contract_peer.expect("text_response", timeout=10)
        # What signaling does for a text_message while the voice reply plays: persist, answer, have it spoken.
        typed = await gateway.text_turn(session_id=call_session.pk, text="Could we book a demo next week?")
        await contract_peer.send("media.text_reply", text=typed.text, message_id="m1",
                                 response_id=typed.response_id, utterance_id=typed.utterance_id)
        first = await contract_peer.expect("tts_complete", timeout=30)
        assert first["data"]["request_id"] == voiced["data"]["response_id"]
        second = await contract_peer.expect("tts_complete", timeout=30, request_id=typed.response_id)
        rows = await played_facts(call_session.pk, 4)
        assert [(u.speaker, u.source) for u in rows] == [
            ("trainee", "voice"), ("buyer", "voice"), ("trainee", "text"), ("buyer", "voice")]
        assert rows[1].text == voiced["data"]["text"] and rows[3].text == typed.text
        assert abs((rows[3].end_ms - rows[3].start_ms) - second["data"]["duration_ms"]) < 150
        assert rows[3].start_ms >= rows[1].end_ms  # spoken after the voice reply finished
    finally:
        await client.close()


async def test_a_reply_shown_before_a_hangup_is_persisted_once(media_worker, contract_peer, call_session):
    client = VoiceClient("pcma")
    try:
        await connect(contract_peer, client)
        await contract_peer.send("media.asr_start", language="en", format="pcma", sample_rate=16000, mode="auto")
        await speak_turn(client, contract_peer, PHRASE, 8000)
        shown = await contract_peer.expect("text_response", timeout=10)
        await contract_peer.expect("tts_start", timeout=10)
        await asyncio.sleep(0.3)  # playing, far from finished
        await contract_peer.send("media.hangup", reason="user_requested")
        for _ in range(100):
            if call_session.pk not in media_worker.sessions:
                break
            await asyncio.sleep(0.05)
        buyer = [u for u in await utterances(call_session.pk) if u.speaker == "buyer"]
        assert len(buyer) == 1, [u.text for u in buyer]
        assert buyer[0].interrupted is True and buyer[0].source == "voice"
        assert buyer[0].text and shown["data"]["text"].startswith(buyer[0].text.split()[0])
        assert buyer[0].end_ms > buyer[0].start_ms
    finally:
        await client.close()
