"""How a live call gets its engines: the scenario's choice over the process's shared offline
engines and executors, and cloud failures turned into protocol errors on the call's loop."""

from __future__ import annotations

import asyncio
import threading

from lingecho.resilience.failures import EngineFailure
from media_pipeline.engine_pool import call_engines, failure_listener, get_engines
from media_pipeline.engines.fallback import FallbackASR, FallbackTTS


class Scenario:
    def __init__(self, asr: str = "", tts: str = "", brain: str = "") -> None:
        self.asr_engine, self.tts_engine, self.brain_engine = asr, tts, brain


def test_it_gives_an_offline_scenario_the_processes_own_engines_and_executors(settings):
    settings.ASR_ENGINE, settings.TTS_ENGINE = "faster_whisper", "espeak"
    base = get_engines()
    engines = call_engines(Scenario(), base=base)
    assert engines.asr is base.asr and engines.tts is base.tts
    assert engines.asr_pool is base.asr_pool and engines.vad is base.vad
    assert base.asr.window_s == settings.ASR_WINDOW_SECONDS


def test_it_wraps_a_scenarios_cloud_engines_around_the_shared_offline_ones(settings):
    settings.DASHSCOPE_API_KEY = "sk-test-0123456789"
    base = get_engines()
    engines = call_engines(Scenario("dashscope_paraformer", "dashscope_cosyvoice"), base=base)
    assert isinstance(engines.asr, FallbackASR) and engines.asr.fallback is base.asr
    assert isinstance(engines.tts, FallbackTTS) and engines.tts.fallback is base.tts
    assert engines.asr_pool is base.asr_pool, "executors stay bounded and shared"


async def test_it_sends_engine_failures_from_worker_threads_to_the_calls_loop():
    sent: list[tuple[str, str, dict, bool]] = []
    loop_thread = threading.get_ident()

    def on_error(code: str, message: str, details: dict) -> None:
        sent.append((code, message, details, threading.get_ident() == loop_thread))

    report = failure_listener(on_error)
    asr = EngineFailure(kind="asr", engine="dashscope_paraformer", code="ERR_ASR_FAILED",
                        message="ASR engine dashscope_paraformer failed: refused", fallback="faster_whisper")
    brain = EngineFailure(kind="brain", engine="qwen", code=None, message="x", fallback="scripted")
    worker = threading.Thread(target=lambda: (report(asr), report(brain)))
    worker.start()
    worker.join()
    await asyncio.sleep(0.05)
    assert len(sent) == 1, "a brain failure has no protocol code: the scripted buyer just carries on"
    code, message, details, on_loop = sent[0]
    assert code == "ERR_ASR_FAILED" and on_loop
    assert details == {"engine": "dashscope_paraformer", "fallback": "faster_whisper", "timeout": False, "kind": "asr"}
    assert "offline engine (faster_whisper)" in message
