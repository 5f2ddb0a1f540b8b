"""SessionManager: per-session audio buffering for the chunk fallback, independent of any socket.

A chunk session outlives the WebSocket that feeds it: the manager is one per process, keyed by
session id, so when a phone drops off the network mid-utterance and reconnects, the new socket
of the same user re-attaches to the same buffer, decoder and VAD state and carries on from the
next offset, with nothing lost and nothing heard twice.

Offsets are chunk indexes (0, 1, 2, ... of one recorder stream). The manager accepts each index
once: a repeat is acknowledged and ignored; an index ahead of the next expected one is held
and the gap is reported so the client can resend; when the gap is filled the held chunks follow
in order. Only a window of ``OFFSET_WINDOW`` indexes past the next expected one is held (32 s of
250 ms pieces): an offset beyond it is refused (``ERR_INVALID_MESSAGE``), so the held chunks are
at most that many and finding a gap costs at most that many steps, whatever offset a client
sends (2**62 once walked every index in between on the event loop).

In-order bytes wait in ``buffer`` until a flush hands them to the session's consumer of audio
(decoder → VAD → turn logic), one flush at a time per session:

- as soon as the previous flush has been processed (so a slow moment batches chunks instead
  of queueing tasks) and at most once per ``CHUNK_DECODE_INTERVAL_MS`` (so a live stream of
  250 ms pieces is decoded and VAD-scored a few pieces per executor call, not one hop per
  piece), never more than ``CHUNK_FLUSH_BYTES`` (32 KB) per flush; a backlog of a full flush
  or more goes at once;
- after ``CHUNK_IDLE_FLUSH_SECONDS`` (2 s) with no new data: an *idle* flush, which also tells
  the turn logic that the stream paused (a turn still open is closed and answered).

Memory per session is bounded by ``CHUNK_MAX_BUFFER_BYTES`` (buffer plus held chunks); past it
a chunk is refused (the client retries). The buffer is the session's one bounded queue: when the
decoder is saturated the sink says so (``audio`` returns False), the bytes go back to the front
of the buffer and are retried, so a full queue reaches the client as ``ERR_RATE_LIMIT`` with
``retry_after`` on its next chunk, and no audio is dropped.

A chunk is acknowledged as soon as :meth:`ChunkSession.receive` has validated and buffered it:
``receive`` is synchronous and does no I/O, decoding or database work. A sweep every ``CHUNK_SWEEP_SECONDS`` (60 s) ends
sessions idle for ``CHUNK_SESSION_TIMEOUT_SECONDS`` (30 min) and sessions whose socket has been
gone longer than the resume window.

This module knows nothing about Socket.IO or Django models: the consumer gives each session a
``ChunkSink`` (decode and answer) and an emitter (send an event to whoever is attached).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

from lingecho.channel_layer import cancel_until_done
from signaling.protocol import ErrorCode

logger = logging.getLogger(__name__)

OFFSET_WINDOW = 128  # how far past the next expected offset a chunk may be (and how many are held)
MAX_GAP_REPORT = 32  # missing offsets listed in one audio-received; the client learns the rest later
MAX_OUTBOX = 64  # events kept for a detached session until its socket comes back
BUSY_RETRY_SECONDS = 0.25  # a saturated decoder is asked again after this long

Emitter = Callable[[str, dict[str, Any]], Awaitable[None]]


class ChunkRefused(Exception):
    """A chunk the manager will not take (over the memory bound, or the session is closing)."""

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class ChunkSink(Protocol):
    """Where flushed audio goes: the session's call in a media worker (signaling.chunk_media).

    ``audio`` returns False when it could not take the bytes now (its decoder is saturated); the
    session keeps them and retries after ``BUSY_RETRY_SECONDS``. None or True: taken."""

    async def audio(self, data: bytes) -> bool | None: ...

    async def idle(self) -> None: ...

    async def close(self, reason: str) -> None: ...


@dataclass
class ChunkLimits:
    flush_bytes: int
    idle_flush_seconds: float
    session_timeout_seconds: float
    sweep_seconds: float
    max_buffer_bytes: int
    resume_seconds: float
    decode_interval_seconds: float = 0.0  # minimum spacing of flushes while a stream is live
    offset_window: int = OFFSET_WINDOW

    @classmethod
    def from_settings(cls) -> ChunkLimits:
        return cls(
            flush_bytes=settings.CHUNK_FLUSH_BYTES,
            idle_flush_seconds=settings.CHUNK_IDLE_FLUSH_SECONDS,
            session_timeout_seconds=settings.CHUNK_SESSION_TIMEOUT_SECONDS,
            sweep_seconds=settings.CHUNK_SWEEP_SECONDS,
            max_buffer_bytes=settings.CHUNK_MAX_BUFFER_BYTES,
            resume_seconds=float(settings.SESSION_RESUME_SECONDS),
            decode_interval_seconds=settings.CHUNK_DECODE_INTERVAL_MS / 1000,
        )


@dataclass(frozen=True)
class ChunkReceipt:
    """What ``audio-received`` reports for one chunk."""

    offset: int
    size: int
    duplicate: bool
    next_offset: int
    missing: list[int]

    def payload(self, timestamp_ms: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "audioSize": self.size,
            "offset": self.offset,
            "timestamp": timestamp_ms,
            "nextOffset": self.next_offset,
        }
        if self.duplicate:
            body["duplicate"] = True
        if self.missing:
            # ``missing`` is the first offset to resend (what a simple client needs); the list helps a smarter one.
            body["gap"] = True
            body["missing"] = self.missing[0]
            body["missingOffsets"] = self.missing
        return body


@dataclass
class ChunkSession:
    session_id: str
    user_id: int
    sink: ChunkSink
    limits: ChunkLimits
    audio_config: dict[str, Any] = field(default_factory=dict)
    next_offset: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    held: dict[int, bytes] = field(default_factory=dict)
    bytes_received: int = 0
    chunks_received: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    last_data: float = field(default_factory=time.monotonic)
    detached_at: float | None = None
    closed: bool = False
    _emitter: Emitter | None = None
    _owner: object | None = None
    _outbox: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None
    _idle_due: bool = False
    _idle_handle: asyncio.TimerHandle | None = None
    _next_flush: float = 0.0  # loop time before which a new flush waits for more pieces

    # --- sockets -------------------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        return self._emitter is not None

    def is_owned_by(self, owner: object) -> bool:
        return self._owner is owner

    async def attach(self, owner: object, emitter: Emitter) -> object | None:
        """Attach a socket; returns the previous owner (a stale socket) so the caller can drop it."""
        previous = self._owner if self._owner is not owner else None
        self._owner, self._emitter, self.detached_at = owner, emitter, None
        self.touch()
        outbox, self._outbox = self._outbox, []
        for name, data in outbox:  # what the session said while nobody was listening
            await self.emit(name, data)
        return previous

    def detach(self, owner: object) -> None:
        if self._owner is owner:
            self._owner, self._emitter, self.detached_at = None, None, time.monotonic()

    async def emit(self, name: str, data: dict[str, Any]) -> None:
        emitter = self._emitter
        if emitter is None:
            if len(self._outbox) < MAX_OUTBOX:
                self._outbox.append((name, data))
            return
        try:
            await emitter(name, data)
        except Exception:  # noqa: BLE001 - a dying socket must not break the session
            logger.warning("could not deliver %s", name, extra={"session_id": self.session_id})

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    # --- chunks --------------------------------------------------------------------------------
    def receive(self, offset: int, data: bytes) -> ChunkReceipt:
        """Take chunk ``offset``; idempotent. Raises :class:`ChunkRefused` over the memory bound."""
        if self.closed:
            raise ChunkRefused(ErrorCode.SESSION_NOT_FOUND, "The session has ended.")
        self.touch()
        if offset < self.next_offset or offset in self.held:
            return ChunkReceipt(offset, len(data), True, self.next_offset, self._missing())
        window = self.limits.offset_window
        if offset - self.next_offset > window:
            raise ChunkRefused(
                ErrorCode.INVALID_MESSAGE,
                f"Chunk {offset} is more than {window} chunks ahead of the next expected one "
                f"({self.next_offset}); send from there.",
                offset=offset,
                next_offset=self.next_offset,
                limit=window,
            )
        pending = len(self.buffer) + sum(len(b) for b in self.held.values())
        if pending + len(data) > self.limits.max_buffer_bytes:
            raise ChunkRefused(
                ErrorCode.RATE_LIMIT,
                "Audio is arriving faster than it can be processed; resend this chunk shortly.",
                retry_after=500,
                offset=offset,
            )
        self.bytes_received += len(data)
        self.chunks_received += 1
        self.last_data = time.monotonic()
        if offset == self.next_offset:
            self._append(data)
            while self.next_offset in self.held:
                self._append(self.held.pop(self.next_offset))
        else:
            self.held[offset] = data
        self._arm_idle_timer()
        self._wake.set()
        return ChunkReceipt(offset, len(data), False, self.next_offset, self._missing())

    def _append(self, data: bytes) -> None:
        self.buffer += data
        self.next_offset += 1

    def _missing(self) -> list[int]:
        """The first offsets not yet received below the highest held one: O(window) at most."""
        missing: list[int] = []
        if self.held:
            for i in range(self.next_offset, max(self.held)):
                if i not in self.held:
                    missing.append(i)
                    if len(missing) == MAX_GAP_REPORT:
                        break
        return missing

    def reset_stream(self) -> None:
        """A new recorder stream starts at offset 0 (after a server restart lost the decoder)."""
        self.next_offset = 0
        self.held.clear()
        self.buffer.clear()

    # --- flushing ------------------------------------------------------------------------------
    def _arm_idle_timer(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        loop = asyncio.get_running_loop()
        self._idle_handle = loop.call_later(self.limits.idle_flush_seconds, self._idle_fired)

    def _idle_fired(self) -> None:
        self._idle_handle = None
        self._idle_due = True
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"chunks-{self.session_id}")

    async def _run(self) -> None:
        """One flush at a time: the audio of a session is decoded strictly in order."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            await self._wake.wait()
            self._wake.clear()
            while self.buffer and not self.closed:
                wait = self._next_flush - loop.time()
                if wait > 0 and len(self.buffer) < self.limits.flush_bytes:
                    await asyncio.sleep(wait)  # pieces arriving meanwhile join this flush
                    continue
                n = min(len(self.buffer), self.limits.flush_bytes)
                data = bytes(self.buffer[:n])
                del self.buffer[:n]
                self._next_flush = loop.time() + self.limits.decode_interval_seconds
                if await self._deliver(self.sink.audio(data)) is False:
                    # Saturated decoder: keep the bytes (in order, at the front) and try again shortly.
                    # Meanwhile the buffer fills and the memory bound turns new chunks away with a retry hint.
                    self.buffer[:0] = data
                    await asyncio.sleep(BUSY_RETRY_SECONDS)
            if self._idle_due and not self.closed and not self.buffer:
                self._idle_due = False
                await self._deliver(self.sink.idle())

    async def _deliver(self, work: Awaitable[Any]) -> Any:
        try:
            return await work
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the turn logic reports its own errors; keep flushing
            logger.exception("chunk session flush failed", extra={"session_id": self.session_id})
            return None

    async def close(self, reason: str) -> None:
        """Stop flushing and let the sink finish (end the session, save the recording)."""
        if self.closed:
            return
        self.closed = True
        if self._idle_handle is not None:
            self._idle_handle.cancel()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            self._wake.set()
            # Repeated until it lands: a flush in the middle of a Redis send to the media worker can
            # swallow one cancel (CPython gh-86296, see lingecho.channel_layer).
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await cancel_until_done(task)
        await self.sink.close(reason)


