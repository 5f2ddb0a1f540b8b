"""One audio-chunk call in the media worker: the worker's side of a Socket.IO fallback session.

Signaling keeps what belongs to the socket (offsets, acknowledgements, the resume window: see
``signaling.chunk_sessions``) and sends the call its audio flushes, idles, typed turns and the
hang-up as ``media.chunk_*`` requests (``media_pipeline.contract``). This class runs them strictly
in order on the worker's loop (audio must be decoded in order) and answers each one with
``media.chunk_done``; the turn logic (:class:`ChunkTurns`) and every engine run here, so the loop
that acknowledges chunks never shares a process, let alone a GIL, with decoding in a scaled setup.

It has the surface the worker's registry expects of any call (``closed``, ``last_signal``, ``touch``,
``submit``, ``error``, ``end_session``, ``close``, ``counted``, ``on_closed``), the same as
``webrtc.call.CallSession``: admission, the idle reaper and the drain treat both transports alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from media_pipeline import contract
from media_pipeline.chunked.turns import ChunkTurns, load_call_facts
from media_pipeline.contract import ErrorCode

log = logging.getLogger(__name__)

# Requests waiting behind the one being handled. Signaling sends one flush at a time per session
# (plus a typed turn or a hang-up), so more than this is a confused or hostile sender.
MAX_QUEUED_REQUESTS = 16


class ChunkCall:
    """A chunked session's turn logic in this worker, driven by ``media.chunk_*`` requests."""

    kind = "chunk"

    def __init__(self, *, session_id: str, layer: Any, worker_channel: str, reply_channel: str) -> None:
        self.session_id = session_id
        self.layer = layer
        self.worker_channel = worker_channel
        self.reply_channel = reply_channel
        self.turns: ChunkTurns | None = None
        self.closed = False
        self.counted = False  # in the worker's ACTIVE_CALLS
        self.on_closed: Any = None  # set by the worker: drop from the registry
        self.last_signal = time.monotonic()
        self.finished = asyncio.Event()  # set once closed: the session ended, the recording stored
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=MAX_QUEUED_REQUESTS)
        self._runner = asyncio.get_running_loop().create_task(self._run(), name=f"chunk-call-{session_id}")

    # --- the registry's surface ---------------------------------------------------------------------
    def touch(self) -> None:
        self.last_signal = time.monotonic()

    def submit(self, message: dict[str, Any]) -> None:
        self.touch()
        if message.get("reply_channel"):
            self.reply_channel = message["reply_channel"]
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            asyncio.get_running_loop().create_task(self._answer(message, error=contract.error_body(
                ErrorCode.RATE_LIMIT, "Too many requests for this session at once.", {"retry_after": 500})))

    async def error(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> None:
        await self._event(contract.ChunkEvent.ERROR, contract.error_body(code, message, details))

    async def end_session(self, reason: str) -> None:
        """Ask signaling to end the session (it closes its chunk session, which hangs this call up)."""
        try:
            await self.layer.send(self.reply_channel, {"type": "media.session_end", "session_id": self.session_id,
                                                       "reason": reason})
        except Exception:  # noqa: BLE001 - signaling gone: the session lifecycle sweep ends the session
            log.warning("session end not delivered", extra={"session_id": self.session_id, "reason": reason})

    async def close(self, reason: str = "user_requested") -> None:
        """End the call: the turn logic ends the session, stores the recording and says ``session-ended``."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.turns is not None:
                await self.turns.close(reason)
        finally:
            self.finished.set()
            if self.on_closed:
                self.on_closed(self)
            if asyncio.current_task() is not self._runner:
                self._runner.cancel()

    # --- requests, in order -----------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self.closed:
            message = await self.queue.get()
            kind = message.get("type", "")
            try:
                result = await self._handle(kind, message)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one failed request must not end the call silently
                log.exception("chunk request failed", extra={"session_id": self.session_id, "type": kind})
                await self._answer(message, error=contract.error_body(
                    ErrorCode.CONNECTION_FAILED, "The media worker could not handle that request."))
                continue
            await self._answer(message, result=result)

    async def _handle(self, kind: str, message: dict[str, Any]) -> dict[str, Any]:
        if kind == "media.chunk_open":
            return await self._open(message)
        if kind == "media.hangup":
            await self.close(str(message.get("reason") or "user_requested"))
            return {"closed": True}
        turns = self.turns
        if turns is None:
            raise RuntimeError("chunk request before the call was opened")
        if kind == "media.chunk_audio":
            return {"taken": await turns.audio(bytes(message.get("data") or b""))}
        if kind == "media.chunk_idle":
            await turns.idle()
            return {}
        if kind == "media.chunk_text":
            return {"queued": await turns.text(str(message.get("text") or ""))}
        return {}

    async def _open(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.turns is None:
            turns = ChunkTurns(await load_call_facts(self.session_id), dict(message.get("audio_config") or {}))
            await turns.save_metadata()
            turns.bind(self._event, self.end_session)
            self.turns = turns
            if message.get("opening"):
                turns.opening()
        return {"worker_channel": self.worker_channel}

    async def _event(self, name: str, data: dict[str, Any]) -> None:
        try:
            await self.layer.send(self.reply_channel, contract.event(name, data, session_id=self.session_id))
        except Exception:  # noqa: BLE001 - a vanished link (ChannelFull) must not kill the call
            log.warning("event not delivered", extra={"session_id": self.session_id, "event": name})

    async def _answer(self, message: dict[str, Any], *, result: dict[str, Any] | None = None,
                      error: dict[str, Any] | None = None) -> None:
        request_id = message.get("request_id")
        if not request_id:
            return
        with contextlib.suppress(Exception):  # the link is gone: its request times out there
            await self.layer.send(message.get("reply_channel") or self.reply_channel, contract.chunk_done(
                str(request_id), session_id=self.session_id, result=result, error=error))


__all__ = ["ChunkCall"]
