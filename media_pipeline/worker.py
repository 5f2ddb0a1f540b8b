"""The media worker: owns the aiortc peer connections of this process, reached only through the channel layer.

Routing (see ``media_pipeline.contract``): the first ``media.offer`` of a session arrives on the
shared ``media`` channel; the worker that takes it creates the call, answers ``media.pinned`` with
its own channel, and every later message of that session comes to that channel. One
:class:`MediaWorker` per process holds the registry of its calls (``session_id`` → CallSession).

Liveness: a daemon thread publishes the heartbeat (worker id, pinned channel, call count) every
``HEARTBEAT_SECONDS`` through the cache. It starts with the process, before any message arrives,
because the signaling consumer refuses offers while no worker is alive; once the event loop side
runs, a beat is only published while the loop keeps ticking, so a wedged loop stops looking alive.

Calls never leak: a call that signaling gives up is hung up even before it is pinned (through the
``MEDIA_WORKERS_GROUP`` group, see ``media_pipeline.contract``), and an idle reaper closes a call no
signaling message (consumers send a keepalive while pinned) touched for ``MEDIA_IDLE_REAP_SECONDS``.
Sharing by load: which worker takes an offer from the shared channel is whichever asked Redis
first (BZPOPMIN serves waiting workers in turn), round robin rather than by load, so the counts
drift apart (calls of unequal length, a worker restarted by an upgrade starts empty and stays
behind). A worker that takes a fresh offer while another live worker's heartbeat shows fewer calls
passes it there once (``_passed_to_less_busy``); an offer passed on once is taken where it lands.
Admission: a worker holding ``MAX_CALLS_PER_WORKER`` live calls does not take another offer. It
passes the offer to the pinned channel of the live worker whose heartbeat (published at once when
a call starts or ends) shows the fewest calls below the limit (at most ``MAX_OFFER_HOPS`` times,
counted in the message, in case that one filled up meanwhile), and otherwise refuses it with
``ERR_RATE_LIMIT`` {reason "capacity", retry_after ms}: a clear "all lines busy" instead of every
call in progress slowing down together (bench/capacity.py measured where that starts).
``drain`` is the graceful end: no new offers, every call's client told (``disconnect`` with the
reason), every call closed with its recording stored, the heartbeat withdrawn, within a deadline.

Two ways to run it, one code path: embedded (``media_pipeline.embedded`` starts the loops inside
the server process) and ``python manage.py runworker media`` (Channels' worker creates
:class:`MediaWorkerConsumer` for the shared channel; the command starts the pinned loop as it
starts, since other workers may pass offers to this one before it has taken any itself).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from channels.consumer import AsyncConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache

from lingecho.channel_layer import cancel_requested, cancel_until_done
from media_pipeline import heartbeat, host_capacity, metrics
from media_pipeline.chunked.call import ChunkCall
from media_pipeline.contract import MEDIA_CHANNEL, MEDIA_WORKERS_GROUP, ErrorCode, chunk_done, error_body, event
from media_pipeline.engine_pool import start_warm_up, warm_up_settle
from media_pipeline.webrtc.call import CallSession
from media_pipeline.webrtc.outbound import pacing_stats

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = heartbeat.HEARTBEAT_SECONDS
# A hang-up for an offer not taken yet is remembered this long (offers wait in the shared channel
# for at most the channel layer's expiry, 30-60 s).
TOMBSTONE_SECONDS = 120.0
MAX_TOMBSTONES = 10_000
# Group memberships expire in the channel layers (a day by default): renewed well before.
GROUP_REFRESH_SECONDS = 600.0
# How long a taken offer stays claimed (its id is never sent again: each offer of a connection is numbered).
OFFER_CLAIM_SECONDS = 300
# An offer no worker has room for is passed on at most this many times before it is refused.
MAX_OFFER_HOPS = 8
# A fresh offer is passed to a less busy worker only if that one's heartbeat is this recent (a
# healthy worker beats every HEARTBEAT_SECONDS and at each call's start and end): a worker that
# died a moment ago still has a live heartbeat for its TTL, and an offer sent to it is lost until
# the consumer's offer timeout. At capacity any live worker is tried (the alternative is a refusal).
BALANCE_BEAT_AGE_SECONDS = HEARTBEAT_SECONDS + 2.0
CAPACITY_HOPS_KEY = "capacity_hops"
# The messages that start a call, and the transport of the call each one starts.
OPENERS = {"media.offer": "webrtc", "media.chunk_open": "chunk"}


def _limit(transport: str) -> int:
    """Live calls of a transport one worker takes (settings, or sized to the host; 0 = no limit)."""
    if transport == "chunk":
        return settings.MAX_CHUNK_CALLS_PER_WORKER
    if settings.MAX_CALLS_PER_WORKER is not None:
        return settings.MAX_CALLS_PER_WORKER
    return host_capacity.calls_limit()


def stats_key(worker_id: str) -> str:
    """Cache key of a worker's pacing stats (outbound jitter, underruns), for benches and operators."""
    return f"lingecho:media-worker-stats:{worker_id}"


