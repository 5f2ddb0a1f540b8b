"""OpenAI-compatible transcription and speech against a local server speaking that API."""

from __future__ import annotations

import numpy as np
import pytest

from media_pipeline.engines import get_asr_engine, get_tts_engine
from media_pipeline.engines.asr.base import ASRError
from media_pipeline.engines.asr.openai_compat import OpenAICompatASR
from media_pipeline.engines.tts.base import TTSError
from media_pipeline.engines.tts.openai_compat import OpenAICompatTTS
from tests.audio_fixtures import silence, speak
from tests.cloud.fakes import KEY


def asr_for(server, **kwargs) -> OpenAICompatASR:
    return OpenAICompatASR(base_url=server.base_url, api_key=KEY, model="whisper-1", timeout=2.0, **kwargs)


def tts_for(server, **kwargs) -> OpenAICompatTTS:
    return OpenAICompatTTS(base_url=server.base_url, api_key=KEY, model="tts-1", timeout=2.0, **kwargs)


# --- ASR --------------------------------------------------------------------------------------

def test_it_posts_the_utterance_as_multipart_wav(openai_server):
    result = asr_for(openai_server).transcribe(speak("We can start with a pilot."), language="en-US")
    assert result.text == "We can start with a pilot." and result.language == "en"
    sent = openai_server.requests[-1]
    assert sent["path"] == "/v1/audio/transcriptions"
    assert sent["form"] == {"model": "whisper-1", "language": "en", "response_format": "json"}
    assert sent["filename"].endswith(".wav") and sent["file_bytes"] > 16000
    assert sent["authorization"] == f"Bearer {KEY}"


def test_it_maps_zh_cn_to_the_iso_code_and_reads_verbose_confidence(openai_server):
    openai_server.transcript = "我们的预算有限。"
    result = asr_for(openai_server, response_format="verbose_json").transcribe(
        speak("ni hao", language="zh"), language="zh-CN"
    )
    assert result.text == "我们的预算有限。" and result.language == "zh"
    assert openai_server.requests[-1]["form"]["language"] == "zh"
    assert 0.8 < result.confidence <= 1.0


def test_it_does_not_send_silence(openai_server):
    result = asr_for(openai_server).transcribe(silence(1000), language="en")
    assert result.is_empty and openai_server.requests == []


def test_it_reports_an_auth_error_as_final_and_without_the_key(openai_server):
    engine = OpenAICompatASR(base_url=openai_server.base_url, api_key="sk-bad-key-99999999", timeout=2.0)
    with pytest.raises(ASRError) as info:
        engine.transcribe(speak("hello"), language="en")
    assert info.value.status == 401 and info.value.retryable is False
    assert "sk-bad-key-99999999" not in str(info.value)


def test_it_reports_a_server_error_as_retryable(openai_server):
    openai_server.fail_statuses = [500]
    with pytest.raises(ASRError) as info:
        asr_for(openai_server).transcribe(speak("hello"), language="en")
    assert info.value.retryable is True and KEY not in str(info.value)


def test_it_times_out(openai_server):
    openai_server.delay = 1.0
    with pytest.raises(ASRError) as info:
        asr_for(openai_server, ).__class__(base_url=openai_server.base_url, api_key=KEY, timeout=0.2).transcribe(
            speak("hello"), language="en"
        )
    assert info.value.timeout is True


def test_it_is_in_the_registry_under_openai(settings, openai_server):
    settings.OPENAI_BASE_URL = openai_server.base_url
    settings.OPENAI_API_KEY = KEY
    assert get_asr_engine("openai").transcribe(speak("hi there"), language="en").text
    assert isinstance(get_tts_engine("openai"), OpenAICompatTTS)


# --- TTS --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_it_streams_speech_as_int16_chunks(openai_server, fmt):
    engine = tts_for(openai_server, response_format=fmt)
    chunks = list(engine.synthesize("Send me the numbers.", voice="nova", speed=1.2))
    assert len(chunks) > 1 and all(c.dtype == np.int16 for c in chunks)
    pcm = np.concatenate(chunks)
    assert len(pcm) == int(0.5 * 24000) and engine.sample_rate == 24000
    assert np.abs(pcm).max() > 5000  # the tone survived the odd-sized network chunks intact
    sent = openai_server.requests[-1]["json"]
    assert sent == {"model": "tts-1", "input": "Send me the numbers.", "voice": "nova", "response_format": fmt,
                    "speed": 1.2}


def test_it_ignores_an_espeak_voice_name_and_uses_its_own(openai_server):
    list(tts_for(openai_server).synthesize("Hello.", voice="en-us+f3"))
    assert openai_server.requests[-1]["json"]["voice"] == "alloy"


def test_it_resamples_a_wav_at_another_rate(openai_server):
    openai_server.speech_rate = 16000
    pcm = np.concatenate(list(tts_for(openai_server, response_format="wav").synthesize("Hello.")))
    assert abs(len(pcm) - 12000) < 100  # 0.5 s at 24 kHz


def test_it_raises_a_tts_error_on_a_bad_request_or_dropped_stream(openai_server):
    openai_server.fail_statuses = [429]
    with pytest.raises(TTSError) as info:
        list(tts_for(openai_server).synthesize("Hello."))
    assert info.value.retryable is True and info.value.status == 429
    openai_server.drop_after = 1
    with pytest.raises(TTSError):
        list(tts_for(openai_server).synthesize("Hello again."))
