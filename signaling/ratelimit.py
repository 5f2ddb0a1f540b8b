"""A per-connection token bucket.

Kept in the consumer's memory rather than the cache: it limits one socket's frame rate, which
only that socket's process sees, and a cache round trip per frame would cost more than the frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; each frame takes one."""

    __slots__ = ("rate", "burst", "tokens", "updated", "clock")

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.updated = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self) -> bool:
        """Spend a token if there is one."""
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def retry_after_ms(self) -> int:
        """How long until the next token, rounded up to a whole millisecond (at least 1)."""
        self._refill()
        missing = max(0.0, 1.0 - self.tokens)
        return max(1, int(missing / self.rate * 1000 + 0.999))