class SessionManager:
    """All chunk sessions of this process."""

    def __init__(self, limits: ChunkLimits | None = None) -> None:
        self._limits = limits
        self.sessions: dict[str, ChunkSession] = {}
        self._sweeper: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def limits(self) -> ChunkLimits:
        # Read lazily so tests (and settings overrides) see the current values.
        return self._limits or ChunkLimits.from_settings()

    def get(self, session_id: str) -> ChunkSession | None:
        return self.sessions.get(session_id)

    def open(self, *, session_id: str, user_id: int, sink: ChunkSink, audio_config: dict[str, Any]) -> ChunkSession:
        session = ChunkSession(session_id=session_id, user_id=user_id, sink=sink, limits=self.limits,
                               audio_config=audio_config)
        self.sessions[session_id] = session
        session.start()
        self._ensure_sweeper()
        return session

    async def close(self, session_id: str, reason: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            await session.close(reason)

    # --- sweeping ------------------------------------------------------------------------------
    def _ensure_sweeper(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sweeper is None or self._sweeper.done() or self._loop is not loop:
            self._loop = loop
            self._sweeper = loop.create_task(self._sweep_forever(), name="chunk-session-sweeper")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.limits.sweep_seconds)
            await self.sweep()
            if not self.sessions:
                self._sweeper = None
                return

    async def sweep(self, now: float | None = None) -> list[str]:
        """End sessions idle past the timeout, or detached past the resume window. Returns their ids."""
        now = time.monotonic() if now is None else now
        limits = self.limits
        expired = []
        for sid, session in list(self.sessions.items()):
            idle = now - session.last_activity >= limits.session_timeout_seconds
            gone = session.detached_at is not None and now - session.detached_at >= limits.resume_seconds
            if idle or gone:
                expired.append(sid)
                logger.info("chunk session expired", extra={"session_id": sid, "idle": idle})
                # Same words as the session lifecycle sweep, whichever of the two gets there first.
                await self.close(sid, "timeout" if idle else "dropped")
        return expired

    def stats(self) -> dict[str, int]:
        return {
            "sessions": len(self.sessions),
            "attached": sum(1 for s in self.sessions.values() if s.attached),
            "buffered_bytes": sum(len(s.buffer) + sum(map(len, s.held.values())) for s in self.sessions.values()),
        }


manager = SessionManager()

__all__ = [
    "OFFSET_WINDOW", "ChunkLimits", "ChunkReceipt", "ChunkRefused", "ChunkSession", "ChunkSink", "SessionManager",
    "manager",
]
