"""Exponential backoff for failures worth repeating.

Callers that produce output as they go (TTS audio, a streamed reply) retry only *before* the
first output: re-sending a half-spoken sentence would be worse than the failure. They use
:meth:`RetryPolicy.delays` directly; :func:`call_with_retries` is for one-shot calls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from lingecho.resilience.errors import is_retryable
from lingecho.resilience.redaction import redact

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` extra attempts after the first, sleeping base, 2*base, 4*base… (capped)."""

    retries: int = 2
    base_delay: float = 0.2
    max_delay: float = 2.0

    def delays(self) -> list[float]:
        return [min(self.max_delay, self.base_delay * (2**i)) for i in range(self.retries)]


def default_policy() -> RetryPolicy:
    from django.conf import settings

    return RetryPolicy(retries=getattr(settings, "ENGINE_RETRIES", 2))


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
