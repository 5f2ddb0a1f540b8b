"""Keeping a call's voice alive when a cloud ASR or TTS misbehaves: the offline engine takes over.

A cloud engine comes wrapped in ``FallbackASR``/``FallbackTTS`` with the offline engine behind it
(:mod:`media_pipeline.engines.choice`). Momentary failures are retried (only before any output:
re-sending a half-spoken sentence would be worse than the failure), failures in a row open the
engine's breaker, and either way the offline engine does the work and one
:class:`~lingecho.resilience.failures.EngineFailure` is reported, so the pipeline can tell the
client (``ERR_ASR_FAILED``, ``ERR_TTS_FAILED``) while the call goes on. Retry, breaker and
redaction are engine-neutral and live in :mod:`lingecho.resilience`.

What cannot be absorbed is raised as the interface's own error (``ASRError``/``TTSError``): a
zh-CN utterance whose cloud ASR died has no offline model to go to (tiny.en is English-only),
so the turn is lost as voice and the trainee continues by text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lingecho.resilience.breaker import CircuitBreaker, breaker_for
from lingecho.resilience.errors import is_retryable
from lingecho.resilience.failures import FailureListener, FailureReporter
from lingecho.resilience.redaction import redact
from lingecho.resilience.retry import RetryPolicy, call_with_retries, default_policy
from media_pipeline.contract import ErrorCode
from media_pipeline.engines.asr.base import ASREngine, ASRError, Transcript
from media_pipeline.engines.tts.base import TTSEngine, TTSError
from media_pipeline.engines.tts.text import sentence_split
from media_pipeline.engines.tts.voices import offline_voice

log = logging.getLogger(__name__)


# --- ASR --------------------------------------------------------------------------------------

class FallbackASR(ASREngine):
    """A cloud ASR with the offline one behind it (``fallback`` None: nothing behind it)."""

    def __init__(self, primary: ASREngine, fallback: ASREngine | None, *, breaker: CircuitBreaker | None = None,
                 policy: RetryPolicy | None = None, on_failure: FailureListener | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self.breaker = breaker or breaker_for(f"asr:{primary.name}")
        self.policy = policy or default_policy()
        self.sleep = sleep
        self._reporter = FailureReporter("asr", primary.name, on_failure, code=ErrorCode.ASR_FAILED)

    def supports_language(self, language: str) -> bool:
        return self.primary.supports_language(language) or self._fallback_for(language) is not None

    def warm_up(self) -> None:
        if self.fallback is not None:
            self.fallback.warm_up()  # the cloud side has nothing to load; the fallback must be ready

    def _fallback_for(self, language: str) -> ASREngine | None:
        if self.fallback is not None and self.fallback.supports_language(language):
            return self.fallback
        return None

    def transcribe(self, audio: np.ndarray, *, language: str, word_timestamps: bool = False,
                   beam_size: int = 1) -> Transcript:
        fallback = self._fallback_for(language)
        if self.primary.supports_language(language) and self.breaker.allow():
            try:
                result = call_with_retries(
                    lambda: self.primary.transcribe(
                        audio, language=language, word_timestamps=word_timestamps, beam_size=beam_size
                    ),
                    self.policy, sleep=self.sleep, what=f"ASR {self.primary.name}",
                )
            except Exception as exc:  # noqa: BLE001 - any cloud failure must land on the fallback
                self.breaker.record_failure()
                event = self._reporter.failure(exc, fallback.name if fallback else None)
                if fallback is None:
                    raise ASRError(f"{event.message}; no offline ASR model for {language!r}") from None
                self._reporter.report(event)
            else:
                self.breaker.record_success()
                return result
        elif fallback is None:
            raise ASRError(
                f"ASR engine {self.primary.name} is unavailable (circuit open) and no offline model "
                f"supports {language!r}"
            )
        return fallback.transcribe(audio, language=language, word_timestamps=word_timestamps, beam_size=beam_size)


# --- TTS --------------------------------------------------------------------------------------

class FallbackTTS(TTSEngine):
    """A cloud TTS with the offline one behind it, speaking at the cloud engine's sample rate.

    Text is synthesised sentence by sentence: a failure before a sentence's first audio falls
    back for that sentence (nothing is heard twice); a failure after some audio cuts that
    sentence short, and the rest of the text is spoken offline. Fallback audio is resampled so
    the caller sees one rate for the whole call.
    """

    def __init__(self, primary: TTSEngine, fallback: TTSEngine | None, *, breaker: CircuitBreaker | None = None,
                 policy: RetryPolicy | None = None, on_failure: FailureListener | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self.breaker = breaker or breaker_for(f"tts:{primary.name}")
        self.policy = policy or default_policy()
        self.sleep = sleep
        self._reporter = FailureReporter("tts", primary.name, on_failure, code=ErrorCode.TTS_FAILED)

    @property
    def sample_rate(self) -> int:
        return self.primary.sample_rate

    def synthesize(self, text: str, *, voice: str = "", language: str = "en", speed: float = 1.0,
                   pitch: float = 1.0) -> Iterator[np.ndarray]:
        sentences = sentence_split(text, language) or ([text] if text.strip() else [])
        for i, sentence in enumerate(sentences):
            if not self.breaker.allow():
                yield from self._offline(" ".join(sentences[i:]) if not _cjk(language) else "".join(sentences[i:]),
                                         voice=voice, language=language, speed=speed, pitch=pitch)
                return
            produced = False
            try:
                for chunk in self._primary_with_retries(sentence, voice, language, speed, pitch):
                    produced = True
                    yield chunk
            except Exception as exc:  # noqa: BLE001 - any cloud failure must land on the fallback
                self.breaker.record_failure()
                event = self._reporter.failure(exc, self.fallback.name if self.fallback else None)
                if self.fallback is None:
                    raise TTSError(event.message) from None
                self._reporter.report(event)
                rest = sentences[i + 1:] if produced else sentences[i:]
                joiner = "" if _cjk(language) else " "
                yield from self._offline(joiner.join(rest), voice=voice, language=language, speed=speed, pitch=pitch)
                return
            self.breaker.record_success()

    def _primary_with_retries(self, sentence: str, voice: str, language: str, speed: float,
                              pitch: float) -> Iterator[np.ndarray]:
        """Retry only until the first chunk: after that a retry would repeat audible speech."""
        delays = self.policy.delays()
        for attempt in range(len(delays) + 1):
            produced = False
            try:
                for chunk in self.primary.synthesize(sentence, voice=voice, language=language, speed=speed,
                                                     pitch=pitch):
                    produced = True
                    yield chunk
                return
            except Exception as exc:
                if produced or attempt >= len(delays) or not is_retryable(exc):
                    raise
                log.info("TTS %s failed (%s), retry %d", self.primary.name, redact(str(exc)), attempt + 1)
                self.sleep(delays[attempt])

    def _offline(self, text: str, **kwargs: Any) -> Iterator[np.ndarray]:
        if not text.strip():
            return
        assert self.fallback is not None
        kwargs["voice"] = offline_voice(kwargs.get("voice", ""))
        if self.fallback.sample_rate == self.sample_rate:
            yield from self.fallback.synthesize(text, **kwargs)
            return
        from media_pipeline.audio import resampled_pcm16

        yield from resampled_pcm16(self.fallback.synthesize(text, **kwargs), self.fallback.sample_rate,
                                   self.sample_rate)


def _cjk(language: str) -> bool:
    return (language or "").lower().startswith(("zh", "cmn", "yue", "ja", "ko"))
