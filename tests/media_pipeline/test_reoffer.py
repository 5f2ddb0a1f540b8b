"""A call that is offered again (the page reconnected through another server, or after a peer
failure) goes on listening: the worker keeps the call, its listening stage and its turns, and hears
the trainee on the new peer connection as it heard them on the old one."""

from __future__ import annotations

import re

import pytest

from tests.audio_fixtures import silence, speak
from tests.media_pipeline.voice_client import VoiceClient

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

RATE = 8000


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


async def offer(contract_peer, client: VoiceClient) -> None:
    from tests.media_pipeline.voice_client import connect

    await connect(contract_peer, client)
    await contract_peer.send("media.asr_start", language="en", format="pcma", sample_rate=16000, mode="auto")


async def spoken_turn(contract_peer, client: VoiceClient, text: str) -> dict:
    """Say ``text``; returns its final, once the buyer's reply to it has been played to the end."""
    client.track.play(speak(text, rate=RATE))
    client.track.play(silence(1500, RATE))
    final = await contract_peer.expect("asr_result", timeout=30)
    reply = await contract_peer.expect("text_response", timeout=30)
    await contract_peer.expect("tts_complete", timeout=30, request_id=reply["data"]["response_id"])
    return final


async def test_a_call_offered_again_mid_reply_hears_the_trainee_on_the_new_peer(media_worker, contract_peer,
                                                                               call_session):
    first = VoiceClient("pcma")
    second = VoiceClient("pcma")
    try:
        await offer(contract_peer, first)
        first.track.play(speak("How much time does your team spend on invoices?", rate=RATE))
        first.track.play(silence(1500, RATE))
        await contract_peer.expect("asr_result", timeout=30)
        await contract_peer.expect("tts_start", timeout=30)
        await first.close()  # the browser's peer is gone mid-reply without a word (a server was killed)

        await offer(contract_peer, second)
        heard = await spoken_turn(contract_peer, second, "How much time does your team spend on invoices?")
        assert {"much", "time"} <= words(heard["data"]["text"]), heard["data"]
    finally:
        await first.close()
        await second.close()