def _new_channel_name(layer: Any) -> str:
    """``layer.new_channel()`` from sync code, loop or no loop.

    Both layers' ``new_channel`` only format a name (no I/O), so the coroutine finishes on its first
    step; the worker needs its name before any loop runs (the heartbeat starts at process boot).
    """
    # The default prefix on purpose: channels-redis pops every "!" channel of a process from one
    # Redis list per prefix under one lock, so a second prefix would wait out the other's 5 s pop.
    coro = layer.new_channel()
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("the channel layer's new_channel() awaited something; cannot name the worker channel")


class MediaWorker:
    def __init__(self, layer: Any, *, worker_id: str | None = None, channel: str | None = None) -> None:
        self.layer = layer
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.channel = channel or _new_channel_name(layer)
        self.sessions: dict[str, CallSession | ChunkCall] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last_tick: float | None = None
        self._tasks: list[asyncio.Task] = []
        self._beat_stop = threading.Event()
        self._beat_lock = threading.Lock()
        self._beat_thread: threading.Thread | None = None
        self.draining = False
        self._shared: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()
        self._tombstones: dict[tuple[str, str, Any], float] = {}
        self._group_added_at: float | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start_heartbeat(self) -> None:
        if self._beat_thread is not None:
            return
        self.publish()  # at once: an offer may arrive in the next millisecond
        self._beat_thread = threading.Thread(target=self._beat, name="media-heartbeat", daemon=True)
        self._beat_thread.start()
        atexit.register(self.stop_heartbeat)

    def publish(self) -> None:
        limit = _limit("webrtc")
        metrics.CALLS_LIMIT.set(limit)
        try:
            heartbeat.publish_heartbeat(worker_id=self.worker_id, channel_name=self.channel,
                                        calls=self.live_calls("webrtc"), chunk_calls=self.live_calls("chunk"),
                                        limit=limit)
            cache.set(stats_key(self.worker_id), {**pacing_stats(), "calls": len(self.sessions)}, timeout=60)
        except Exception:  # noqa: BLE001 - a cache outage must not kill the thread; readiness shows it
            log.warning("heartbeat not published", exc_info=True)

    def _beat(self) -> None:
        while not self._beat_stop.wait(HEARTBEAT_SECONDS):
            stale = self.last_tick is not None and time.monotonic() - self.last_tick > 3 * HEARTBEAT_SECONDS
            if not stale:
                self.publish()

    def stop_heartbeat(self) -> None:
        self._beat_stop.set()
        with self._beat_lock, contextlib.suppress(Exception):
            heartbeat.withdraw_heartbeat(worker_id=self.worker_id)

    def _publish_if_beating(self) -> None:
        """A call-count update, unless the heartbeat was withdrawn meanwhile (no ghost of a stopped worker)."""
        with self._beat_lock:
            if not self._beat_stop.is_set():
                self.publish()

    async def ensure_started(self, *, serve_shared: bool = False) -> None:
        """Start the pinned-channel loop (and, embedded, the shared-channel loop) on this event loop."""
        if self.loop is not None:
            return
        self.loop = asyncio.get_running_loop()
        self.last_tick = time.monotonic()
        self._tasks.append(self.loop.create_task(self._serve(self.channel), name="media-pinned"))
        if serve_shared:
            self._shared = self.loop.create_task(self._serve(MEDIA_CHANNEL), name="media-shared")
            self._tasks.append(self._shared)
        self._tasks.append(self.loop.create_task(self._tick(), name="media-tick"))
        self.start_heartbeat()

    async def _tick(self) -> None:
        # ``cancelling()``: a cancel its Redis ``group_add`` swallowed (CPython gh-86296) still ends it.
        while not cancel_requested():
            self.last_tick = time.monotonic()
            try:
                await self._join_group()
                self.reap_idle()
            except Exception:  # noqa: BLE001 - the tick is the liveness signal: it must keep ticking
                log.exception("media worker tick failed")
            await asyncio.sleep(1.0)

    async def _join_group(self) -> None:
        now = time.monotonic()
        if self._group_added_at is None or now - self._group_added_at > GROUP_REFRESH_SECONDS:
            try:
                await self.layer.group_add(MEDIA_WORKERS_GROUP, self.channel)
            except Exception:  # noqa: BLE001 - channel layer down: try again in a few seconds, quietly
                log.warning("media worker not in its group yet", extra={"worker_id": self.worker_id})
                self._group_added_at = now - GROUP_REFRESH_SECONDS + 5.0
                return
            self._group_added_at = now

    def reap_idle(self) -> None:
        """Close calls that no signaling message touched for ``MEDIA_IDLE_REAP_SECONDS`` (their consumer is gone)."""
        limit = settings.MEDIA_IDLE_REAP_SECONDS
        now = time.monotonic()
        for call in list(self.sessions.values()):
            if not call.closed and now - call.last_signal > limit:
                log.warning("closing a call nobody signals for", extra={"session_id": call.session_id,
                                                                        "idle_seconds": round(now - call.last_signal)})
                self._close_later(call, "timeout", tell=(ErrorCode.WEBRTC_FAILED, "media_idle"))

    def _close_later(self, call: CallSession | ChunkCall, reason: str, *,
                     tell: tuple[ErrorCode, str] | None = None) -> None:
        async def run() -> None:
            if tell is not None:  # a consumer that is still there forgets the call and may offer again
                await call.error(tell[0], "The media connection was closed; send a new offer.",
                                 {"error_type": tell[1]})
            await call.close(reason)

        self._spawn(run())

    async def _serve(self, channel: str) -> None:
        while not cancel_requested():
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis hiccup: back off and keep serving
                log.exception("media worker receive failed", extra={"channel": channel})
                await asyncio.sleep(0.5)
                continue
            await self.dispatch(message)

    async def stop(self) -> None:
        for call in list(self.sessions.values()):
            await call.close("error")
        await self._stop_tasks()
        self.loop = None
        self.stop_heartbeat()

    async def _stop_tasks(self) -> None:
        """Cancel the worker's loops, each until it has ended: the tick's Redis ``group_add`` can
        swallow one cancel (CPython gh-86296) and would then tick on, holding the stop forever."""
        for task in [*self._tasks, *self._closing]:
            task.cancel()
        for task in [*self._tasks, *self._closing]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await cancel_until_done(task)
        self._tasks = []
        self._shared = None
        with contextlib.suppress(Exception):
            await self.layer.group_discard(MEDIA_WORKERS_GROUP, self.channel)

    async def drain(self, reason: str = "server_shutdown", timeout: float | None = None) -> dict[str, Any]:
        """End this worker gracefully within ``timeout`` (default ``SHUTDOWN_DRAIN_SECONDS``).

        No new offers (the shared channel is left to other workers), each call's client told through
        its consumer (``media.session_end``: the consumer ends the session and sends ``disconnect``
        with ``reason``), each call closed with its recording stored, the heartbeat withdrawn. A call
        that cannot finish in time is cancelled; its recording's segments are in storage already and
        the after-call job joins them. Returns what happened (for logs and tests).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + (settings.SHUTDOWN_DRAIN_SECONDS if timeout is None else timeout)
        self.draining = True
        if self._shared is not None:
            self._shared.cancel()
        calls = [call for call in self.sessions.values() if not call.closed]
        if calls:  # told first: the consumers end the sessions while the calls close here
            await asyncio.wait([loop.create_task(c.end_session(reason)) for c in calls],
                               timeout=max(0.05, min(1.0, deadline - loop.time())))
        self.stop_heartbeat()
        closing = [loop.create_task(call.close(reason)) for call in calls]
        unfinished: set[asyncio.Task] = set()
        if closing:
            _, unfinished = await asyncio.wait(closing, timeout=max(0.0, deadline - loop.time()))
        while self.sessions and loop.time() < deadline:  # calls a hang-up was already closing
            await asyncio.sleep(0.05)
        for task in unfinished:
            task.cancel()
        await self._stop_tasks()
        # A process must not exit mid warm-up (see warm_up_settle): a worker stopped right after its boot.
        settled = await asyncio.to_thread(warm_up_settle, deadline - loop.time())
        # Unfinished calls stay in the registry: their segments are stored, the after-call job joins them.
        result = {"calls": len(calls), "unfinished": len(self.sessions), "seconds": round(loop.time() - started, 3)}
        if not settled:
            result["warm_up_unfinished"] = True
        log.info("media worker drained", extra={"worker_id": self.worker_id, **result})
        return result

    # --- messages ---------------------------------------------------------------------------------
    async def dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type", "")
        session_id = message.get("session_id")
        if not session_id or not kind.startswith("media."):
            return
        call = self.sessions.get(session_id)
        if call is not None and call.closed:
            if kind == "media.hangup" and isinstance(call, ChunkCall) and message.get("request_id"):
                # Closing already (a drain): answered once it is closed, so its client's chunk
                # session hears ``session-ended`` before it lets go.
                self._spawn(self._answer_when_closed(call, message))
                return
            call = None  # closing (its recording is being stored): a new offer starts a new call
        if kind == "media.keepalive":
            if call is not None:
                call.touch()
            return
        if call is None:
            if kind == "media.hangup":
                self._bury(message)
                await self._answer(message, result={"closed": True})  # a chunk call that is gone already
                return
            if kind not in OPENERS:
                # Pinned here but the call is gone (worker restarted with the same channel, or closed).
                await self._refuse(message, ErrorCode.WEBRTC_FAILED, "No media connection for this session; "
                                   "send an offer.", {"error_type": "unknown_session"})
                return
            if self.draining:
                # Leave it to another worker: this one is going away.
                with contextlib.suppress(Exception):
                    await self.layer.send(MEDIA_CHANNEL, message)
                return
            if not await self._claimed(message):
                metrics.OFFERS_DUPLICATED_TOTAL.inc()
                return  # delivered twice (channels-redis's shared in-flight list): another worker has it
            # After the claim's await, so a hang-up that came meanwhile is seen (a later one finds
            # the call and closes it).
            if self._buried(message):
                return  # signaling gave this offer up before any worker took it
            transport = OPENERS[kind]
            if self.full(transport):
                await self._offer_elsewhere(message, transport)
                return
            if await self._passed_to_less_busy(message, transport):
                return
            if transport == "chunk":
                call = ChunkCall(session_id=session_id, layer=self.layer, worker_channel=self.channel,
                                 reply_channel=message.get("reply_channel", ""))
            else:
                call = CallSession(
                    session_id=session_id, layer=self.layer, worker_channel=self.channel,
                    reply_channel=message.get("reply_channel", ""),
                )
            call.on_closed = self._forget
            self.sessions[session_id] = call
            call.counted = True
            metrics.ACTIVE_CALLS.inc()
            self._publish_soon()
        elif kind == "media.offer" and not await self._claimed(message):
            # The offer this call took, handed back to this worker by the same backup list: a second
            # answer would replace the peer the client has just accepted, which then never connects.
            metrics.OFFERS_DUPLICATED_TOTAL.inc()
            return
        call.submit(message)

    async def _answer_when_closed(self, call: ChunkCall, message: dict[str, Any]) -> None:
        await call.finished.wait()
        await self._answer(message, result={"closed": True})

    def _spawn(self, work: Any) -> None:
        """A task the worker keeps (and cancels when it stops): closing calls, late answers."""
        task = asyncio.get_running_loop().create_task(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _answer(self, message: dict[str, Any], *, result: dict[str, Any] | None = None,
                      error: dict[str, Any] | None = None) -> None:
        """Answer a chunk request (one with a ``request_id``) this worker will not hand to a call."""
        reply, request_id = message.get("reply_channel"), message.get("request_id")
        if reply and request_id:
            with contextlib.suppress(Exception):
                await self.layer.send(reply, chunk_done(str(request_id), session_id=message.get("session_id", ""),
                                                        result=result, error=error))

    async def _refuse(self, message: dict[str, Any], code: ErrorCode, text: str, details: dict[str, Any]) -> None:
        """Say no to a message: a chunk request gets its answer, anything else an ``error`` event."""
        if message.get("request_id"):
            await self._answer(message, error=error_body(code, text, details))
            return
        reply = message.get("reply_channel")
        if reply:
            with contextlib.suppress(Exception):
                await self.layer.send(reply, event("error", error_body(code, text, details),
                                                   session_id=message.get("session_id", "")))

    # --- admission ----------------------------------------------------------------------------------
    def live_calls(self, transport: str | None = None) -> int:
        """Live calls of one transport (``webrtc`` or ``chunk``), or of both."""
        return sum(1 for call in self.sessions.values()
                   if not call.closed and (transport is None or call.kind == transport))

    def full(self, transport: str = "webrtc") -> bool:
        """At the transport's limit of live calls (0: no limit): a new one would slow every call down.

        The two transports are counted apart because they cost very different amounts: a WebRTC call
        decodes Opus every 20 ms, runs interim transcripts and paces its reply in real time; a chunked
        call decodes a flush twice a second, transcribes only finals and stores its reply as a file.
        """
        limit = _limit(transport)
        return limit > 0 and self.live_calls(transport) >= limit

    async def _offer_elsewhere(self, message: dict[str, Any], transport: str = "webrtc") -> None:
        """Pass a new call to the least busy worker with room, or refuse it: all lines busy, try later."""
        hops = int(message.get(CAPACITY_HOPS_KEY) or 0)
        target = await self._worker_with_room(transport) if hops < MAX_OFFER_HOPS else None
        if target is not None:
            try:
                await self.layer.send(target, {**message, CAPACITY_HOPS_KEY: hops + 1})
            except Exception:  # noqa: BLE001 - its channel is full or gone: refuse below
                log.warning("offer not passed on", extra={"session_id": message.get("session_id")})
            else:
                metrics.CALLS_PASSED_ON_TOTAL.inc()
                return
        metrics.CALLS_REFUSED_TOTAL.inc()
        retry_after_s = settings.CAPACITY_RETRY_AFTER_SECONDS
        log.warning("call refused: all lines busy", extra={"session_id": message.get("session_id"),
                                                            "worker_id": self.worker_id, "transport": transport,
                                                            "calls": self.live_calls(transport)})
        await self._refuse(message, ErrorCode.RATE_LIMIT, f"All lines are busy. Try again in {retry_after_s} s.",
                           {"reason": "capacity", "retry_after": retry_after_s * 1000})

    async def _passed_to_less_busy(self, message: dict[str, Any], transport: str) -> bool:
        """Pass a fresh offer to the live worker with the fewest calls, if it has fewer than this one.

        Only an offer straight from the shared channel (an offer passed on once is taken where it
        lands, so two workers never bounce one between them), and only to a worker that beat
        recently (``BALANCE_BEAT_AGE_SECONDS``). Costs one heartbeat read per offer while this
        worker holds calls; with none it takes the offer at once (nobody has fewer).
        """
        mine = self.live_calls(transport)
        if mine == 0 or message.get(CAPACITY_HOPS_KEY):
            return False
        target = await self._least_busy_other(transport, max_age=BALANCE_BEAT_AGE_SECONDS)
        if target is None or target[0] >= mine:
            return False
        try:
            await self.layer.send(target[1], {**message, CAPACITY_HOPS_KEY: 1})
        except Exception:  # noqa: BLE001 - its channel is full or gone: take the call here
            return False
        metrics.CALLS_BALANCED_TOTAL.inc()
        return True

    async def _worker_with_room(self, transport: str = "webrtc") -> str | None:
        """The pinned channel of the live worker with the fewest calls below the limit, other than this one."""
        target = await self._least_busy_other(transport)
        return target[1] if target else None

    async def _least_busy_other(self, transport: str, *, max_age: float | None = None) -> tuple[int, str] | None:
        """(calls, pinned channel) of the live worker other than this one with the fewest calls of
        ``transport``, below the limit if there is one, its heartbeat at most ``max_age`` s old."""
        try:
            beats = await asyncio.to_thread(heartbeat.live_workers)
        except Exception:  # noqa: BLE001 - no cache, no knowledge of the others: refuse rather than guess
            return None
        mine = _limit(transport)
        field = heartbeat.CALLS_FIELD[transport]
        now = time.time()
        room = []
        for worker_id, beat in beats.items():
            if worker_id == self.worker_id or not beat.get("channel") or not isinstance(beat.get(field), int):
                continue
            if max_age is not None and now - beat["at"] > max_age:
                continue
            theirs = beat.get("limit") if transport == "webrtc" else None
            limit = theirs if isinstance(theirs, int) else mine  # each worker's own, sized to its host
            if limit == 0 or beat[field] < limit:
                room.append((beat[field], beat["channel"]))
        return min(room) if room else None

    def _publish_soon(self) -> None:
        """Publish the heartbeat now (off the loop: a cache write) so the others see the new call count."""
        if self.loop is not None and not self.draining:
            with contextlib.suppress(RuntimeError):  # the loop is closing: the beat thread carries on
                self.loop.run_in_executor(None, self._publish_if_beating)

    def _forget(self, call: CallSession | ChunkCall) -> None:
        if self.sessions.get(call.session_id) is call:
            del self.sessions[call.session_id]
        if call.counted:
            call.counted = False
            metrics.ACTIVE_CALLS.dec()
            self._publish_soon()

    # --- offers given up before they were taken ---------------------------------------------------
    @staticmethod
    def _offer_key(message: dict[str, Any]) -> tuple[str, str, Any]:
        return (message.get("session_id", ""), message.get("reply_channel", ""), message.get("offer_id"))

    async def _claimed(self, message: dict[str, Any]) -> bool:
        """Claim an offer for this worker, once across all workers and deliveries (a cache ``add``).

        channels-redis keeps a message popped from a shared channel in one backup list shared by
        every process reading that channel, and each reader's next receive pushes that list back
        (django/channels_redis#163): with two workers on ``media`` an offer was now and then
        delivered to both, both answered, and the caller never connected (bench/capacity.py, 16
        calls on two workers). The list can also hand it back to the worker that took it, whose
        call then answered it again as a re-offer (the scaled topology test, once). An offer passed
        on by a worker (``CAPACITY_HOPS_KEY``) was claimed by that worker already; an offer without
        an id, or a cache that fails, is taken as before.
        """
        offer_id = message.get("offer_id")
        if offer_id is None or message.get(CAPACITY_HOPS_KEY):
            return True
        key = "lingecho:offer:{}:{}:{}".format(*self._offer_key(message))
        try:
            return bool(await asyncio.to_thread(cache.add, key, self.worker_id, OFFER_CLAIM_SECONDS))
        except Exception:  # noqa: BLE001 - no cache: a rare double answer beats refusing every call
            return True

    def _bury(self, message: dict[str, Any]) -> None:
        """A hang-up for a call this worker does not hold: refuse that offer if it comes here later."""
        if message.get("offer_id") is None:
            return
        now = time.monotonic()
        if len(self._tombstones) >= MAX_TOMBSTONES:
            self._tombstones = {k: t for k, t in self._tombstones.items() if t > now}
            while len(self._tombstones) >= MAX_TOMBSTONES:
                self._tombstones.pop(next(iter(self._tombstones)))
        self._tombstones[self._offer_key(message)] = now + TOMBSTONE_SECONDS

    def _buried(self, message: dict[str, Any]) -> bool:
        until = self._tombstones.pop(self._offer_key(message), None)
        return until is not None and until > time.monotonic()


# --------------------------------------------------------------------------------------------
# the process's worker
# --------------------------------------------------------------------------------------------

_worker: MediaWorker | None = None
_worker_lock = threading.Lock()


def process_worker() -> MediaWorker:
    """This process's worker (created on first use, with the default channel layer)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = MediaWorker(get_channel_layer())
        return _worker


def boot_runworker_process() -> None:
    """Called when ``runworker media`` imports the routes: beat before the first message arrives."""
    worker = process_worker()
    worker.start_heartbeat()
    start_warm_up()
    log.info("media worker up", extra={"worker_id": worker.worker_id, "channel": worker.channel})


class MediaWorkerConsumer(AsyncConsumer):
    """Channels' entry for the shared ``media`` channel under ``runworker media``."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        worker = process_worker()
        await worker.ensure_started()
        await worker.dispatch(message)
