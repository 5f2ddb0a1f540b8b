"""VAD scoring for every live call in one job per pass of the VAD thread, not one job per call per hop.

Each WebRTC call scores its trainee's audio every 32 ms hop (``inbound._vad_loop``). Run as one
executor job per call per hop, every hop is two thread hand-overs: the loop wakes the VAD thread
(a queue put and a futex wake), and the thread wakes the loop back (``call_soon_threadsafe`` and
the loop's self-pipe). At a dozen calls that is ~370 round trips a second, each waking an event
loop that also paces every call's outbound audio.

Here calls put their hop into one shared queue. One *drain* job runs on the pool's VAD executor
while the queue is not empty: it scores every queued hop (and any that arrive meanwhile) and hands
the results back with one ``call_soon_threadsafe`` per event loop per pass. With one call this is
the same one job per hop as before (no added delay: nothing waits for a tick); with many calls
the hops that arrived while the thread was busy go in one pass, so the wake-ups stop growing with
the number of calls. Each call's Silero state stays in its own stream: a pass runs the calls'
hops one after another (the Silero v6 export in faster-whisper takes its batch axis as time with
a single ``(1, 1, 128)`` LSTM state, so hops of different calls cannot share one ONNX run).
Order per call is kept: a call has at most one hop in flight (its loop awaits the result).

The queue is bounded by the VAD executor's capacity (``BoundedExecutor.capacity``): past it a
hop is refused with ``EngineBusy``, as the executor itself would.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from media_pipeline.executor import BoundedExecutor, EngineBusy, Outcome, post_outcomes

T = TypeVar("T")

# (function, samples, loop, future): one call's hop waiting to be scored.
_Hop = tuple[Callable[[Any], Any], Any, asyncio.AbstractEventLoop, asyncio.Future]


class VADBatcher:
    """One queue of VAD hops for a process, drained by jobs on ``pool`` (the engine pool's VAD executor)."""

    def __init__(self, pool: BoundedExecutor) -> None:
        self.pool = pool
        self.capacity = pool.capacity
        self._queue: collections.deque[_Hop] = collections.deque()
        self._lock = threading.Lock()
        self._draining = False
        self.passes = 0  # drain passes run (tests and diagnostics: hops / passes is the batching)
        self.hops = 0

    async def score(self, fn: Callable[[Any], T], samples: Any) -> T:
        """``fn(samples)`` on the VAD thread, in a pass with the other calls' hops; awaits the result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if len(self._queue) >= self.capacity:
                raise EngineBusy("vad", self.capacity)
            self._queue.append((fn, samples, loop, future))
            start = not self._draining
            self._draining = True
        if start:
            try:
                self.pool.submit(self._drain)
            except BaseException as exc:
                with self._lock:
                    self._draining = False
                    stranded = list(self._queue)
                    self._queue.clear()
                for _, _, other_loop, other in stranded:  # every hop queued behind this one fails too
                    if other is not future:
                        post_outcomes(other_loop, [(other, False, exc)])
                raise
        return await future

    def _drain(self) -> None:
        """Score every queued hop, deliver results per loop, repeat until the queue stays empty."""
        while True:
            with self._lock:
                if not self._queue:
                    self._draining = False
                    return
                hops = list(self._queue)
                self._queue.clear()
            self.passes += 1
            self.hops += len(hops)
            by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
            for fn, samples, loop, future in hops:
                if future.cancelled():
                    continue  # the call is closing: its stream is not touched again
                try:
                    outcome: tuple[bool, Any] = (True, fn(samples))
                except Exception as exc:  # noqa: BLE001 - delivered to the call that asked
                    outcome = (False, exc)
                by_loop.setdefault(loop, []).append((future, *outcome))
            for loop, results in by_loop.items():
                post_outcomes(loop, results)


_batchers: dict[int, VADBatcher] = {}
_lock = threading.Lock()


def vad_batcher(pool: BoundedExecutor) -> VADBatcher:
    """The batcher draining on ``pool`` (one per VAD executor, so per process with the shared pool)."""
    with _lock:
        batcher = _batchers.get(id(pool))
        if batcher is None or batcher.pool is not pool:
            batcher = _batchers[id(pool)] = VADBatcher(pool)
        return batcher


__all__ = ["VADBatcher", "vad_batcher"]
