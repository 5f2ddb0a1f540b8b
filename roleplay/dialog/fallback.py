"""A cloud buyer brain with the scripted one behind it, so a failing endpoint never leaves the trainee waiting.

Retry, breaker and failure reports are the engine-neutral ones of :mod:`lingecho.resilience`,
shared with the cloud ASR and TTS wrappers of the media pipeline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

from lingecho.resilience.breaker import CircuitBreaker, breaker_for
from lingecho.resilience.errors import is_retryable
from lingecho.resilience.failures import FailureListener, FailureReporter
from lingecho.resilience.redaction import redact
from lingecho.resilience.retry import RetryPolicy, default_policy
from roleplay.dialog.base import BrainState, BuyerBrain, ScenarioBrief, Turn

log = logging.getLogger(__name__)


class FallbackBrain:
    """A cloud buyer brain with the scripted one behind it.

    Retries and fallback happen only before the first chunk; a stream that dies half-way ends
    the reply where it stopped (what was said stands) and is reported. Progress tracking
    (``state``) always comes from the fallback, which reads the trainee's turns the same way
    whichever brain spoke.
    """

    def __init__(self, primary: BuyerBrain, fallback: BuyerBrain, *, breaker: CircuitBreaker | None = None,
                 policy: RetryPolicy | None = None, on_failure: FailureListener | None = None) -> None:
        self.primary = primary
        self.fallback = fallback
        self.name = primary.name
        self.breaker = breaker or breaker_for(f"brain:{primary.name}")
        self.policy = policy or default_policy()
        self._reporter = FailureReporter("brain", primary.name, on_failure)

    def state(self, brief: ScenarioBrief, history: Sequence[Turn]) -> BrainState:
        return self.fallback.state(brief, history)

    async def stream_reply(self, brief: ScenarioBrief, history: Sequence[Turn], *, seed: int = 0) -> AsyncIterator[str]:
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
