"""A Chinese call end to end with the DashScope engines, against local fakes of DashScope.

Through the real media worker (in-memory channel layer) with a real aiortc client: Chinese
eSpeak speech in, Paraformer (fake) hears it, Qwen (the compatible-mode fake) answers in
Chinese, CosyVoice (fake; its "synthesis" is eSpeak cmn) speaks the reply back on the client's
inbound track. Then the ASR server is killed mid-call: ``ERR_ASR_FAILED`` goes out (tiny.en
cannot take a zh-CN turn over), the call goes on, a typed turn is answered and spoken, and
everything said is persisted and recorded.

The fake Paraformer is deterministic (it returns its configured sentence once audio arrives):
it stands for a paid cloud service speaking its wire format, not for recognition quality.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from roleplay import services
from roleplay.models import RealtimeSession, Utterance
from signaling import gateway
from tests.audio_fixtures import silence, speak
from tests.cloud.conftest import HEARD
from tests.cloud.fakes import KEY
from tests.factories import make_scenario
from tests.media_pipeline.voice_client import ContractPeer, VoiceClient, connect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SAID = "您好，我想介绍一下我们的新软件。"
BUYER_DELTAS = ["嗯，", "我们的预算", "比较紧张。", "这个软件", "多少钱？"]
BUYER = "".join(BUYER_DELTAS)
TYPED = "第一年可以打八折。"


@pytest.fixture
def buyer_deltas() -> list[str]:
    return list(BUYER_DELTAS)


@pytest.fixture
def fakes(zh_call_fakes):
    return zh_call_fakes


@pytest.fixture
def zh_session(transactional_db, alice) -> RealtimeSession:
    scenario = make_scenario(
        slug="zh-cfo", title="预算紧张的财务总监", language="zh-CN", voice="",
        asr_engine="dashscope_paraformer", tts_engine="dashscope_cosyvoice", brain_engine="qwen",
    )
    return services.session_create(trainee=alice, scenario=scenario, transport=RealtimeSession.Transport.WEBRTC)




@sync_to_async
def utterances(session_id: str) -> list[Utterance]:
    return list(Utterance.objects.filter(session_id=session_id).order_by("seq"))


@sync_to_async
def reload(session_id: str) -> RealtimeSession:
    return RealtimeSession.objects.get(pk=session_id)


async def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def test_a_zh_cn_call_runs_on_dashscope_and_survives_the_asr_server_dying(fakes, zh_session, media_worker):
    peer = await ContractPeer(media_worker.layer, zh_session.pk).start()
    client = VoiceClient("opus")
    rate = client.track.rate
    try:
        await connect(peer, client)
        await peer.send("media.asr_start", language="zh-CN", format="opus", sample_rate=16000, mode="auto")

        # 1. A spoken Chinese turn: Paraformer hears it, Qwen answers, CosyVoice speaks.
        client.track.play(speak(SAID, language="zh-CN", rate=rate))
        client.track.play(silence(1200, rate))
        result = await peer.expect("asr_result", timeout=30)
        assert result["data"]["text"] == HEARD and result["data"]["language"].startswith("zh")
        response = await peer.expect("text_response", timeout=15)
        assert response["data"]["text"] == BUYER and response["data"]["language"] == "zh-CN"
        start = await peer.expect("tts_start", timeout=15)
        done = await peer.expect("tts_complete", timeout=30, request_id=start["data"]["request_id"])
        assert done["data"]["interrupted"] is False and done["data"]["duration_ms"] > 500
        assert client.heard_rms_since(result["at"]) > 0.02, "CosyVoice's audio is heard on the client's track"
        assert fakes["asr"].tasks and fakes["asr"].tasks[-1]["audio_bytes"] > 0
        assert fakes["asr"].tasks[-1]["run"]["payload"]["parameters"]["language_hints"] == ["zh"]
        spoken = "".join(t for task in fakes["tts"].tasks for t in task["texts"])
        assert spoken == BUYER, "every sentence of the reply went to CosyVoice"
        assert fakes["chat"].requests and "Bearer" in fakes["chat"].requests[-1]["authorization"]
        assert not peer.of_type("error")

        # 2. The ASR server dies mid-call; the next spoken turn is lost as voice, with ERR_ASR_FAILED.
        fakes["asr"].stop()
        tts_tasks = len(fakes["tts"].tasks)
        client.track.play(speak("我们的价格很有竞争力。", language="zh-CN", rate=rate))
        client.track.play(silence(1200, rate))
        error = await peer.expect("error", timeout=30, code="ERR_ASR_FAILED")
        assert error["data"]["details"]["engine"] == "dashscope_paraformer"
        assert KEY not in str(error)
        assert len(peer.of_type("asr_result")) == 1, "no transcript is invented for the lost turn"

        # 3. The call continues: a typed turn is answered and still spoken by CosyVoice.
        reply = await gateway.text_turn(session_id=zh_session.pk, text=TYPED)
        assert reply.text == BUYER
        await peer.send("media.text_reply", text=reply.text, message_id="msg_typed", response_id=reply.response_id)
        start = await peer.expect("tts_start", timeout=15, request_id=reply.response_id)
        heard_from = time.monotonic()
        done = await peer.expect("tts_complete", timeout=30, request_id=reply.response_id)
        assert done["data"]["interrupted"] is False and done["data"]["duration_ms"] > 500
        assert client.heard_rms_since(heard_from - 0.5) > 0.02
        assert len(fakes["tts"].tasks) > tts_tasks, "TTS still went to CosyVoice"
        assert not [e for e in peer.of_type("error") if e["data"]["code"] != "ERR_ASR_FAILED"]

        # 4. Nothing said is lost: both turns of each exchange are persisted, and the call is recorded.
        turns = await wait_for(lambda: _count(zh_session.pk, 4))
        assert [(u.speaker, u.source, u.text) for u in turns] == [
            ("trainee", "voice", HEARD), ("buyer", "voice", BUYER),
            ("trainee", "text", TYPED), ("buyer", "text", BUYER),
        ]
        await peer.send("media.hangup", reason="user_requested")
        session = await wait_for(lambda: _recorded(zh_session.pk), timeout=10)
        assert session and session.recording.name.endswith("recording-raw.wav")
        assert session.audio_metadata["recording"]["duration_ms"] > 3000
    finally:
        await client.close()
        await peer.stop()


async def _count(session_id: str, n: int) -> list[Utterance] | None:
    found = await utterances(session_id)
    return found if len(found) >= n else None


async def _recorded(session_id: str) -> RealtimeSession | None:
    session = await reload(session_id)
    return session if session.recording else None
