"""A bounded thread pool for blocking engine work (ASR decodes, TTS, VAD, local LLM calls).

Why bounded: a plain ThreadPoolExecutor queues without limit, so under overload every call's
turn latency grows together until all of them time out. Here a task needs a *slot* (one of
``max_workers + max_queue``) before it is queued; when none is free the caller either gets
``EngineBusy`` at once or waits (with a timeout) — its choice, fixed per executor. The async
path waits on an asyncio future, so it never blocks the event loop. Its threads run at a lower
priority (:mod:`lingecho.priority`) so the loops they serve are never starved of CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Self, TypeVar

from lingecho.priority import lower_current_thread_priority
from media_pipeline import metrics

T = TypeVar("T")


class EngineBusy(RuntimeError):
    """No slot free in an engine executor: the caller should shed load (ERR_RATE_LIMIT/ERR_TIMEOUT)."""

    def __init__(self, kind: str, capacity: int, waited_s: float | None = None) -> None:
        self.kind = kind
        self.capacity = capacity
        self.waited_s = waited_s
        how = f" after waiting {waited_s:.3f}s" if waited_s else ""
        super().__init__(f"{kind} engine busy: all {capacity} slots taken{how}")


class _Waiter:
    __slots__ = ("cancelled", "granted", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.granted = False
        self.cancelled = False


class _Slots:
    """A counting semaphore that both threads and coroutines can wait on, first come first served.

    A released slot is handed straight to the oldest waiter (not returned to the pool), so a
    waiter cannot be overtaken by a newcomer's non-blocking attempt.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return True
            return False

    def enqueue(self, wake: Callable[[], None]) -> _Waiter | None:
        """Take a slot now (returns None) or register a waiter to be woken with one."""
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return None
            waiter = _Waiter(wake)
            self._waiters.append(waiter)
            return waiter

    def abandon(self, waiter: _Waiter) -> bool:
        """A waiter gives up (timeout, cancel). True if a slot reached it first: it owns it now."""
        with self._lock:
            if waiter.granted:
                return True
            waiter.cancelled = True
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            return False

    def release(self) -> None:
        wake = None
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.cancelled:
                    waiter.granted = True
                    wake = waiter.wake
                    break
            else:
                self._free += 1
        if wake is not None:
            wake()

    @property
    def free(self) -> int:
        return self._free


