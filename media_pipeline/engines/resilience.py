"""Keeping a call alive when a cloud engine misbehaves: retries, a breaker, and an offline fallback.

A cloud engine fails in three ways that matter to a live call: it is slow (timeout), it is
briefly sick (5xx, 429, a dropped socket), or it is wrong for good (bad key, unknown model).
The first two are retried with exponential backoff, but only *before* any output has been
produced (re-sending a half-spoken sentence would be worse than the failure). Failures in a
row open a per-engine circuit breaker, so the next turns skip the dead service instead of each
paying a timeout. Either way the ``Fallback*`` wrappers hand the work to the offline engine and
report one :class:`EngineFailure` so the pipeline can tell the client (``ERR_ASR_FAILED``,
``ERR_TTS_FAILED``) while the call goes on.

What cannot be absorbed is raised as the interface's own error (``ASRError``/``TTSError``): a
zh-CN utterance whose cloud ASR died has no offline model to go to (tiny.en is English-only),
so the turn is lost as voice and the trainee continues by text.

Keys never reach logs: adapters build messages from the provider's error text, and
:func:`redact` scrubs anything that looks like a credential before it is logged or reported.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from media_pipeline.contract import ErrorCode
from media_pipeline.engines.asr.base import ASREngine, ASRError, Transcript
from media_pipeline.engines.tts.base import TTSEngine, TTSError
from media_pipeline.engines.tts.text import sentence_split

log = logging.getLogger(__name__)

T = TypeVar("T")

ERROR_CODES = {"asr": ErrorCode.ASR_FAILED, "tts": ErrorCode.TTS_FAILED, "brain": None}


# --- errors and redaction ---------------------------------------------------------------------

class BrainError(RuntimeError):
    """A cloud buyer brain failed (the scripted brain takes over; no protocol error of its own)."""


def mark(exc: BaseException, *, retryable: bool, status: int | None = None, timeout: bool = False) -> BaseException:
    """Tag an adapter's exception with how to treat it; returns it for ``raise mark(...)``."""
    exc.retryable = retryable  # type: ignore[attr-defined]
    exc.status = status  # type: ignore[attr-defined]
    exc.timeout = timeout  # type: ignore[attr-defined]
    return exc


def retryable_status(status: int) -> bool:
    """429 and 5xx are the provider's momentary trouble; other 4xx are ours and will repeat."""
    return status == 429 or status >= 500


def is_timeout(exc: BaseException) -> bool:
    if getattr(exc, "timeout", False):
        return True
    import httpx

    return isinstance(exc, (TimeoutError, asyncio.TimeoutError, httpx.TimeoutException))


def is_retryable(exc: BaseException) -> bool:
    flag = getattr(exc, "retryable", None)
    if flag is not None:
        return bool(flag)
    import httpx

    return isinstance(exc, (TimeoutError, ConnectionError, httpx.TransportError)) or is_timeout(exc)


