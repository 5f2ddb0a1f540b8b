"""Live ASR decodes under load, one by one against batched (media_pipeline.asr_batch), in isolation.

Many calls' finals and interims arriving at random (Poisson) at a given rate are decoded by the
engine pool's way of decoding them: the real tiny.en engine on the calls' 10 s window, an ASR
executor with ``ENGINE_WORKERS`` threads, and the batcher with ``ASR_MAX_BATCH`` = 1 (off: one job
per decode, as before) or more. Each rate runs both settings in alternation, ``--runs`` times.
Printed per run: decode latency (arrival → transcript) p50 / p95, CPU per decode (this process's
CPU over the run / decodes) and the mean batch size. Isolating the ASR stage keeps the callers,
aiortc and the rest of a call out of the figures, so the difference is the batching's.

Run: ``.venv/bin/python bench/asr_batch.py --rates 6,9,12 --seconds 20 --runs 2``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lingecho.settings")

SENTENCES = (
    "Please send me the pricing proposal by Friday.",
    "Our finance team closes the books every month.",
    "How many invoices do you process each week?",
    "We could start a pilot in the spring.",
    "What would it take to get your team on board?",
    "I understand that the budget is a big problem for you.",
    "Could you tell me who else is involved in the decision?",
    "We save most customers about ten hours a week.",
)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def offered(batcher, engine, clips, *, rate: float, seconds: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    latencies: list[float] = []

    async def one(clip) -> None:
        started = time.perf_counter()
        await batcher.transcribe(engine, clip, language="en")
        latencies.append(time.perf_counter() - started)

    tasks = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        tasks.append(asyncio.ensure_future(one(rng.choice(clips))))
        await asyncio.sleep(rng.expovariate(rate))
    await asyncio.gather(*tasks)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="6,9,12", help="decodes per second offered, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="ASR_MAX_BATCH of the batched runs")
    args = parser.parse_args()

    import django

    django.setup()
    import numpy as np
    from django.conf import settings

    from media_pipeline.asr_batch import ASRBatcher
    from media_pipeline.engine_pool import asr_options
    from media_pipeline.engines import get_asr_engine
    from media_pipeline.executor import BoundedExecutor
    from media_pipeline.native_threads import limit_blas_threads
    from tests.audio_fixtures import silence, speak

    limit_blas_threads(1)
    engine = get_asr_engine("faster_whisper", **asr_options())
    clips = [np.concatenate([silence(300), speak(text), silence(200)]) for text in SENTENCES]
    engine.transcribe(clips[0], language="en")  # loaded and warm
    print(f"ASR batching bench: tiny.en, {settings.ENGINE_WORKERS} ASR threads, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, {args.seconds:.0f} s per run")
    print("| decodes/s offered | ASR_MAX_BATCH | decodes | latency p50 / p95 (ms) | CPU per decode (ms) | mean batch |")
    print("|---|---|---|---|---|---|")
    for rate in (float(r) for r in args.rates.split(",")):
        for run in range(args.runs):
            for max_batch in (1, args.batch):
                pool = BoundedExecutor("asr-bench", max_workers=settings.ENGINE_WORKERS, max_queue=256, block=True)
                batcher = ASRBatcher(pool, max_batch=max_batch)
                cpu0 = cpu_seconds()
                latencies = asyncio.run(offered(batcher, engine, clips, rate=rate, seconds=args.seconds,
                                                seed=run * 1000 + int(rate)))
                cpu = cpu_seconds() - cpu0
                pool.shutdown()
                mean_batch = batcher.decodes / batcher.batches if batcher.batches else 1.0
                print(f"| {rate:g} | {max_batch} | {len(latencies)} | {1000 * statistics.median(latencies):.0f} / "
                      f"{1000 * percentile(latencies, 0.95):.0f} | {1000 * cpu / len(latencies):.0f} | "
                      f"{mean_batch:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
