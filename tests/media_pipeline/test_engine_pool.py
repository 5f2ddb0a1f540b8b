"""The engine pool: one faster-whisper model per process whichever transport asks, decoding every
final with the same short window (the chunk path used to load a second model and pad to 30 s)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from media_pipeline import engine_pool
from media_pipeline.chunked.turns import ChunkTurns, load_call_facts
from media_pipeline.contract import ChunkEvent
from media_pipeline.engines.asr.faster_whisper import FasterWhisperEngine
from roleplay import services
from roleplay.models import RealtimeSession
from tests.audio_fixtures import speak_pcm16
from tests.media_pipeline.test_media_worker import PHRASE, speak_turn, words
from tests.media_pipeline.voice_client import VoiceClient, connect

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def whisper_models(monkeypatch) -> list[dict[str, Any]]:
    """A process that has loaded no model yet; the list grows by one per faster-whisper model built."""
    import faster_whisper

    from media_pipeline.engines.asr import faster_whisper as engine_module

    built: list[dict[str, Any]] = []

    class CountedWhisperModel(faster_whisper.WhisperModel):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(faster_whisper, "WhisperModel", CountedWhisperModel)
    monkeypatch.setattr(engine_module, "_models", {})
    monkeypatch.setattr(engine_pool, "_engines", None)
    monkeypatch.setattr(engine_pool, "_warmed", False)
    monkeypatch.setattr(engine_pool, "_warm_up_thread", None)
    # After-call processing is another area's job and would outlive this test's database.
    monkeypatch.setattr(services, "_dispatch_post_session", lambda session_id: None)
    return built


@pytest.fixture
def windows_decoded(monkeypatch) -> list[float]:
    """The mel window (seconds) of every short decode faster-whisper makes."""
    seen: list[float] = []
    real = FasterWhisperEngine._transcribe_window

    def spy(self: FasterWhisperEngine, audio: np.ndarray, lang: str, duration: float) -> Any:
        seen.append(self.window_s)
        return real(self, audio, lang, duration)

    monkeypatch.setattr(FasterWhisperEngine, "_transcribe_window", spy)
    return seen


async def _closed(reason: str) -> None:
    return None


async def chunk_turn(session: RealtimeSession, text: str) -> dict[str, Any]:
    """One spoken turn on the chunk path; returns its final transcript event (``ChunkEvent.HEARD``)."""
    events: list[tuple[str, dict[str, Any]]] = []

    async def emit(name: str, data: dict[str, Any]) -> None:
        events.append((name, data))

    turns = ChunkTurns(await load_call_facts(session.pk), {"format": "pcm16", "sampleRate": 16000})
    turns.bind(emit, _closed)
    try:
        pcm = speak_pcm16(text).astype("<i2").tobytes() + np.zeros(16000, "<i2").tobytes()
        assert await turns.audio(pcm)
        await turns.idle()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            heard = [data for name, data in events if name == ChunkEvent.HEARD]
            if heard:
                return heard[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no transcription; saw {[name for name, _ in events]}")
    finally:
        await turns.close("user_requested")


async def test_one_asr_model_serves_a_chunked_session_and_a_webrtc_call(
    whisper_models, media_worker, contract_peer, call_session, chunk_session, settings
):
    heard = await chunk_turn(chunk_session, PHRASE)
    assert len(words(heard["text"]) & words(PHRASE)) >= 6, heard["text"]

    client = VoiceClient("pcma")
    try:
        await connect(contract_peer, client)
        await contract_peer.send("media.asr_start", language="en", format="pcma", sample_rate=16000, mode="auto")
        result = await speak_turn(client, contract_peer, PHRASE, client.track.rate)
        assert len(words(result["data"]["text"]) & words(PHRASE)) >= 6, result["data"]["text"]
    finally:
        await client.close()
    assert len(whisper_models) == 1, "both transports decode with the process's one model"
    assert whisper_models[0]["num_workers"] == settings.ENGINE_WORKERS


async def test_the_chunk_path_decodes_with_the_same_window_as_webrtc(whisper_models, windows_decoded, chunk_session,
                                                                     settings):
    await chunk_turn(chunk_session, PHRASE)
    assert windows_decoded, "the final took the short-window path"
    assert set(windows_decoded) == {settings.ASR_WINDOW_SECONDS}
    assert engine_pool.get_engines().asr.window_s == settings.ASR_WINDOW_SECONDS


def test_the_after_call_model_is_never_the_live_one(whisper_models, settings):
    """Same file, same threads, same replicas: the re-transcription still gets its own model, so a
    whole recording decoding in the embedded server never holds the replicas live finals need."""
    from media_pipeline import retranscribe
    from roleplay.transcription import RetranscribeOptions

    settings.ASR_CPU_THREADS = settings.ARCHIVE_ASR_CPU_THREADS = 1
    live = FasterWhisperEngine(cpu_threads=1, num_workers=1).model
    archive = retranscribe._engine(RetranscribeOptions(cpu_threads=1)).model
    assert archive is not live
    assert len(whisper_models) == 2
    assert FasterWhisperEngine(cpu_threads=1, num_workers=1).model is live, "live engines still share theirs"