_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)((?:api[_-]?key|token|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"),
)
_known_secrets: set[str] = set()
_known_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Remember a configured key so :func:`redact` removes it verbatim wherever it shows up."""
    if value and len(value) >= 4:
        with _known_lock:
            _known_secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every configured key and anything credential-shaped replaced by ``***``."""
    text = str(text)
    with _known_lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text[:500]


# --- retries ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` extra attempts after the first, sleeping base, 2*base, 4*base… (capped)."""

    retries: int = 2
    base_delay: float = 0.2
    max_delay: float = 2.0

    def delays(self) -> list[float]:
        return [min(self.max_delay, self.base_delay * (2**i)) for i in range(self.retries)]


def call_with_retries(
    fn: Callable[[], T], policy: RetryPolicy, *, sleep: Callable[[float], None] = time.sleep, what: str = "engine"
) -> T:
    """Run ``fn``; retry retryable failures with backoff; re-raise the last failure."""
    delays = policy.delays()
    for attempt in range(len(delays) + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt >= len(delays) or not is_retryable(exc):
                raise
            log.info("%s failed (%s), retry %d in %.2fs", what, redact(str(exc)), attempt + 1, delays[attempt])
            sleep(delays[attempt])
    raise AssertionError("unreachable")


# --- circuit breaker --------------------------------------------------------------------------

class CircuitOpen(RuntimeError):
    """The engine's breaker is open: skip it without trying."""


class CircuitBreaker:
    """Closed -> (``threshold`` failures in a row) -> open -> (``reset_after`` s) -> half-open.

    Half-open lets one trial call through: success closes the breaker, failure re-opens it for
    another ``reset_after``. Thread-safe: ASR and TTS run in the engine executor's threads.
    """

    def __init__(self, name: str, *, threshold: int = 3, reset_after: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.threshold = max(1, threshold)
        self.reset_after = reset_after
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at >= self.reset_after:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May a call go to the engine now? (In half-open, only one caller gets a yes.)"""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half-open" and not self._trial:
                self._trial = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial = False

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._trial or self._failures >= self.threshold:
                if self._opened_at is None or self._trial:
                    log.warning("circuit for %s opens after %d failure(s)", self.name, self._failures)
                self._opened_at = self.clock()
            self._trial = False

    def reset(self) -> None:
        self.record_success()


_breakers: dict[str, CircuitBreaker] = {}
_breakers_lock = threading.Lock()


def breaker_for(name: str, *, threshold: int | None = None, reset_after: float | None = None) -> CircuitBreaker:
    """The process-wide breaker for an engine: every call on this worker shares what it learnt."""
    with _breakers_lock:
        breaker = _breakers.get(name)
        if breaker is None:
            threshold, reset_after = _breaker_settings(threshold, reset_after)
            breaker = _breakers[name] = CircuitBreaker(name, threshold=threshold, reset_after=reset_after)
        return breaker


def reset_breakers() -> None:
    """Forget every breaker (tests; an operator after fixing a key)."""
    with _breakers_lock:
        _breakers.clear()


def _breaker_settings(threshold: int | None, reset_after: float | None) -> tuple[int, float]:
    from django.conf import settings

    return (
        threshold if threshold is not None else getattr(settings, "ENGINE_BREAKER_FAILURES", 3),
        reset_after if reset_after is not None else getattr(settings, "ENGINE_BREAKER_RESET_SECONDS", 30.0),
    )


def default_policy() -> RetryPolicy:
    from django.conf import settings

    return RetryPolicy(retries=getattr(settings, "ENGINE_RETRIES", 2))


# --- failure reports --------------------------------------------------------------------------

@dataclass(frozen=True)
class EngineFailure:
    """One cloud failure that the call survived (or, with ``fallback`` None, did not as voice)."""

    kind: str  # "asr" | "tts" | "brain"
    engine: str  # the cloud engine that failed
    code: ErrorCode | None  # protocol error code to send (ASR_FAILED / TTS_FAILED), None for brain
    message: str  # safe for clients and logs: never carries a key
    fallback: str | None  # the offline engine that took over
    timeout: bool = False

    def details(self) -> dict[str, Any]:
        """``details`` for the protocol's error message."""
        return {"engine": self.engine, "fallback": self.fallback, "timeout": self.timeout}


FailureListener = Callable[[EngineFailure], None]


class _Reporter:
    def __init__(self, kind: str, primary_name: str, on_failure: FailureListener | None) -> None:
        self.kind = kind
        self.primary_name = primary_name
        self.on_failure = on_failure

    def failure(self, exc: BaseException, fallback: str | None) -> EngineFailure:
        what = "timed out" if is_timeout(exc) else "failed"
        event = EngineFailure(
            kind=self.kind,
            engine=self.primary_name,
            code=ERROR_CODES[self.kind],
            message=redact(f"{self.kind.upper()} engine {self.primary_name} {what}: {exc}"),
            fallback=fallback,
            timeout=is_timeout(exc),
        )
        log.warning("%s; fallback=%s", event.message, fallback)
        return event

    def report(self, event: EngineFailure) -> None:
        if self.on_failure is not None:
            try:
                self.on_failure(event)
            except Exception:  # a broken listener must not take the call down with it
                log.exception("engine failure listener raised")


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
        self._reporter = _Reporter("asr", primary.name, on_failure)

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
        self._reporter = _Reporter("tts", primary.name, on_failure)

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
        kwargs["voice"] = _offline_voice(kwargs.get("voice", ""))
        if self.fallback.sample_rate == self.sample_rate:
            yield from self.fallback.synthesize(text, **kwargs)
            return
        from media_pipeline.audio import Resampler, float32_to_pcm16

        resampler = Resampler(self.fallback.sample_rate, self.sample_rate)
        for chunk in self.fallback.synthesize(text, **kwargs):
            out = resampler.process(chunk)
            if out.size:
                yield float32_to_pcm16(out)
        tail = resampler.flush()
        if tail.size:
            yield float32_to_pcm16(tail)


def _cjk(language: str) -> bool:
    return (language or "").lower().startswith(("zh", "cmn", "yue", "ja", "ko"))


def is_provider_voice(voice: str) -> bool:
    """Cloud voice ids ("longxiaochun", "alloy") vs eSpeak names ("cmn", "en-us+f3").

    A scenario's ``voice`` field is shared by every TTS engine; each one uses it only when it
    is the kind of name that engine understands, and its own default otherwise.
    """
    return bool(re.fullmatch(r"[a-z][a-z0-9_]{3,}", voice or ""))


def _offline_voice(voice: str) -> str:
    return "" if is_provider_voice(voice) else voice


# --- brain ------------------------------------------------------------------------------------

class FallbackBrain:
    """A cloud buyer brain with the scripted one behind it.

    Retries and fallback happen only before the first chunk; a stream that dies half-way ends
    the reply where it stopped (what was said stands) and is reported. Progress tracking
    (``state``) always comes from the fallback, which reads the trainee's turns the same way
    whichever brain spoke.
    """

    def __init__(self, primary: Any, fallback: Any, *, breaker: CircuitBreaker | None = None,
                 policy: RetryPolicy | None = None, on_failure: FailureListener | None = None) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self.breaker = breaker or breaker_for(f"brain:{primary.name}")
        self.policy = policy or default_policy()
        self._reporter = _Reporter("brain", primary.name, on_failure)

    def state(self, brief: Any, history: Sequence[Any]) -> Any:
        return self.fallback.state(brief, history)

    async def stream_reply(self, brief: Any, history: Sequence[Any], *, seed: int = 0) -> AsyncIterator[str]:
        if self.breaker.allow():
            delays = self.policy.delays()
            for attempt in range(len(delays) + 1):
                produced = False
                try:
                    async for chunk in self.primary.stream_reply(brief, history, seed=seed):
                        produced = True
                        yield chunk
                    self.breaker.record_success()
                    return
                except Exception as exc:  # noqa: BLE001 - any cloud failure must land on the fallback
                    if not produced and attempt < len(delays) and is_retryable(exc):
                        log.info("brain %s failed (%s), retry %d", self.primary.name, redact(str(exc)), attempt + 1)
                        await asyncio.sleep(delays[attempt])
                        continue
                    self.breaker.record_failure()
                    event = self._reporter.failure(exc, None if produced else self.fallback.name)
                    self._reporter.report(event)
                    if produced:
                        return
                    break
        async for chunk in self.fallback.stream_reply(brief, history, seed=seed):
            yield chunk
