"""Retries, the circuit breaker and the offline fallbacks, with real engines on both sides.

The pieces alone, without engines: tests/lingecho/test_resilience.py."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from lingecho.resilience.breaker import CircuitBreaker
from lingecho.resilience.retry import RetryPolicy
from media_pipeline.engines import get_asr_engine, get_tts_engine
from media_pipeline.engines.asr.base import ASRError
from media_pipeline.engines.asr.dashscope_paraformer import DashScopeParaformerASR
from media_pipeline.engines.asr.openai_compat import OpenAICompatASR
from media_pipeline.engines.fallback import FallbackASR, FallbackTTS
from media_pipeline.engines.tts.base import TTSError
from media_pipeline.engines.tts.dashscope_cosyvoice import DashScopeCosyVoiceTTS
from media_pipeline.engines.tts.openai_compat import OpenAICompatTTS
from roleplay.dialog import ScriptedBrain, Turn
from roleplay.dialog.fallback import FallbackBrain
from roleplay.dialog.openai_chat import OpenAIChatBrain
from tests.audio_fixtures import speak
from tests.cloud.briefs import english_brief
from tests.cloud.fakes import KEY

NO_WAIT = RetryPolicy(retries=2, base_delay=0.0)


@pytest.fixture(scope="module")
def whisper():
    return get_asr_engine("faster_whisper")


@pytest.fixture(scope="module")
def espeak():
    return get_tts_engine("espeak")


# --- retries ----------------------------------------------------------------------------------

def test_a_real_adapter_recovers_from_two_server_errors(openai_server):
    openai_server.fail_statuses = [500, 502]
    engine = FallbackASR(OpenAICompatASR(base_url=openai_server.base_url, api_key=KEY, timeout=2), None,
                         breaker=CircuitBreaker("t"), policy=NO_WAIT)
    assert engine.transcribe(speak("hello"), language="en").text == "We can start with a pilot."
    assert len(openai_server.requests) == 3


# --- breaker ----------------------------------------------------------------------------------

def test_an_open_breaker_skips_the_dead_service_entirely(dashscope_server, whisper):
    dashscope_server.fail_code = "InternalError"
    events = []
    breaker = CircuitBreaker("asr", threshold=1, reset_after=60)
    engine = FallbackASR(DashScopeParaformerASR(url=dashscope_server.url, api_key=KEY, timeout=2), whisper,
                         breaker=breaker, policy=NO_WAIT, on_failure=events.append)
    engine.transcribe(speak("hello"), language="en")
    assert breaker.state == "open" and len(dashscope_server.tasks) == 3  # first try + 2 retries
    engine.transcribe(speak("hello"), language="en")
    assert len(dashscope_server.tasks) == 3 and len(events) == 1  # skipped, and reported only once


# --- ASR fallback -----------------------------------------------------------------------------

def test_asr_falls_back_to_whisper_and_reports_err_asr_failed(dashscope_server, whisper):
    dashscope_server.stop()  # the cloud service is gone
    events = []
    engine = FallbackASR(DashScopeParaformerASR(url=dashscope_server.url, api_key=KEY, timeout=1), whisper,
                         breaker=CircuitBreaker("asr"), policy=NO_WAIT, on_failure=events.append)
    result = engine.transcribe(speak("Please send me the pricing proposal."), language="en")
    assert "pricing" in result.text.lower()
    [event] = events
    assert event.kind == "asr" and event.code == "ERR_ASR_FAILED"
    assert event.engine == "dashscope_paraformer" and event.fallback == "faster_whisper"
    assert event.details() == {"engine": "dashscope_paraformer", "fallback": "faster_whisper", "timeout": False}


def test_chinese_asr_has_no_offline_fallback_so_the_turn_fails_as_err_asr_failed(dashscope_server, whisper):
    events = []
    engine = FallbackASR(DashScopeParaformerASR(url=dashscope_server.url, api_key=KEY, timeout=1), whisper,
                         breaker=CircuitBreaker("asr", threshold=1), policy=NO_WAIT, on_failure=events.append)
    assert engine.transcribe(speak("你好", language="zh"), language="zh-CN").text  # cloud up: fine
    dashscope_server.stop()
    with pytest.raises(ASRError, match="no offline ASR model for 'zh-CN'"):
        engine.transcribe(speak("你好", language="zh"), language="zh-CN")
    with pytest.raises(ASRError, match="circuit open"):  # later turns fail fast, no waiting on a dead host
        engine.transcribe(speak("你好", language="zh"), language="zh-CN")
    assert events == []  # nothing was absorbed: the raised ASRError is the report
    assert engine.supports_language("en") and engine.supports_language("zh-CN")


# --- TTS fallback -----------------------------------------------------------------------------

def test_tts_falls_back_to_espeak_before_any_audio(dashscope_server, espeak):
    dashscope_server.fail_code = "InternalError"
    events = []
    engine = FallbackTTS(DashScopeCosyVoiceTTS(url=dashscope_server.url, api_key=KEY, timeout=2), espeak,
                         breaker=CircuitBreaker("tts"), policy=NO_WAIT, on_failure=events.append)
    pcm = np.concatenate(list(engine.synthesize("我们下周再谈。", language="zh-CN", voice="cmn")))
    assert len(pcm) > espeak.sample_rate // 2 and engine.sample_rate == 22050
    [event] = events
    assert event.code == "ERR_TTS_FAILED" and event.fallback == "espeak"


def test_tts_cut_mid_sentence_continues_offline_with_the_next_sentence(dashscope_server, espeak):
    dashscope_server.drop_after_frames = 2
    events = []
    engine = FallbackTTS(DashScopeCosyVoiceTTS(url=dashscope_server.url, api_key=KEY, timeout=2), espeak,
                         breaker=CircuitBreaker("tts"), policy=NO_WAIT, on_failure=events.append)
    chunks = list(engine.synthesize("The first sentence is long enough. The second one follows.", language="en"))
    assert len(dashscope_server.tasks) == 1  # no retry once audio had been heard
    assert dashscope_server.tasks[0]["texts"] == ["The first sentence is long enough."]
    offline_only = np.concatenate(list(espeak.synthesize("The second one follows.", language="en")))
    assert len(np.concatenate(chunks)) > len(offline_only)  # the cut-off start plus the second sentence
    assert len(events) == 1


def test_tts_fallback_audio_is_resampled_to_the_cloud_rate(openai_server, espeak):
    openai_server.fail_statuses = [500, 500, 500]
    engine = FallbackTTS(OpenAICompatTTS(base_url=openai_server.base_url, api_key=KEY, timeout=2), espeak,
                         breaker=CircuitBreaker("tts"), policy=NO_WAIT)
    pcm = np.concatenate(list(engine.synthesize("Hello there.", voice="nova")))
    native = np.concatenate(list(espeak.synthesize("Hello there.")))
    assert engine.sample_rate == 24000
    assert abs(len(pcm) - len(native) * 24000 / espeak.sample_rate) < 200


def test_tts_without_a_fallback_raises(dashscope_server):
    dashscope_server.fail_code = "InvalidParameter"
    engine = FallbackTTS(DashScopeCosyVoiceTTS(url=dashscope_server.url, api_key=KEY, timeout=2), None,
                         breaker=CircuitBreaker("tts"), policy=NO_WAIT)
    with pytest.raises(TTSError):
        list(engine.synthesize("你好。"))


# --- brain fallback ---------------------------------------------------------------------------

async def test_the_brain_falls_back_to_the_scripted_buyer(openai_server):
    openai_server.fail_statuses = [401]
    events = []
    brain = FallbackBrain(OpenAIChatBrain(base_url=openai_server.base_url, api_key=KEY, timeout=2),
                          ScriptedBrain(), breaker=CircuitBreaker("brain"), policy=NO_WAIT, on_failure=events.append)
    history = [Turn("buyer", "Dana Lee speaking."), Turn("trainee", "What does your budget look like?")]
    reply = [c async for c in brain.stream_reply(english_brief(), history)]
    expected = [c async for c in ScriptedBrain().stream_reply(english_brief(), history)]
    assert reply == expected and len(openai_server.requests) == 1
    [event] = events
    assert event.kind == "brain" and event.code is None and event.fallback == "scripted"
    assert brain.state(english_brief(), history).trainee_turns == 1


async def test_the_brain_retries_before_the_first_sentence(openai_server):
    openai_server.fail_statuses = [503]
    brain = FallbackBrain(OpenAIChatBrain(base_url=openai_server.base_url, api_key=KEY, timeout=2),
                          ScriptedBrain(), breaker=CircuitBreaker("brain"), policy=NO_WAIT)
    history = [Turn("trainee", "Hello Dana.")]
    assert [c async for c in brain.stream_reply(english_brief(), history)][0] == "Well, our budget is tight. "


async def test_a_stream_that_dies_half_way_keeps_what_was_said(openai_server):
    openai_server.drop_after = 4  # after "Well, our budget is tight. What does it "
    events = []
    brain = FallbackBrain(OpenAIChatBrain(base_url=openai_server.base_url, api_key=KEY, timeout=2),
                          ScriptedBrain(), breaker=CircuitBreaker("brain"), policy=NO_WAIT, on_failure=events.append)
    reply = [c async for c in brain.stream_reply(english_brief(), [Turn("trainee", "Hello Dana.")])]
    assert reply == ["Well, our budget is tight. "]
    assert len(events) == 1 and events[0].fallback is None


# --- keys never reach logs --------------------------------------------------------------------

async def test_keys_never_reach_the_logs_on_any_failure_path(openai_server, dashscope_server, whisper, espeak, caplog):
    caplog.set_level(logging.DEBUG)
    openai_server.fail_statuses = [500] * 6  # error bodies echo the key
    dashscope_server.fail_code = "InternalError"  # so do task-failed messages
    events = []
    asr = FallbackASR(OpenAICompatASR(base_url=openai_server.base_url, api_key=KEY, timeout=2), whisper,
                      breaker=CircuitBreaker("a"), policy=NO_WAIT, on_failure=events.append)
    asr.transcribe(speak("hello"), language="en")
    tts = FallbackTTS(DashScopeCosyVoiceTTS(url=dashscope_server.url, api_key=KEY, timeout=2), espeak,
                      breaker=CircuitBreaker("t"), policy=NO_WAIT, on_failure=events.append)
    list(tts.synthesize("Hello."))
    dashscope_server.fail_code = None
    DashScopeParaformerASR(url=dashscope_server.url, api_key=KEY, timeout=2).transcribe(speak("hi"), language="en")
    brain = FallbackBrain(OpenAIChatBrain(base_url=openai_server.base_url, api_key=KEY, timeout=2), ScriptedBrain(),
                          breaker=CircuitBreaker("b"), policy=NO_WAIT, on_failure=events.append)
    [c async for c in brain.stream_reply(english_brief(), [Turn("trainee", "Hi.")])]
    assert len(events) == 3 and caplog.records
    assert KEY not in caplog.text and "SECRETKEY" not in caplog.text
    assert all(KEY not in e.message for e in events)
    for engine in (asr.primary, tts.primary, brain.primary):
        assert KEY not in repr(engine)
