"""Paraformer ASR and CosyVoice TTS against a local server speaking DashScope's duplex task protocol."""

from __future__ import annotations

import numpy as np
import pytest

from media_pipeline.engines import get_asr_engine, get_tts_engine
from media_pipeline.engines.asr.base import ASRError
from media_pipeline.engines.asr.dashscope_paraformer import DashScopeParaformerASR
from media_pipeline.engines.tts.base import TTSError
from media_pipeline.engines.tts.dashscope_cosyvoice import DashScopeCosyVoiceTTS
from tests.audio_fixtures import speak
from tests.cloud.fakes import KEY


def paraformer(server, **kwargs) -> DashScopeParaformerASR:
    return DashScopeParaformerASR(url=server.url, api_key=KEY, timeout=3.0, **kwargs)


def cosyvoice(server, **kwargs) -> DashScopeCosyVoiceTTS:
    return DashScopeCosyVoiceTTS(url=server.url, api_key=KEY, timeout=3.0, **kwargs)


# --- Paraformer -------------------------------------------------------------------------------

def test_it_recognises_a_chinese_utterance_from_final_sentences(dashscope_server):
    audio = speak("我们的预算有限", language="zh")
    result = paraformer(dashscope_server).transcribe(audio, language="zh-CN")
    assert result.text == "我们的预算有限。能先做个试点吗？"  # interim and heartbeat results skipped
    assert result.language == "zh" and result.confidence == 1.0
    task = dashscope_server.tasks[-1]
    run = task["run"]
    assert run["header"]["action"] == "run-task" and run["header"]["streaming"] == "duplex"
    assert run["payload"]["model"] == "paraformer-realtime-v2"
    assert run["payload"]["parameters"]["format"] == "pcm"
    assert run["payload"]["parameters"]["sample_rate"] == 16000
    assert run["payload"]["parameters"]["language_hints"] == ["zh"]
    assert task["audio_bytes"] == 2 * len(audio) and task["finished"]


def test_it_joins_english_sentences_with_spaces(dashscope_server):
    dashscope_server.asr_sentences = ["We can start small.", "Maybe one store."]
    result = paraformer(dashscope_server).transcribe(speak("we can start small"), language="en-US")
    assert result.text == "We can start small. Maybe one store."
    assert dashscope_server.tasks[-1]["run"]["payload"]["parameters"]["language_hints"] == ["en"]


def test_it_supports_chinese_and_english(dashscope_server):
    engine = paraformer(dashscope_server)
    assert engine.supports_language("zh-CN") and engine.supports_language("en") and engine.supports_language("cmn")


def test_it_refuses_a_bad_key_at_the_handshake(dashscope_server):
    engine = DashScopeParaformerASR(url=dashscope_server.url, api_key="sk-wrong-77777777", timeout=2.0)
    with pytest.raises(ASRError) as info:
        engine.transcribe(speak("hello"), language="en")
    assert info.value.status == 401 and info.value.retryable is False
    assert "sk-wrong-77777777" not in str(info.value)


def test_it_turns_task_failed_into_an_asr_error(dashscope_server):
    dashscope_server.fail_code = "Throttling.RateQuota"
    with pytest.raises(ASRError, match="Throttling.RateQuota") as info:
        paraformer(dashscope_server).transcribe(speak("hello"), language="en")
    assert info.value.retryable is True and KEY not in str(info.value)
    dashscope_server.fail_code = "InvalidParameter"
    with pytest.raises(ASRError) as info:
        paraformer(dashscope_server).transcribe(speak("hello"), language="en")
    assert info.value.retryable is False


def test_it_fails_when_the_server_drops_mid_task(dashscope_server):
    dashscope_server.drop_after_frames = 2
    with pytest.raises(ASRError, match="closed the connection") as info:
        paraformer(dashscope_server).transcribe(speak("hello there my friend"), language="en")
    assert info.value.retryable is True


def test_it_times_out_on_a_hung_task(dashscope_server):
    dashscope_server.hang = True
    engine = DashScopeParaformerASR(url=dashscope_server.url, api_key=KEY, timeout=0.5)
    with pytest.raises(ASRError) as info:
        engine.transcribe(speak("hello"), language="en")
    assert info.value.timeout is True


def test_it_cannot_reach_a_dead_server():
    engine = DashScopeParaformerASR(url="ws://127.0.0.1:9/api-ws/v1/inference/", api_key=KEY, timeout=1.0)
    with pytest.raises(ASRError) as info:
        engine.transcribe(speak("hello"), language="en")
    assert info.value.retryable is True


# --- CosyVoice --------------------------------------------------------------------------------

def test_it_synthesises_chinese_speech_from_binary_frames(dashscope_server):
    engine = cosyvoice(dashscope_server)
    chunks = list(engine.synthesize("您好，我们谈谈价格吧。", language="zh-CN", voice="cmn", speed=1.1))
    assert len(chunks) > 3 and all(c.dtype == np.int16 for c in chunks)
    pcm = np.concatenate(chunks)
    assert engine.sample_rate == 22050 and len(pcm) > 22050 // 2 and np.abs(pcm).max() > 1000
    task = dashscope_server.tasks[-1]
    params = task["run"]["payload"]["parameters"]
    assert task["run"]["payload"]["function"] == "SpeechSynthesizer"
    assert params["voice"] == "longxiaochun"  # "cmn" is an eSpeak name: the configured voice is used
    assert params["format"] == "pcm" and params["sample_rate"] == 22050 and params["rate"] == 1.1
    assert task["texts"] == ["您好，我们谈谈价格吧。"] and task["finished"]


def test_it_uses_a_provider_voice_and_rate_when_given(dashscope_server):
    engine = cosyvoice(dashscope_server, sample_rate=16000)
    list(engine.synthesize("Hello there.", voice="loongstella"))
    params = dashscope_server.tasks[-1]["run"]["payload"]["parameters"]
    assert params["voice"] == "loongstella" and params["sample_rate"] == 16000


def test_it_closes_the_socket_when_the_caller_stops_listening(dashscope_server):
    stream = cosyvoice(dashscope_server).synthesize("This is a long sentence that is interrupted by the trainee.")
    next(stream)
    stream.close()  # barge-in
    assert dashscope_server.tasks[-1]["texts"]


def test_it_raises_a_tts_error_when_synthesis_fails_or_drops(dashscope_server):
    dashscope_server.fail_code = "InternalError"
    with pytest.raises(TTSError) as info:
        list(cosyvoice(dashscope_server).synthesize("你好。"))
    assert info.value.retryable is True
    dashscope_server.fail_code = None
    dashscope_server.drop_after_frames = 2
    with pytest.raises(TTSError):
        list(cosyvoice(dashscope_server).synthesize("你好，再见。"))


def test_they_are_in_the_registries(settings, dashscope_server):
    settings.DASHSCOPE_WS_URL = dashscope_server.url
    settings.DASHSCOPE_API_KEY = KEY
    assert get_asr_engine("dashscope_paraformer").transcribe(speak("hi"), language="zh-CN").text
    assert list(get_tts_engine("dashscope_cosyvoice").synthesize("你好。"))
