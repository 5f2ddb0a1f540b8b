"""A per-engine circuit breaker: after failures in a row, the next turns skip the dead service.

Without it every turn would pay a timeout before falling back. One breaker per engine name per
process (:func:`breaker_for`), so every call on this worker shares what it learnt.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


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
