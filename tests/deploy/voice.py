"""One voice turn both ways over a live call, for the deployment tests."""

from __future__ import annotations

import asyncio
import contextlib
import time

from tests.audio_fixtures import silence, speak
from tests.media_pipeline.live import WsPeer
from tests.media_pipeline.test_voice_e2e import PHRASE, words
from tests.media_pipeline.voice_client import VoiceClient


async def talk(peer: WsPeer, client: VoiceClient) -> None:
    """Our eSpeak phrase comes back as a transcript, then the buyer's reply is heard and its text arrives.

    Interim transcripts are not required (a loaded worker may skip them), and the phrase may come
    back as two turns; what matters here is audio in both directions through whatever path the
    call took (nginx, a relay, another worker)."""
    rate = client.track.rate
    began = time.monotonic()
    await peer.send("asr_start", {"language": "en-US", "format": client.codec, "sample_rate": rate, "mode": "auto"})
    client.track.play(speak(PHRASE, rate=rate))
    client.track.play(silence(1200, rate))
    texts: list[str] = []
    deadline = time.monotonic() + 40
    # Most of the phrase's eleven words, in one result or two (a loaded machine may split the turn or
    # lose the first syllables while a re-offered call's audio path settles).
    while len(words(" ".join(texts)) & words(PHRASE)) < 5:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no transcript of our phrase; heard {texts}"
        with contextlib.suppress(TimeoutError):
            texts.append((await peer.expect("asr_result", timeout=remaining))["data"]["text"])
    # The buyer only speaks in reply to a turn (its opening line is text only), so buyer audio heard
    # since we began is the reply. Its text and its first frames travel different paths (the channel
    # layer and the WebSocket, RTP), and the transcript is sent from its own task: no order between them.
    deadline = time.monotonic() + 40
    while client.heard_rms_since(began) <= 0.02 or not any(e["at"] >= began for e in peer.of_type("text_response")):
        assert time.monotonic() < deadline, "no buyer reply (text and audio) after the transcript"
        await asyncio.sleep(0.2)
