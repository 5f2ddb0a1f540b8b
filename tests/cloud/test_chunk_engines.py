"""The audio-chunk path with a zh-CN scenario on DashScope engines (local fakes), and what a
trainee gets when those engines die mid-session: protocol errors with the code, a session that
goes on, replies still delivered (as text, and as offline speech when only TTS died)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from asgiref.sync import sync_to_async

from media_pipeline.chunked.turns import ChunkTurns, load_call_facts
from roleplay import services
from roleplay.models import RealtimeSession
from signaling.socketio_events import to_wire
from tests.audio_fixtures import speak_pcm16
from tests.cloud.conftest import BUYER_DELTAS, HEARD
from tests.cloud.fakes import KEY
from tests.factories import make_scenario

pytestmark = [pytest.mark.django_db(transaction=True)]



@pytest.fixture
def fakes(zh_call_fakes):
    return zh_call_fakes


@pytest.fixture
def zh_session(transactional_db, alice) -> RealtimeSession:
    scenario = make_scenario(slug="zh-chunk", language="zh-CN", asr_engine="dashscope_paraformer",
                             tts_engine="dashscope_cosyvoice", brain_engine="qwen")
    return services.session_create(trainee=alice, scenario=scenario, transport=RealtimeSession.Transport.CHUNK)


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self._taken: set[int] = set()

    async def emit(self, name: str, data: dict[str, Any]) -> None:
        self.items.append((name, data))

    async def expect(self, name: str, timeout: float = 20.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, (kind, data) in enumerate(self.items):
                if i not in self._taken and kind == name and all(data.get(k) == v for k, v in match.items()):
                    self._taken.add(i)
                    return data
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {name} {match}; saw {[k for k, _ in self.items]}")


async def _close(reason: str) -> None:
    return None


async def say(turns: ChunkTurns, text: str) -> None:
    pcm = speak_pcm16(text, language="zh-CN").astype("<i2").tobytes() + np.zeros(16000, "<i2").tobytes()
    assert await turns.audio(pcm)
    await turns.idle()


async def test_it_answers_a_zh_chunk_turn_and_reports_dead_engines_with_their_codes(fakes, zh_session, monkeypatch):
    # After-call processing is another area's job and would outlive this test's database.
    monkeypatch.setattr(services, "_dispatch_post_session", lambda session_id: None)
    info = await load_call_facts(zh_session.pk)
    turns = ChunkTurns(info, {"format": "pcm16", "sampleRate": 16000})
    events = Events()
    # The Socket.IO words the consumer would send (signaling.socketio_events maps the neutral events).
    turns.bind(lambda kind, data: events.emit(*to_wire(kind, data)), _close)
    try:
        await say(turns, "您好，我想介绍一下我们的新软件。")
        assert (await events.expect("transcription"))["text"] == HEARD
        assert (await events.expect("ai-response"))["text"] == "".join(BUYER_DELTAS)
        avatar = await events.expect("avatar-response")
        assert avatar["audioUrl"] and avatar["duration"] > 0.5
        assert fakes["tts"].tasks, "CosyVoice spoke the reply"

        fakes["asr"].stop()
        await say(turns, "我们的价格很有竞争力。")
        error = await events.expect("error", code="ERR_ASR_FAILED")
        assert error["details"]["engine"] == "dashscope_paraformer" and KEY not in str(error)

        fakes["tts"].stop()
        assert await turns.text("第一年可以打八折。")
        assert (await events.expect("ai-response"))["text"] == "".join(BUYER_DELTAS)
        error = await events.expect("error", code="ERR_TTS_FAILED")
        assert error["details"]["fallback"] == "espeak"
        avatar = await events.expect("avatar-response")
        assert avatar["audioUrl"] and avatar["duration"] > 0.5, "eSpeak (cmn) spoke it instead"
    finally:
        await turns.close("user_requested")
    ended = await events.expect("session-ended")
    assert ended["totalTurns"] >= 2
    session = await sync_to_async(RealtimeSession.objects.get)(pk=zh_session.pk)
    assert session.recording.name.endswith("recording-raw.wav"), "both sides were recorded"
