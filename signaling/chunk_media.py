"""The chunk path's line to the media worker: a chunk session's sink that lives in a worker.

A chunk session (``signaling.chunk_sessions``) hands its flushed audio to a ``ChunkSink``. Here that
sink is :class:`RemoteChunkSink`: it sends each flush, idle, typed turn and the hang-up to the media
worker that took the session (``media.chunk_*``, see ``media_pipeline.contract``) and awaits the
worker's ``media.chunk_done``. Decoding, VAD, ASR, the buyer and TTS all run in the worker, as a
WebRTC call's do, so a scaled deployment scales both transports the same way and the loop that
acknowledges chunks never decodes.

Replies and the call's events come back on one channel per process, :class:`ChunkLink`'s, not on a
socket's: a chunk session outlives its socket (the resume window), so its events are routed by
session id to the session, which hands them to whichever socket is attached (or keeps them until
one is). The link also keeps each session's worker alive (``media.keepalive``) and notices when a
worker stops: the session's client is told (``ERR_CONNECTION_FAILED``, reason
``media_worker_lost``) and may start it again with its ``sessionId`` on another worker, as after a
server restart (``streamReset``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from lingecho.channel_layer import cancel_requested
from media_pipeline.contract import MEDIA_CHANNEL, to_worker
from signaling import gateway
from signaling.protocol import ErrorCode, ProtocolError
from signaling.socketio_events import to_wire

logger = logging.getLogger(__name__)

OPEN_TIMEOUT_SECONDS = 20.0  # a worker loads the session and, the first time, its engines
REQUEST_TIMEOUT_SECONDS = 30.0  # a flush, an idle or a typed turn; longer means the worker is stuck
CLOSE_TIMEOUT_SECONDS = 30.0  # the hang-up ends the session and stores the recording
CHECK_SECONDS = 5.0  # keepalives to the workers, and a look at whether they are still alive
WORKER_LOST = "media_worker_lost"

Emitter = Callable[[str, dict[str, Any]], Awaitable[None]]
CloseRequest = Callable[[str], Awaitable[None]]


class WorkerLost(Exception):
    """The session's media worker stopped answering (its heartbeat is gone, or a request timed out)."""


class ChunkLink:
    """This process's channel for its chunk sessions' workers: answers, events and liveness."""

    def __init__(self) -> None:
        self.layer: Any = None
        self.channel = ""
        self.sinks: dict[str, RemoteChunkSink] = {}
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._ending: set[asyncio.Task] = set()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    async def ensure(self) -> str:
        """Start receiving on this loop (once per loop and channel layer); returns the link's channel.

        Two sessions opening at once must not each start a link: the second would orphan the
        first's channel, and its answers with it. Checked and set under a lock of this loop."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            layer = get_channel_layer()
            if self._loop is loop and self.layer is layer and all(not t.done() for t in self._tasks):
                return self.channel
            for task in self._tasks:
                task.cancel()
            self.channel = await layer.new_channel()
            self.layer, self._loop = layer, loop
            self.pending = {}
            self._tasks = [loop.create_task(self._serve(), name="chunk-link"),
                           loop.create_task(self._watch(), name="chunk-link-watch")]
            return self.channel

    async def _serve(self) -> None:
        # ``cancelling()``: a cancel that a Redis call swallowed (CPython gh-86296) still ends the loop.
        while not cancel_requested():
            try:
                message = await self.layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a Redis hiccup: back off and keep serving
                logger.exception("chunk link receive failed")
                await asyncio.sleep(0.5)
                continue
            await self.route(message)

    async def route(self, message: dict[str, Any]) -> None:
        """One message from a worker, in arrival order (a call's events reach its client in order).

        Never awaits a worker, whose answers come through here: only a socket's channel (a send
        that fails fast when full) or a detached session's outbox."""
        kind = message.get("type")
        if kind == "media.chunk_done":
            future = self.pending.pop(str(message.get("request_id")), None)
            if future is not None and not future.done():
                future.set_result(message)
            return
        sink = self.sinks.get(str(message.get("session_id")))
        if sink is None:
            return
        if kind == "media.event":
            event = message.get("message") or {}
            await sink.deliver(str(event.get("type", "")), event.get("data") or {})
        elif kind == "media.session_end":
            self._spawn(sink.end_requested(str(message.get("reason") or "error")))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _watch(self) -> None:
        """Keep each session's worker from reaping its call, and notice a worker that stopped."""
        while not cancel_requested():
            await asyncio.sleep(CHECK_SECONDS)
            pinned = [sink for sink in self.sinks.values() if sink.worker_channel]
            if not pinned:
                continue
            try:
                live = await gateway.live_worker_channels()
            except Exception:  # noqa: BLE001 - the cache is down: no evidence a worker is gone
                logger.warning("media worker liveness unknown", exc_info=True)
                continue
            for sink in pinned:
                if sink.worker_channel not in live:
                    self._spawn(sink.lost())
                else:
                    with contextlib.suppress(Exception):
                        await self.layer.send(sink.worker_channel, to_worker(
                            "media.keepalive", session_id=sink.session_id, reply_channel=self.channel))


link = ChunkLink()


