"""The engine pool: the only process-wide models and executors, whichever transport asks first.

One offline ASR model (faster-whisper with the short decode window), one VAD model, one eSpeak
library per process; every blocking call goes through a :class:`BoundedExecutor` so no engine
ever runs on an event loop. ASR gets ``ENGINE_WORKERS`` threads (CTranslate2 releases the GIL);
VAD and TTS get one thread each (Silero is ~4 ms per second of audio; eSpeak is serialised by its
own lock anyway); ``decode`` (``CHUNK_DECODE_WORKERS`` threads) decodes and VAD-scores the audio
chunk path's flushes. A WebRTC call and a chunked session in the same process therefore share one
model and queue on the same executors, so a final is served in order of end of speech whatever
the transport. The end-of-turn model (Smart Turn, ``media_pipeline.turns``) is one more
process-wide model: listening starts it on ``turn_pool`` (one thread) when a pause begins and
collects the answer from inside VAD scoring at the ask point, or asks it there directly, on the
VAD executor (WebRTC) or the decode executor (chunks); never on a loop. ``turn`` is None when
``TURN_DETECTOR`` resolves to the fixed-silence rule.

Each call or session then gets its own :class:`Engines` view (:func:`call_engines`): the same
executors and VAD, with the ASR and TTS its scenario selects (scenario override > settings >
offline default, via :func:`media_pipeline.engines.choice.engines_for_scenario`). A cloud engine
comes wrapped with the process's offline engine behind it, so a cloud outage costs a call its
cloud voice, not the call; the wrapper's failure reports become protocol ``error`` messages
through the call's ``on_error``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings

from lingecho.gc_pauses import freeze_loaded_objects
from lingecho.priority import lower_current_thread_priority
from lingecho.resilience.failures import EngineFailure, FailureListener
from media_pipeline import host_capacity
from media_pipeline.asr_batch import ASRBatcher
from media_pipeline.contract import ErrorCode
from media_pipeline.engines import get_asr_engine, get_tts_engine, get_vad_model
from media_pipeline.engines.choice import OFFLINE_ASR, OFFLINE_TTS, engines_for_scenario
from media_pipeline.executor import BoundedExecutor
from media_pipeline.native_threads import limit_blas_threads
from media_pipeline.turns import load_turn_detector
from roleplay.audio_format import SAMPLE_RATE as RATE

log = logging.getLogger(__name__)

# (code, message, details) -> None, called on the event loop: the pipeline's ``on_error``.
ErrorSink = Callable[[ErrorCode, str, dict[str, Any]], None]


@dataclass
class Engines:
    asr: Any
    tts: Any
    vad: Any
    asr_pool: BoundedExecutor
    vad_pool: BoundedExecutor
    tts_pool: BoundedExecutor
    decode_pool: BoundedExecutor  # the chunk path's decode + VAD of one flush
    turn: Any = None  # the end-of-turn detector (media_pipeline.turns), None = fixed silence
    turn_pool: BoundedExecutor | None = None  # its early starts, at the beginning of a pause
    asr_batcher: ASRBatcher | None = None  # live decodes that must wait, batched on asr_pool

    async def transcribe(self, audio: np.ndarray, *, language: str) -> Any:
        """A live decode with ``asr`` on ``asr_pool``, batched with other calls' when it has to wait."""
        if self.asr_batcher is None:
            return await self.asr_pool.run(self.asr.transcribe, audio, language=language)
        return await self.asr_batcher.transcribe(self.asr, audio, language=language)

    def asr_idle(self) -> bool:
        """True when an interim decode would not delay anything: no ASR job running or queued.

        Not merely "a free ASR thread": each decode already uses ``ASR_CPU_THREADS`` threads on a
        box with two cores, so an interim started beside a final takes half the cores from it and
        the final (the turn everyone waits for) takes about twice as long.
        """
        waiting = self.asr_batcher.waiting if self.asr_batcher is not None else 0
        return self.asr_pool.queued == 0 and self.asr_pool.running == 0 and waiting == 0


_engines: Engines | None = None
_lock = threading.Lock()


def asr_options() -> dict[str, Any]:
    """Options of the process's offline (faster-whisper) model: it serves offline calls and backs cloud ones."""
    return {
        "model_path": settings.ASR_MODEL_PATH or None,
        "cpu_threads": settings.ASR_CPU_THREADS,
        # One CTranslate2 replica per executor thread: with one, concurrent decodes queue on it
        # (and on any other user of the same model object, such as an in-process after-call job).
        "num_workers": settings.ENGINE_WORKERS,
        "window_s": float(getattr(settings, "ASR_WINDOW_SECONDS", 10.0)),
    }


