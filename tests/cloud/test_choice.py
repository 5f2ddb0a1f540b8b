"""Engine choice: scenario override > settings > offline default, cloud engines wrapped in fallbacks.

ASR and TTS are chosen by the media pipeline (media_pipeline.engines.choice), the buyer brain by
the conversation (roleplay.dialog.choice); both follow the same precedence."""

from __future__ import annotations

from types import SimpleNamespace

from media_pipeline.engines.asr.faster_whisper import FasterWhisperEngine
from media_pipeline.engines.choice import engines_for_scenario, resolve_name, select_asr, select_tts
from media_pipeline.engines.fallback import FallbackASR, FallbackTTS
from media_pipeline.engines.tts.espeak import EspeakTTSEngine
from roleplay.dialog import ScriptedBrain
from roleplay.dialog.choice import select_brain
from roleplay.dialog.fallback import FallbackBrain
from tests.cloud.fakes import KEY


def scenario(asr: str = "", tts: str = "", brain: str = "") -> SimpleNamespace:
    return SimpleNamespace(asr_engine=asr, tts_engine=tts, brain_engine=brain)


def test_the_offline_engines_are_the_default_and_come_unwrapped(settings):
    settings.ASR_ENGINE, settings.TTS_ENGINE, settings.BRAIN_ENGINE = "faster_whisper", "espeak", "scripted"
    engines = engines_for_scenario(scenario())
    assert isinstance(engines.asr, FasterWhisperEngine)
    assert isinstance(engines.tts, EspeakTTSEngine)
    assert isinstance(select_brain(""), ScriptedBrain)
    assert engines.names == {"asr": "faster_whisper", "tts": "espeak"}


def test_settings_pick_cloud_engines_wrapped_in_their_offline_fallback(settings):
    settings.ASR_ENGINE, settings.TTS_ENGINE, settings.BRAIN_ENGINE = "dashscope_paraformer", "cosyvoice", "qwen"
    settings.DASHSCOPE_API_KEY = KEY
    engines = engines_for_scenario(scenario())
    assert isinstance(engines.asr, FallbackASR) and isinstance(engines.asr.fallback, FasterWhisperEngine)
    assert isinstance(engines.tts, FallbackTTS) and isinstance(engines.tts.fallback, EspeakTTSEngine)
    brain = select_brain("")
    assert isinstance(brain, FallbackBrain) and isinstance(brain.fallback, ScriptedBrain)
    assert engines.names == {"asr": "dashscope_paraformer", "tts": "dashscope_cosyvoice"}
    assert brain.name == "qwen"


def test_a_scenario_override_wins_over_settings(settings):
    settings.ASR_ENGINE, settings.TTS_ENGINE, settings.BRAIN_ENGINE = "openai", "openai", "openai"
    engines = engines_for_scenario(scenario(asr="faster_whisper", tts="dashscope_cosyvoice", brain="scripted"))
    assert engines.names == {"asr": "faster_whisper", "tts": "dashscope_cosyvoice"}
    assert select_brain("scripted").name == "scripted"
    assert resolve_name("  ", "ASR_ENGINE", "faster_whisper") == "openai"


def test_an_unknown_name_falls_back_to_the_offline_engine_instead_of_failing_the_call(settings, caplog):
    assert isinstance(select_asr("whisperx-typo"), FasterWhisperEngine)
    assert isinstance(select_tts("polly"), EspeakTTSEngine)
    assert isinstance(select_brain("gpt5-typo"), ScriptedBrain)
    assert "unknown ASR engine 'whisperx-typo'" in caplog.text


def test_the_failure_listener_reaches_every_wrapper(settings):
    settings.ASR_ENGINE, settings.TTS_ENGINE, settings.BRAIN_ENGINE = "openai", "openai", "openai"
    heard = []
    engines = engines_for_scenario(None, on_failure=heard.append)
    brain = select_brain(None, on_failure=heard.append)
    assert all(e._reporter.on_failure == heard.append for e in (engines.asr, engines.tts, brain))


def test_the_chinese_demo_scenario_can_be_pointed_at_dashscope(settings):
    from roleplay.demo_data import SCENARIOS

    zh = next(s for s in SCENARIOS if s.get("language") == "zh-CN")
    engines = engines_for_scenario(scenario(asr="dashscope_paraformer", tts="dashscope_cosyvoice", brain="qwen"))
    assert zh["voice"] == "cmn"
    assert engines.asr.supports_language(zh["language"])


def test_per_call_wrappers_share_the_cloud_engine_and_reuse_the_loaded_offline_one(settings):
    settings.ASR_ENGINE, settings.TTS_ENGINE = "openai", "openai"
    whisper, espeak = select_asr("faster_whisper"), select_tts("espeak")
    first = engines_for_scenario(None, offline_asr_engine=whisper, offline_tts_engine=espeak)
    second = engines_for_scenario(None, offline_asr_engine=whisper, offline_tts_engine=espeak)
    assert first.asr is not second.asr and first.asr.primary is second.asr.primary
    assert first.asr.fallback is whisper and first.tts.fallback is espeak
    assert first.asr.breaker is second.asr.breaker
