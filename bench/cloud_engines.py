"""Latency of the cloud engine adapters against the local fake providers (tests/cloud/fakes.py).

What this measures is *our* side of a cloud turn: HTTP/WebSocket set-up, framing, SSE parsing,
sentence chunking, fallback bookkeeping, on loopback with a provider that answers instantly.
A real provider adds its network round trips and model time on top; measure those with
bench/turn_latency.py against the real endpoint. Also measured: how long a dead cloud engine
costs before the offline fallback takes over (refused connection, and breaker open).

Run: ``.venv/bin/python bench/cloud_engines.py [--runs 20]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lingecho.settings")


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(samples) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms"


def timed(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm-up: imports, first connection
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    import logging

    import django

    django.setup()
    logging.disable(logging.WARNING)

    from lingecho.resilience.breaker import CircuitBreaker
    from lingecho.resilience.retry import RetryPolicy
    from media_pipeline.engines import get_asr_engine, get_tts_engine
    from media_pipeline.engines.asr.dashscope_paraformer import DashScopeParaformerASR
    from media_pipeline.engines.asr.openai_compat import OpenAICompatASR
    from media_pipeline.engines.fallback import FallbackASR, FallbackTTS
    from media_pipeline.engines.tts.dashscope_cosyvoice import DashScopeCosyVoiceTTS
    from media_pipeline.engines.tts.openai_compat import OpenAICompatTTS
    from roleplay.dialog import Turn
    from roleplay.dialog.openai_chat import OpenAIChatBrain
    from tests.audio_fixtures import speak
    from tests.cloud.briefs import chinese_brief
    from tests.cloud.fakes import KEY, FakeDashScope, FakeOpenAI

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    runs = parser.parse_args().runs

    openai, dashscope = FakeOpenAI().start(), FakeDashScope().start()
    utterance = speak("我们的预算有限，能先做个试点吗", language="zh")  # ~2-3 s of speech
    print(f"utterance {len(utterance) / 16000:.1f} s; {runs} runs each; fakes answer instantly on loopback\n")

    asr_openai = OpenAICompatASR(base_url=openai.base_url, api_key=KEY)
    asr_para = DashScopeParaformerASR(url=dashscope.url, api_key=KEY)
    print("ASR  openai_compat          ", _ms(timed(lambda: asr_openai.transcribe(utterance, language="zh-CN"), runs)))
    print("ASR  dashscope_paraformer   ", _ms(timed(lambda: asr_para.transcribe(utterance, language="zh-CN"), runs)))

    def first_chunk(engine, text: str) -> Callable[[], object]:
        def run() -> None:
            stream = engine.synthesize(text, language="zh-CN")
            next(stream)
            stream.close()
        return run

    sentence = "您好，我们谈谈价格吧。"
    tts_openai = OpenAICompatTTS(base_url=openai.base_url, api_key=KEY)
    tts_cosy = DashScopeCosyVoiceTTS(url=dashscope.url, api_key=KEY)
    print("TTS  openai_compat  1st audio", _ms(timed(first_chunk(tts_openai, sentence), runs)))
    print("TTS  cosyvoice      1st audio", _ms(timed(first_chunk(tts_cosy, sentence), runs)),
          "(fake synthesises with eSpeak first)")

    brief = chinese_brief()
    history = [Turn("buyer", brief.opening_line), Turn("trainee", "王经理您好，我想介绍一下我们的系统。")]
    openai.chat_deltas = ["价格", "确实是", "个问题。", "你们能", "给个折扣吗？"]
    brain = OpenAIChatBrain(base_url=openai.base_url, api_key=KEY)

    async def first_sentence() -> None:
        stream = brain.stream_reply(brief, history)
        await stream.__anext__()
        await stream.aclose()

    print("LLM  openai_chat  1st sentence", _ms(timed(lambda: asyncio.run(first_sentence()), runs)))

    whisper, espeak = get_asr_engine("faster_whisper"), get_tts_engine("espeak")
    english = speak("Please send me the pricing proposal.")
    dead = "ws://127.0.0.1:9/api-ws/v1/inference/"
    print()
    print("offline faster_whisper tiny.en", _ms(timed(lambda: whisper.transcribe(english, language="en"), runs)))
    for label, retries in (("no retries", 0), ("2 retries", 2)):
        fallback = FallbackASR(DashScopeParaformerASR(url=dead, api_key=KEY, timeout=2), whisper,
                               breaker=CircuitBreaker("bench", threshold=10**6), policy=RetryPolicy(retries=retries))
        took = timed(lambda fb=fallback: fb.transcribe(english, language="en"), max(3, runs // 4))
        print(f"fallback ASR, cloud refused, {label:10}", _ms(took))
    breaker = CircuitBreaker("bench-open", threshold=1, reset_after=3600)
    breaker.record_failure()
    opened = FallbackASR(DashScopeParaformerASR(url=dead, api_key=KEY), whisper, breaker=breaker)
    print("fallback ASR, breaker open          ", _ms(timed(lambda: opened.transcribe(english, language="en"), runs)))
    tts_fb = FallbackTTS(DashScopeCosyVoiceTTS(url=dead, api_key=KEY, timeout=2), espeak,
                         breaker=CircuitBreaker("bench-tts", threshold=10**6), policy=RetryPolicy(retries=0))
    print("fallback TTS 1st audio, cloud refused", _ms(timed(first_chunk(tts_fb, sentence), runs)))

    openai.stop()
    dashscope.stop()


if __name__ == "__main__":
    main()
