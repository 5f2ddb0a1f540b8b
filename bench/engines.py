"""Offline engine benchmark: whisper decode latency, VAD cost, eSpeak speed.

Run: ``.venv/bin/python bench/engines.py [--runs N]``. Small on purpose (the machine has two
cores shared with everything else): a handful of runs per size, medians reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from media_pipeline import audio  # noqa: E402
from media_pipeline.engines import get_asr_engine, get_tts_engine, get_vad_model  # noqa: E402
from media_pipeline.executor import BoundedExecutor  # noqa: E402

RATE = 16000
TEXT = (
    "Thanks for calling. I have looked at your proposal, and honestly the price is higher than "
    "we expected. Our budget for this quarter is limited. Could you walk me through the discount "
    "options, and what support is included in the first year?"
)


def p50(values: list[float]) -> float:
    return statistics.median(values)


def utterance(tts, seconds: float) -> np.ndarray:
    """eSpeak speech cut to exactly ``seconds`` at 16 kHz (a real utterance, not a tone)."""
    pcm = np.concatenate(list(tts.synthesize(TEXT)))
    speech = audio.resample(pcm, tts.sample_rate, RATE)
    return speech[: int(seconds * RATE)]


def bench_whisper(tts, runs: int) -> None:
    asr = get_asr_engine("faster_whisper", cpu_threads=2)
    started = time.perf_counter()
    asr.warm_up()
    print(f"whisper tiny.en int8 load + first decode: {1000 * (time.perf_counter() - started):.0f} ms")
    print("whisper decode (beam 1)        p50 ms    RTF     with word timestamps p50 ms")
    for seconds in (1.0, 3.0, 5.0):
        clip = utterance(tts, seconds)
        plain, words = [], []
        for _ in range(runs):
            t = time.perf_counter()
            asr.transcribe(clip, language="en")
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            asr.transcribe(clip, language="en", word_timestamps=True)
            words.append(time.perf_counter() - t)
        print(
            f"  {seconds:.0f} s utterance               {1000 * p50(plain):7.0f} {p50(plain) / seconds:7.3f}"
            f"     {1000 * p50(words):7.0f}"
        )


def bench_vad(tts, runs: int) -> None:
    model = get_vad_model()
    speech = np.concatenate([utterance(tts, 5.0), np.zeros(RATE * 5, np.float32)])
    seconds = len(speech) / RATE
    frame = RATE // 50
    streamed, batched = [], []
    for _ in range(runs):
        stream = model.create_stream()
        t = time.perf_counter()
        for i in range(0, len(speech), frame):
            stream.feed(speech[i : i + frame])
        streamed.append(time.perf_counter() - t)
        t = time.perf_counter()
        model.create_stream().feed(speech)
        batched.append(time.perf_counter() - t)
    print(
        f"Silero VAD: {1000 * p50(streamed) / seconds:.2f} ms per second of audio fed in 20 ms frames, "
        f"{1000 * p50(batched) / seconds:.2f} ms/s in one batch"
    )


def bench_espeak(tts, runs: int) -> None:
    chinese = "您好，感谢您的来电。我看过你们的方案了，说实话价格比我们预期的高。我们这个季度预算有限。"
    for language, text in (("en", TEXT), ("zh-CN", chinese)):
        totals, firsts, durations = [], [], []
        for _ in range(runs):
            t = time.perf_counter()
            chunks = []
            for chunk in tts.synthesize(text, language=language):
                if not chunks:
                    firsts.append(time.perf_counter() - t)
                chunks.append(chunk)
            totals.append(time.perf_counter() - t)
            durations.append(sum(len(c) for c in chunks) / tts.sample_rate)
        audio_s = p50(durations)
        print(
            f"eSpeak {language:5}: {audio_s:.1f} s of audio in {1000 * p50(totals):.1f} ms "
            f"(realtime x{audio_s / p50(totals):.0f}), first chunk after {1000 * p50(firsts):.1f} ms"
        )


def bench_parallel_whisper(tts) -> None:
    """Throughput of 4 concurrent 3 s decodes through the bounded executor (2 workers)."""
    clip = utterance(tts, 3.0)
    for cpu_threads, num_workers in ((2, 1), (1, 2)):
        asr = get_asr_engine("faster_whisper", cpu_threads=cpu_threads, num_workers=num_workers)
        asr.warm_up()
        with BoundedExecutor("bench-asr", max_workers=2, max_queue=4) as ex:
            t = time.perf_counter()
            futures = [ex.submit(asr.transcribe, clip, language="en") for _ in range(4)]
            for f in futures:
                f.result()
            wall = time.perf_counter() - t
        print(
            f"4 concurrent 3 s decodes, cpu_threads={cpu_threads} num_workers={num_workers}: "
            f"{1000 * wall:.0f} ms wall ({1000 * wall / 4:.0f} ms per decode)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tts = get_tts_engine("espeak")
    bench_espeak(tts, args.runs)
    bench_vad(tts, args.runs)
    bench_whisper(tts, args.runs)
    bench_parallel_whisper(tts)


if __name__ == "__main__":
    main()