class BoundedExecutor:
    """Thread pool for one engine kind with at most ``max_workers + max_queue`` tasks admitted.

    ``block=False``: a full executor raises :class:`EngineBusy` immediately.
    ``block=True``: wait up to ``timeout`` seconds (``None`` = forever) for a slot, then raise.
    """

    def __init__(
        self,
        kind: str,
        *,
        max_workers: int = 2,
        max_queue: int = 8,
        block: bool = False,
        timeout: float | None = None,
    ) -> None:
        if max_workers < 1 or max_queue < 0:
            raise ValueError("max_workers must be >= 1 and max_queue >= 0")
        self.kind = kind
        self.max_workers = max_workers
        self.max_queue = max_queue
        self.block = block
        self.timeout = timeout
        self._slots = _Slots(max_workers + max_queue)
        self._pool = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=f"engine-{kind}", initializer=lower_current_thread_priority
        )
        self._queued = metrics.ENGINE_QUEUE_DEPTH.labels(kind=kind)
        self._running = metrics.ENGINE_IN_FLIGHT.labels(kind=kind)
        self._task_seconds = metrics.ENGINE_TASK_SECONDS.labels(kind=kind)
        self._wait_seconds = metrics.ENGINE_QUEUE_WAIT_SECONDS.labels(kind=kind)
        self._rejected = metrics.ENGINE_REJECTED_TOTAL.labels(kind=kind)
        self._failed = metrics.ENGINE_FAILED_TOTAL.labels(kind=kind)
        self._counts_lock = threading.Lock()
        self.queued = 0
        self.running = 0

    @property
    def capacity(self) -> int:
        return self.max_workers + self.max_queue

    # --- admission ---------------------------------------------------------------------------
    def _acquire_sync(self) -> None:
        if self._slots.try_acquire():
            return
        if not self.block:
            self._reject(None)
        event = threading.Event()
        started = time.monotonic()
        waiter = self._slots.enqueue(event.set)
        if waiter is None:
            return
        if not event.wait(self.timeout) and not self._slots.abandon(waiter):
            self._reject(time.monotonic() - started)

    async def _acquire_async(self) -> None:
        if self._slots.try_acquire():
            return
        if not self.block:
            self._reject(None)
        loop = asyncio.get_running_loop()
        granted: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            # Called from whichever thread released the slot.
            try:
                loop.call_soon_threadsafe(_resolve, granted)
            except RuntimeError:  # loop closed: nobody will use the slot
                self._slots.release()

        started = time.monotonic()
        waiter = self._slots.enqueue(wake)
        if waiter is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(granted), self.timeout)
        except TimeoutError:
            if not self._slots.abandon(waiter):
                self._reject(time.monotonic() - started)
        except asyncio.CancelledError:
            if self._slots.abandon(waiter):
                self._slots.release()
            raise

    def _reject(self, waited: float | None) -> None:
        self._rejected.inc()
        raise EngineBusy(self.kind, self.capacity, waited)

    # --- execution ---------------------------------------------------------------------------
    def _adjust(self, queued: int, running: int) -> None:
        with self._counts_lock:
            self.queued += queued
            self.running += running
            self._queued.set(self.queued)
            self._running.set(self.running)

    def _call(self, admitted_at: float, fn: Callable[..., T], args: tuple, kwargs: dict) -> T:
        started = time.perf_counter()
        self._wait_seconds.observe(started - admitted_at)
        self._adjust(-1, +1)
        try:
            return fn(*args, **kwargs)
        except BaseException:
            self._failed.inc()
            raise
        finally:
            self._task_seconds.observe(time.perf_counter() - started)
            self._adjust(0, -1)

    def _start(self, fn: Callable[..., T], args: tuple, kwargs: dict) -> Future[T]:
        self._adjust(+1, 0)
        try:
            future = self._pool.submit(self._call, time.perf_counter(), fn, args, kwargs)
        except BaseException:
            self._adjust(-1, 0)
            self._slots.release()
            raise
        # The slot is held until the work is really done, even if the awaiting caller was
        # cancelled: the thread is still busy, and that is what the bound is for.
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future[Any]) -> None:
        if future.cancelled():  # never ran: it was still counted as queued
            self._adjust(-1, 0)
        self._slots.release()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)`` from a thread; may wait per the policy or raise EngineBusy."""
        self._acquire_sync()
        return self._start(fn, args, kwargs)

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the pool and await its result without blocking the event loop."""
        await self._acquire_async()
        return await asyncio.wrap_future(self._start(fn, args, kwargs))

    def shutdown(self, wait: bool = True, *, cancel_pending: bool = False) -> None:
        """Stop the pool; ``cancel_pending`` drops queued tasks (their futures are cancelled)."""
        self._pool.shutdown(wait=wait, cancel_futures=cancel_pending)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class RateBudget:
    """A token bucket for optional work shared by every call of a process (used from one event loop).

    Interim transcripts are the example: each is a whole ASR decode (the short-window encoder
    costs about the same for 0.5 s of speech as for 3 s), and they are a nicety, not the turn. One
    call spends its interims as before; many calls share the same budget, so each gets fewer and
    the machine's CPU goes to finals. ``per_second`` <= 0 means no budget (always allowed).
    """

    def __init__(self, per_second: float, *, burst: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.burst = max(1.0, burst)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def try_take(self) -> bool:
        """Spend one unit if the budget has it now."""
        if self.per_second <= 0:
            return True
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# (future, ok, value): a result computed on an executor thread for a future of some event loop.
Outcome = tuple[asyncio.Future, bool, Any]


def post_outcomes(loop: asyncio.AbstractEventLoop, outcomes: list[Outcome]) -> None:
    """From a worker thread: settle ``outcomes`` on ``loop`` with one wake-up (the batchers' hand-back)."""
    try:
        loop.call_soon_threadsafe(_settle, outcomes)
    except RuntimeError:  # that loop is closed: nobody waits for these results
        pass


def _settle(outcomes: list[Outcome]) -> None:
    for future, ok, value in outcomes:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def monitor_event_loop_lag(*, interval: float = 0.1, loop_name: str = "main") -> None:
    """Measure how late a timer fires on this loop, forever (cancel the task to stop).

    Lag is what turns outbound 20 ms pacing into gaps and bursts, so it is the first number to
    look at when calls sound choppy.
    """
    gauge = metrics.EVENT_LOOP_LAG_SECONDS.labels(loop=loop_name)
    hist = metrics.EVENT_LOOP_LAG_HIST.labels(loop=loop_name)
    loop = asyncio.get_running_loop()
    while True:
        scheduled = loop.time() + interval
        await asyncio.sleep(interval)
        lag = max(0.0, loop.time() - scheduled)
        gauge.set(lag)
        hist.observe(lag)


def start_loop_lag_monitor(*, interval: float = 0.1, loop_name: str = "main") -> asyncio.Task[None]:
    """Start :func:`monitor_event_loop_lag` as a task on the running loop and return it."""
    return asyncio.get_running_loop().create_task(
        monitor_event_loop_lag(interval=interval, loop_name=loop_name), name=f"loop-lag-{loop_name}"
    )


__all__ = ["BoundedExecutor", "EngineBusy", "RateBudget", "monitor_event_loop_lag", "start_loop_lag_monitor"]