class RemoteChunkSink:
    """A chunk session's turn logic, in whichever media worker took the session."""

    def __init__(self, *, session_id: str, user_id: int, audio_config: dict[str, Any],
                 chunk_link: ChunkLink | None = None) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.audio_config = audio_config
        self.link = chunk_link or link
        self.worker_channel: str | None = None
        self._emit: Emitter | None = None
        self._request_close: CloseRequest | None = None
        self._waiting: set[asyncio.Future[dict[str, Any]]] = set()
        self._closed = False

    def bind(self, emit: Emitter, request_close: CloseRequest) -> None:
        """Where the call's events go (the chunk session) and how the call ends the session."""
        self._emit, self._request_close = emit, request_close

    # --- opening -------------------------------------------------------------------------------------
    async def open(self, *, opening: bool) -> None:
        """Have a media worker take the session; raises :class:`ProtocolError` when none can."""
        if not await gateway.live_worker_channels():
            raise ProtocolError(ErrorCode.CONNECTION_FAILED, "No media worker is running, so voice is "
                                "unavailable; try again shortly.", {"reason": "no_media_worker", "retry_after": 5000})
        self.link.sinks[self.session_id] = self
        try:
            result = await self._request(MEDIA_CHANNEL, "media.chunk_open", timeout=OPEN_TIMEOUT_SECONDS,
                                         user_id=self.user_id, audio_config=self.audio_config, opening=opening)
        except WorkerLost:
            self.link.sinks.pop(self.session_id, None)
            raise ProtocolError(ErrorCode.CONNECTION_FAILED, "No media worker took the session; try again shortly.",
                                {"reason": "no_media_worker", "retry_after": 5000}) from None
        except ProtocolError:
            self.link.sinks.pop(self.session_id, None)
            raise
        self.worker_channel = str(result.get("worker_channel") or "")

    # --- ChunkSink -------------------------------------------------------------------------------------
    async def audio(self, data: bytes) -> bool:
        """False when the worker could not take the flush now (saturated decoder, full channel): retried."""
        try:
            result = await self._pinned("media.chunk_audio", data=data)
        except ChannelFull:
            return False
        return bool(result.get("taken", True))

    async def idle(self) -> None:
        with contextlib.suppress(ChannelFull):
            await self._pinned("media.chunk_idle")

    async def text(self, text: str) -> bool:
        try:
            result = await self._pinned("media.chunk_text", text=text)
        except ChannelFull:
            raise ProtocolError(ErrorCode.RATE_LIMIT, "The session is busy; send that again shortly.",
                                {"retry_after": 1000}) from None
        return bool(result.get("queued"))

    async def close(self, reason: str) -> None:
        """Hang up: the worker ends the session, stores the recording and says ``session-ended`` first."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.worker_channel:
                with contextlib.suppress(WorkerLost, ProtocolError, ChannelFull):
                    await self._request(self.worker_channel, "media.hangup", timeout=CLOSE_TIMEOUT_SECONDS,
                                        reason=reason)
        finally:
            if self.link.sinks.get(self.session_id) is self:
                del self.link.sinks[self.session_id]

    # --- from the link -------------------------------------------------------------------------------
    async def deliver(self, kind: str, data: dict[str, Any]) -> None:
        """An event of the call, in Socket.IO's words: to the chunk session (its socket, or its
        outbox while detached)."""
        wire = to_wire(kind, data)
        if wire is None:
            logger.warning("chunk event dropped", extra={"session_id": self.session_id, "event": kind[:40]})
            return
        if self._emit is not None:
            await self._emit(*wire)

    async def end_requested(self, reason: str) -> None:
        """The call ended itself (``max_turns``, the worker draining): end the chunk session."""
        if self._request_close is not None and not self._closed:
            await self._request_close(reason)

    async def lost(self) -> None:
        """The worker stopped: fail what waits on it, tell the client, let the session be started again."""
        if self._closed:
            return
        self._closed = True
        if self.link.sinks.get(self.session_id) is self:
            del self.link.sinks[self.session_id]
        for future in list(self._waiting):
            if not future.done():
                future.set_exception(WorkerLost(self.worker_channel or ""))
        logger.warning("chunk session lost its media worker", extra={"session_id": self.session_id})
        if self._emit is not None:
            await self._emit("error", {
                "code": ErrorCode.CONNECTION_FAILED,
                "message": "The media worker of this session stopped. Start the session again with its "
                           "sessionId to continue; the recorder starts a new stream.",
                "details": {"reason": WORKER_LOST, "retry_after": 1000},
            })
        if self._request_close is not None:
            await self._request_close(WORKER_LOST)

    # --- requests ------------------------------------------------------------------------------------
    async def _pinned(self, kind: str, **data: Any) -> dict[str, Any]:
        if self._closed or not self.worker_channel:
            raise ProtocolError(ErrorCode.SESSION_NOT_FOUND, "The session has ended.")
        try:
            return await self._request(self.worker_channel, kind, timeout=REQUEST_TIMEOUT_SECONDS, **data)
        except WorkerLost:
            self.link._spawn(self.lost())  # noqa: SLF001 - the link keeps the task alive
            raise ProtocolError(ErrorCode.CONNECTION_FAILED, "The media worker of this session stopped.",
                                {"reason": WORKER_LOST}) from None

    async def _request(self, channel: str, kind: str, *, timeout: float, **data: Any) -> dict[str, Any]:
        """Send one request and await its ``media.chunk_done``; raises WorkerLost on a timeout."""
        reply_channel = await self.link.ensure()
        request_id = secrets.token_hex(8)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.link.pending[request_id] = future
        self._waiting.add(future)
        try:
            await self.link.layer.send(channel, to_worker(kind, session_id=self.session_id, reply_channel=reply_channel,
                                                          request_id=request_id, **data))
            answer = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise WorkerLost(channel) from None
        finally:
            self.link.pending.pop(request_id, None)
            self._waiting.discard(future)
        error = answer.get("error")
        if error is not None:
            code = ErrorCode(error.get("code", ErrorCode.CONNECTION_FAILED))
            raise ProtocolError(code, str(error.get("message", "")), error.get("details") or {})
        return answer.get("result") or {}


__all__ = ["ChunkLink", "RemoteChunkSink", "WorkerLost", "link"]
