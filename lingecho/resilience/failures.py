"""The report of one cloud failure a call survived, for whoever must tell the trainee.

The fallback wrappers build one :class:`EngineFailure` per failure and hand it to the call's
listener; the media pipeline turns one with a ``code`` into a protocol ``error`` message. The
code is the wrapper's to choose (``media_pipeline.contract.ErrorCode`` for ASR and TTS, none for
the brain): nothing here knows a wire protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lingecho.resilience.errors import is_timeout
from lingecho.resilience.redaction import redact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineFailure:
    """One cloud failure that the call survived (or, with ``fallback`` None, did not as voice)."""

    kind: str  # "asr" | "tts" | "brain"
    engine: str  # the cloud engine that failed
    code: str | None  # protocol error code to send (an ErrorCode: ASR_FAILED / TTS_FAILED), None for brain
    message: str  # safe for clients and logs: never carries a key
    fallback: str | None  # the offline engine that took over
    timeout: bool = False

    def details(self) -> dict[str, Any]:
        """``details`` for the protocol's error message."""
        return {"engine": self.engine, "fallback": self.fallback, "timeout": self.timeout}


FailureListener = Callable[[EngineFailure], None]


class FailureReporter:
    """Builds a wrapper's :class:`EngineFailure` reports and delivers them to its listener."""

    def __init__(self, kind: str, primary_name: str, on_failure: FailureListener | None, *,
                 code: str | None = None) -> None:
        self.kind = kind
        self.primary_name = primary_name
        self.on_failure = on_failure
        self.code = code

    def failure(self, exc: BaseException, fallback: str | None) -> EngineFailure:
        what = "timed out" if is_timeout(exc) else "failed"
        event = EngineFailure(
            kind=self.kind,
            engine=self.primary_name,
            code=self.code,
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
