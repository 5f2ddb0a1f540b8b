"""Live decodes of several calls batched when they have to wait (media_pipeline.asr_batch), with the
real tiny.en engine on the 10 s window the calls use and speech synthesised at test time."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from media_pipeline.asr_batch import ASRBatcher
from media_pipeline.engines import get_asr_engine
from media_pipeline.executor import BoundedExecutor, EngineBusy
from tests.audio_fixtures import silence, speak

SENTENCES = {
    "Please send me the pricing proposal by Friday.": ("pricing", "proposal", "friday"),
    "Our finance team closes the books every month.": ("finance", "team", "month"),
    "How many invoices do you process each week?": ("invoices", "week"),
    "We could start a pilot in the spring.": ("pilot", "spring"),
}


@pytest.fixture(scope="module")
def live():
    from media_pipeline.engine_pool import asr_options

    return get_asr_engine("faster_whisper", **asr_options())


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [np.concatenate([silence(300), speak(text), silence(200)]) for text in SENTENCES]


async def _busy_then(pool: BoundedExecutor, start: list) -> list:
    """Run ``start`` (coroutines) while every thread of ``pool`` is held, then let them go."""
    gate = threading.Event()
    holders = [pool.submit(gate.wait, 30) for _ in range(pool.max_workers)]
    tasks = [asyncio.ensure_future(coro) for coro in start]
    await asyncio.sleep(0.1)
    gate.set()
    for holder in holders:
        holder.result(timeout=30)
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_decodes_that_wait_run_as_one_batch_with_the_words_of_each(live, clips):
    async def run() -> tuple[list, ASRBatcher]:
        with BoundedExecutor("asr-batch-test", max_workers=1, max_queue=8, block=True, timeout=60) as pool:
            batcher = ASRBatcher(pool, max_batch=4)
            got = await _busy_then(pool, [batcher.transcribe(live, clip, language="en") for clip in clips])
            return got, batcher

    got, batcher = asyncio.run(run())
    assert (batcher.batches, batcher.decodes) == (1, 4)
    for transcript, words in zip(got, SENTENCES.values(), strict=True):
        assert not isinstance(transcript, BaseException), transcript
        text = transcript.text.lower()
        assert all(word in text for word in words), (text, words)
        assert transcript.ending is not None and 0.3 < transcript.confidence <= 1.0


def test_a_batch_gives_what_each_decode_alone_gives(live, clips):
    alone = [live.transcribe(clip, language="en") for clip in clips]
    batched = live.transcribe_batch(clips, language="en")
    assert [t.text for t in batched] == [t.text for t in alone]
    for mine, single in zip(batched, alone, strict=True):
        assert mine.confidence == pytest.approx(single.confidence, abs=0.05)


def test_a_decode_with_a_free_thread_starts_at_once_alone(live, clips):
    async def run() -> ASRBatcher:
        with BoundedExecutor("asr-batch-free", max_workers=2, max_queue=8, block=True, timeout=60) as pool:
            batcher = ASRBatcher(pool, max_batch=4)
            await asyncio.gather(*(batcher.transcribe(live, clip, language="en") for clip in clips[:2]))
            return batcher

    batcher = asyncio.run(run())
    assert (batcher.batches, batcher.decodes) == (2, 2)  # two free threads: two decodes side by side


def test_what_cannot_batch_runs_as_its_own_job(live, clips):
    """A turn longer than the window, and an engine without the short-window path, skip the queue."""
    long_turn = np.concatenate([clips[0]] * 4)  # ~12 s > the 10 s window

    class Cloud:
        def transcribe(self, audio, *, language):
            return f"cloud {len(audio)}"

    async def run() -> tuple[list, ASRBatcher]:
        with BoundedExecutor("asr-batch-own", max_workers=1, max_queue=8, block=True, timeout=60) as pool:
            batcher = ASRBatcher(pool, max_batch=4)
            got = await _busy_then(pool, [batcher.transcribe(live, long_turn, language="en"),
                                          batcher.transcribe(Cloud(), clips[1], language="zh-CN")])
            return got, batcher

    got, batcher = asyncio.run(run())
    assert batcher.decodes == 0
    assert "pricing" in got[0].text.lower() and got[1] == f"cloud {len(clips[1])}"


def test_a_full_queue_refuses_the_decode_and_bad_audio_fails_only_its_own_call(live, clips):
    async def run() -> tuple[list, BaseException | None]:
        with BoundedExecutor("asr-batch-full", max_workers=1, max_queue=1, block=True, timeout=60) as pool:
            batcher = ASRBatcher(pool, max_batch=4)  # capacity 2
            broken = clips[0].copy()
            broken[100] = np.nan
            gate = threading.Event()
            holder = pool.submit(gate.wait, 30)
            waiting = [asyncio.ensure_future(batcher.transcribe(live, audio, language="en"))
                       for audio in (clips[1], broken)]
            await asyncio.sleep(0.05)
            refused = None
            try:
                await batcher.transcribe(live, clips[2], language="en")
            except EngineBusy as exc:
                refused = exc
            gate.set()
            holder.result(timeout=30)
            return await asyncio.gather(*waiting, return_exceptions=True), refused

    got, refused = asyncio.run(run())
    assert isinstance(refused, EngineBusy)
    # The bad clip fails its batch, which is decoded again one by one: only its caller hears why.
    assert "finance" in got[0].text.lower(), got
    assert isinstance(got[1], ValueError) and "NaN" in str(got[1]), got


def test_the_engine_pool_sends_live_decodes_through_its_batcher():
    from media_pipeline import engine_pool

    engines = engine_pool.get_engines()  # process-wide: other tests' calls may be decoding on it too
    assert engines.asr_batcher is not None and engines.asr_batcher.pool is engines.asr_pool
    before = engines.asr_batcher.decodes
    started = time.monotonic()
    transcript = asyncio.run(engines.transcribe(speak("We could start a pilot in the spring."), language="en"))
    assert "pilot" in transcript.text.lower() and time.monotonic() - started < 30
    assert engines.asr_batcher.decodes > before


def test_decodes_waiting_in_the_batcher_keep_interims_off():
    """``asr_idle`` (interims only on idle ASR) counts decodes waiting in the batcher as work."""
    from media_pipeline.engine_pool import Engines

    with BoundedExecutor("asr-idle", max_workers=1, max_queue=4, block=True, timeout=30) as pool:
        batcher = ASRBatcher(pool, max_batch=4)
        engines = Engines(asr=None, tts=None, vad=None, asr_pool=pool, vad_pool=pool, tts_pool=pool,
                          decode_pool=pool, asr_batcher=batcher)
        assert engines.asr_idle()
        batcher._queue.append(object())  # noqa: SLF001 - one decode waiting, no thread busy yet
        assert not engines.asr_idle()
