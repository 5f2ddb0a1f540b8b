"""Live ASR decodes of several calls in one CTranslate2 batch when they have to wait anyway.

Each decode (a final, a speculative final, an interim, a barge-in check) used to be one job on
the ASR executor. With ``ENGINE_WORKERS`` jobs running, the next ones queued and ran one by one.
Here a decode that cannot start at once waits in one queue, and the next free executor thread
takes every waiting decode of the same engine and language (up to ``ASR_MAX_BATCH``) and runs
them as one batch (``FasterWhisperEngine.transcribe_batch``): one encoder pass and one greedy
decoder loop for all of them. Offline, a batch of two or four tiny.en decodes cost 5–20 % less
CPU than the same decodes one by one, and under load the backlog clears sooner
(``bench/asr_batch.py``: p95 roughly halved at 9–12 decodes a second on two cores).

Nothing waits for a batch to fill: with a free thread a decode starts at once, alone, exactly
as before, so a single call's latency is unchanged; decodes waiting together are shared out
between the executor's threads, so both cores keep working. Only the engines that can batch (the
short-window path of the offline model) go through the queue; any other decode (a cloud
engine, a turn longer than the window) runs as its own job on the executor.

The queue is bounded by the executor's capacity: past it a decode is refused with
``EngineBusy``, as the executor itself would refuse it.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from media_pipeline import metrics
from media_pipeline.engines.asr.base import Transcript
from media_pipeline.executor import BoundedExecutor, EngineBusy, Outcome, post_outcomes


@dataclass
class _Decode:
    engine: Any
    audio: np.ndarray
    language: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Transcript]


@dataclass
class _Claim:
    """One drain job's start, settled under the batcher's lock: run by its thread or withdrawn by its starter."""

    started: bool = False
    withdrawn: bool = False


class ASRBatcher:
    """One queue of batchable decodes for a process, drained by at most ``pool.max_workers`` jobs on ``pool``."""

    def __init__(self, pool: BoundedExecutor, *, max_batch: int) -> None:
        self.pool = pool
        self.max_batch = max(1, max_batch)
        self.capacity = pool.capacity
        self._queue: collections.deque[_Decode] = collections.deque()
        self._lock = threading.Lock()
        self._drains = 0
        self.batches = 0  # decode jobs run (tests and diagnostics: decodes / batches is the batching)
        self.decodes = 0

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def transcribe(self, engine: Any, audio: np.ndarray, *, language: str) -> Transcript:
        """``engine.transcribe(audio, language=language)`` on the executor, batched with others when it has to wait."""
        windowed = getattr(engine, "windowed", None)
        if self.max_batch < 2 or windowed is None or not windowed(audio, language):
            return await self.pool.run(engine.transcribe, audio, language=language)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Transcript] = loop.create_future()
        with self._lock:
            if len(self._queue) >= self.capacity:
                raise EngineBusy("asr", self.capacity)
            self._queue.append(_Decode(engine, audio, language, loop, future))
            start = self._drains < self.pool.max_workers
            if start:
                self._drains += 1
        if start:
            # Its own task: the drain must run (and deliver to every waiting call) even if the call
            # that started it goes away meanwhile.
            loop.create_task(self._run_drain(), name="asr-batch-drain")
        return await future

    async def _run_drain(self) -> None:
        claim = _Claim()
        try:
            await self.pool.run(self._drain, claim)
        except BaseException as exc:  # noqa: BLE001 - no thread to run on: fail what would have waited for it
            with self._lock:
                if claim.started:  # it runs (or ran) on its thread, which counts itself out
                    stranded = []
                else:
                    claim.withdrawn = True
                    self._drains -= 1
                    stranded = list(self._queue) if self._drains == 0 else []
                    if stranded:
                        self._queue.clear()
            for decode in stranded:
                post_outcomes(decode.loop, [(decode.future, False, exc)])
            if not isinstance(exc, Exception):
                raise

    def _next_batch(self) -> list[_Decode]:
        """The oldest waiting decode and more of the same engine and language: this drain's share of
        the queue (the other drains take theirs, side by side on the other cores), at most ``max_batch``."""
        share = min(self.max_batch, -(-len(self._queue) // max(1, self._drains)))
        first = self._queue.popleft()
        batch, others = [first], []
        while self._queue and len(batch) < share:
            decode = self._queue.popleft()
            same = decode.engine is first.engine and decode.language == first.language
            (batch if same else others).append(decode)
        self._queue.extendleft(reversed(others))
        return batch

    def _drain(self, claim: _Claim) -> None:
        """Decode waiting batches until the queue is empty (on an executor thread)."""
        with self._lock:
            if claim.withdrawn:  # its starter gave up waiting for this thread and counted it out
                return
            claim.started = True
        while True:
            with self._lock:
                if not self._queue:
                    self._drains -= 1
                    return
                batch = self._next_batch()
            batch = [decode for decode in batch if not decode.future.cancelled()]
            if not batch:
                continue
            self.batches += 1
            self.decodes += len(batch)
            metrics.ASR_BATCH_SIZE.observe(len(batch))
            outcomes = self._decode(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
            for decode, (ok, value) in zip(batch, outcomes, strict=True):
                by_loop.setdefault(decode.loop, []).append((decode.future, ok, value))
            for loop, results in by_loop.items():
                post_outcomes(loop, results)

    @staticmethod
    def _decode(batch: list[_Decode]) -> list[tuple[bool, Any]]:
        """(ok, transcript or exception) per decode. A batch that fails is decoded again one by one,
        so one call's bad audio fails only that call's turn."""
        first = batch[0]
        if len(batch) > 1:
            try:
                transcripts = first.engine.transcribe_batch([d.audio for d in batch], language=first.language)
                return [(True, transcript) for transcript in transcripts]
            except Exception:  # noqa: BLE001 - find out whose it was, below
                pass
        outcomes: list[tuple[bool, Any]] = []
        for decode in batch:
            try:
                outcomes.append((True, decode.engine.transcribe(decode.audio, language=decode.language)))
            except Exception as exc:  # noqa: BLE001 - delivered to the call that asked
                outcomes.append((False, exc))
        return outcomes


__all__ = ["ASRBatcher"]