def get_engines() -> Engines:
    """The process-wide offline engines and executors, created (the ASR model loaded) on first use."""
    global _engines
    with _lock:
        if _engines is None:
            # numpy's BLAS worker would spin at normal priority after every feature computation
            # (each ASR decode, each Smart Turn run): one thread, no spinner (native_threads).
            limit_blas_threads(1)
            timeout = settings.ENGINE_TIMEOUT_SECONDS
            _engines = Engines(
                asr=get_asr_engine(OFFLINE_ASR, **asr_options()),
                tts=get_tts_engine(OFFLINE_TTS),
                vad=get_vad_model(),
                asr_pool=BoundedExecutor(
                    "asr", max_workers=settings.ENGINE_WORKERS, max_queue=settings.ENGINE_QUEUE_DEPTH,
                    block=True, timeout=timeout,
                ),
                vad_pool=BoundedExecutor("vad", max_workers=1, max_queue=256, block=True, timeout=timeout),
                tts_pool=BoundedExecutor("tts", max_workers=1, max_queue=64, block=True, timeout=timeout),
                decode_pool=BoundedExecutor(
                    "chunk-decode", max_workers=settings.CHUNK_DECODE_WORKERS,
                    max_queue=settings.ENGINE_QUEUE_DEPTH * 4, block=True, timeout=timeout,
                ),
                turn=load_turn_detector(),
                # Never queue behind a backlog: a job that cannot start now is asked at the ask point.
                turn_pool=BoundedExecutor("turn", max_workers=1, max_queue=2, block=False),
            )
            _engines.asr_batcher = ASRBatcher(_engines.asr_pool, max_batch=settings.ASR_MAX_BATCH)
        return _engines


def failure_listener(on_error: ErrorSink, loop: asyncio.AbstractEventLoop | None = None) -> FailureListener:
    """Turn the engine wrappers' failure reports into ``on_error(code, message, details)`` on ``loop``.

    Reports come from the executor threads the engines run in, so they hop onto the call's loop.
    Brain failures carry no protocol code (the scripted buyer just carries on) and are not sent.
    """
    loop = loop or asyncio.get_running_loop()

    def report(event: EngineFailure) -> None:
        if event.code is None:
            return
        details = {**event.details(), "kind": event.kind}
        if event.fallback is None:
            text = f"{event.message}. No offline engine can take over; you can type your reply."
        else:
            text = f"{event.message}. Continuing with the offline engine ({event.fallback})."
        try:
            loop.call_soon_threadsafe(on_error, event.code, text, details)
        except RuntimeError:  # the loop is closed: the call is over, nobody to tell
            pass

    return report


def call_engines(scenario: Any, *, on_error: ErrorSink | None = None, base: Engines | None = None) -> Engines:
    """One call's engines: the scenario's ASR/TTS over the process's executors, VAD and offline models.

    ``scenario``: anything with the override fields (``asr_engine``, ``tts_engine``), a Scenario
    or a session's ``roleplay.selectors.CallFacts``. ``base`` (default: the process's engines) supplies
    everything shared; an offline selection returns ``base``'s own engines, so an offline call
    costs nothing extra.
    """
    base = base or get_engines()
    on_failure = failure_listener(on_error) if on_error is not None else None
    selected = engines_for_scenario(scenario, on_failure=on_failure, offline_asr_engine=base.asr,
                                    offline_tts_engine=base.tts)
    return dataclasses.replace(base, asr=selected.asr, tts=selected.tts)


_warm = threading.Lock()
_warmed = False
_warm_up_thread: threading.Thread | None = None


def warm_up() -> None:
    """Load the models now so the first call's first turn does not pay for it (blocking, once).

    Concurrent callers wait for the one doing it; a failed warm-up is tried again next time.
    """
    global _warmed
    with _warm:
        if _warmed:
            return
        engines = get_engines()
        engines.asr.warm_up()
        if settings.MAX_CALLS_PER_WORKER is None:  # "auto": size the call limit to this host
            host_capacity.measure(engines.asr)
        list(engines.tts.synthesize("Hello.", language="en"))
        engines.vad.create_stream()
        if engines.turn is not None:
            engines.turn.predict(np.zeros(RATE, dtype=np.float32))  # onnxruntime's first run plans memory
        _warmed = True


def start_warm_up() -> None:
    """:func:`warm_up` on a background thread, once (a media worker's boot, a chunk session's start)."""
    global _warm_up_thread

    def run() -> None:
        lower_current_thread_priority()  # native pools the models start here inherit it
        try:
            warm_up()
            freeze_loaded_objects()  # the models' objects live as long as the process
        except Exception:  # noqa: BLE001 - the first turn will load (and report) it instead
            log.exception("engine warm-up failed")

    with _lock:
        if _warm_up_thread is not None:
            return
        _warm_up_thread = threading.Thread(target=run, name="engine-warm-up", daemon=True)
        _warm_up_thread.start()


def warm_up_settle(timeout: float) -> bool:
    """Wait up to ``timeout`` s for a warm-up in progress; True when none is running (any more).

    Why a shutdown waits for it: a process that exits while the warm-up thread is inside a model
    library's loading code aborts (CTranslate2's "terminate called without an active exception",
    exit status -6) instead of exiting 0, e.g. a server stopped a second after it started.
    """
    thread = _warm_up_thread
    if thread is None or not thread.is_alive():
        return True
    thread.join(max(0.0, timeout))
    return not thread.is_alive()
