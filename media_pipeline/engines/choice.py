"""Which ASR and TTS a call uses: the scenario's override, else the settings, else the offline default.

A cloud engine always comes wrapped in its ``Fallback*`` with the offline engine behind it, so
the pipeline never needs to know whether the engine in hand is local or remote; an offline
engine comes bare. A name that does not resolve (a typo in the admin) is logged and replaced by
the offline default: a misconfigured scenario must not stop trainees from practising.

The ASR fallback is the configured faster-whisper model. tiny.en (the bundled default) cannot
do Chinese, so for a zh-CN call whose cloud ASR fails there is nothing behind it: the wrapper
raises ``ASRError`` (ERR_ASR_FAILED) and the trainee continues by typing.

The buyer brain is chosen the same way by the conversation (``roleplay.dialog.choice``): the
media pipeline never picks a brain.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from lingecho.resilience.breaker import breaker_for
from lingecho.resilience.failures import FailureListener
from media_pipeline.engines import ASR_ENGINES, TTS_ENGINES, get_asr_engine, get_tts_engine
from media_pipeline.engines.asr.base import ASREngine
from media_pipeline.engines.fallback import FallbackASR, FallbackTTS
from media_pipeline.engines.tts.base import TTSEngine

log = logging.getLogger(__name__)

OFFLINE_ASR = "faster_whisper"
OFFLINE_TTS = "espeak"


def _settings(name: str, default: str) -> str:
    from django.conf import settings

    return getattr(settings, name, default) or default


def resolve_name(override: str | None, setting: str, offline: str) -> str:
    """scenario override > settings > offline default."""
    return (override or "").strip() or _settings(setting, offline).strip() or offline


_cloud: dict[tuple[str, str], Any] = {}
_cloud_lock = threading.Lock()


def _shared(kind: str, name: str) -> Any:
    """One instance per cloud engine per process: wrappers are per call, HTTP connections are shared."""
    with _cloud_lock:
        engine = _cloud.get((kind, name))
        if engine is None:
            engine = _cloud[(kind, name)] = (get_asr_engine if kind == "asr" else get_tts_engine)(name)
        return engine


def pin_shared_engine(kind: str, name: str, engine: Any) -> None:
    """Use ``engine`` as this process's ``kind`` ("asr"/"tts") engine called ``name``.

    For tests and benches that point ASR and TTS of one provider at different endpoints (two
    local fakes, so one can be killed mid-call); :func:`forget_shared_engines` undoes it.
    """
    with _cloud_lock:
        _cloud[(kind, name)] = engine


def forget_shared_engines() -> None:
    """Drop the cached cloud engines (tests; after changing their settings at run time)."""
    with _cloud_lock:
        _cloud.clear()


def offline_asr() -> ASREngine:
    from django.conf import settings

    return get_asr_engine(
        OFFLINE_ASR,
        model_path=getattr(settings, "ASR_MODEL_PATH", "") or None,
        cpu_threads=getattr(settings, "ASR_CPU_THREADS", 2),
    )


def offline_tts() -> TTSEngine:
    return get_tts_engine(OFFLINE_TTS)


def select_asr(override: str | None = None, *, on_failure: FailureListener | None = None,
               offline: ASREngine | None = None) -> ASREngine:
    """``offline``: the process's already-loaded offline engine, reused instead of a new one."""
    name = resolve_name(override, "ASR_ENGINE", OFFLINE_ASR)
    if name == OFFLINE_ASR or name not in ASR_ENGINES:
        if name not in ASR_ENGINES:
            log.warning("unknown ASR engine %r; using %s", name, OFFLINE_ASR)
        return offline or offline_asr()
    fallback = offline
    if fallback is None or fallback.name != OFFLINE_ASR:
        try:
            fallback = offline_asr()
        except Exception as exc:  # noqa: BLE001 - e.g. ASR_MODEL_PATH points nowhere: the cloud engine runs alone
            log.warning("offline ASR unavailable as a fallback: %s", exc)
            fallback = None
    return FallbackASR(_shared("asr", name), fallback, breaker=breaker_for(f"asr:{name}"), on_failure=on_failure)


def select_tts(override: str | None = None, *, on_failure: FailureListener | None = None,
               offline: TTSEngine | None = None) -> TTSEngine:
    name = resolve_name(override, "TTS_ENGINE", OFFLINE_TTS)
    if name == OFFLINE_TTS or name not in TTS_ENGINES:
        if name not in TTS_ENGINES:
            log.warning("unknown TTS engine %r; using %s", name, OFFLINE_TTS)
        return offline or offline_tts()
    fallback = offline if offline is not None and offline.name == OFFLINE_TTS else offline_tts()
    return FallbackTTS(_shared("tts", name), fallback, breaker=breaker_for(f"tts:{name}"), on_failure=on_failure)


@dataclass
class CallEngines:
    asr: ASREngine
    tts: TTSEngine

    @property
    def names(self) -> dict[str, str]:
        return {"asr": self.asr.name, "tts": self.tts.name}


def engines_for_scenario(scenario: Any = None, *, on_failure: FailureListener | None = None,
                         offline_asr_engine: ASREngine | None = None,
                         offline_tts_engine: TTSEngine | None = None) -> CallEngines:
    """The speech engines for one call. ``scenario``: a Scenario (or anything with the override fields).

    Cheap to call once per call: cloud engines and breakers are shared per process, and the
    process's loaded offline engines can be passed in. ``on_failure`` receives every
    :class:`EngineFailure` the call survives; the pipeline turns one with a ``code`` into a
    protocol ``error`` message (and still sends the reply as ``text_response``).
    """
    return CallEngines(
        asr=select_asr(getattr(scenario, "asr_engine", ""), on_failure=on_failure, offline=offline_asr_engine),
        tts=select_tts(getattr(scenario, "tts_engine", ""), on_failure=on_failure, offline=offline_tts_engine),
    )
