"""The audio-chunk fallback at ``/socket.io/``: Socket.IO v5 / Engine.IO v4 on a Channels consumer.

For trainees whose network will not carry WebRTC. The browser's MediaRecorder sends 250 ms
pieces as ``audio-chunk`` events; the SessionManager (signaling.chunk_sessions) buffers them
per session and hands each flush to the session's call in a media worker (signaling.chunk_media
→ media_pipeline.chunked), which decodes, endpoints, transcribes and answers with the same
engines and the same turn service as the WebRTC path.

Layout as in the other consumer: socket events (connect / receive / disconnect), command
handlers (one ``on_<event>`` per Socket.IO event), channel-layer handlers. Database work is
signaling.gateway's, shared with the voice consumer: it raises :class:`ProtocolError` with this
transport's wire code already chosen. Framing is signaling.socketio_wire; the Origin check and the cookie or
``?token=`` user come from the websocket stack in signaling.auth, and a CONNECT packet may carry
``auth: {token}`` (a JWT) instead.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser

from media_pipeline.contract import CHUNK_AUDIO_FORMATS
from signaling import gateway, shutdown
from signaling.auth import AUTH_UNAVAILABLE, AuthUnavailable, query_params, user_from_token
from signaling.chunk_media import RemoteChunkSink
from signaling.chunk_sessions import ChunkRefused, ChunkSession, manager
from signaling.db import database_unavailable, until_recorded
from signaling.protocol import MAX_ID_CHARS, CloseCode, ErrorCode, ProtocolError, invalid, now_ms
from signaling.ratelimit import TokenBucket
from signaling.sending import DropSendsAfterClose
from signaling.socketio_wire import (
    ENGINEIO_VERSION,
    Ack,
    Close,
    Connect,
    Disconnect,
    Event,
    Ping,
    Pong,
    SocketIOWire,
    WireError,
)

logger = logging.getLogger(__name__)

CHUNK_MS = 250  # what the page's MediaRecorder uses; advertised in audioConfig
CONNECT_TIMEOUT_SECONDS = 10.0  # an Engine.IO socket that never sends a Socket.IO CONNECT is closed
MAX_TEXT_CHARS = 4000
MAX_STREAM_CHUNKS = 2**31 - 1  # totalChunks: 17 years of 250 ms pieces (offsets: the session's window)
EVENTS = ("start-session", "audio-chunk", "end-session", "text-message")


def ping_interval_seconds() -> float:
    return settings.WS_PING_INTERVAL_SECONDS


def ping_timeout_seconds() -> float:
    # The client gives up after pingInterval + pingTimeout without a ping; make that the idle limit.
    return max(1.0, settings.WS_IDLE_TIMEOUT_SECONDS - settings.WS_PING_INTERVAL_SECONDS)


class SocketIOConsumer(DropSendsAfterClose, AsyncWebsocketConsumer):
    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' own ``dispatch`` runs ``close_old_connections`` on the one shared sync thread
        before *every* message, so each audio chunk's ack waited behind whatever database write
        (a turn being recorded, a commit waiting on the SQLite lock) held that thread: seconds at
        100 clients. This consumer touches the database only through ``database_sync_to_async``
        helpers, which close stale connections around themselves, so the per-message hop is skipped."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- socket events ---------------------------------------------------------------------------
    async def connect(self) -> None:
        params = query_params(self.scope)
        if params.get("EIO") != ENGINEIO_VERSION or params.get("transport", "websocket") != "websocket":
            await self.close(code=4400)  # refused before accept: only EIO=4 over WebSocket
            return
        self.wire = SocketIOWire(max_frame_bytes=settings.WS_MAX_MESSAGE_BYTES)
        self.sid = secrets.token_urlsafe(15)
        self.user: AbstractBaseUser | None = None
        self.chunk: ChunkSession | None = None
        self.bucket = TokenBucket(rate=settings.WS_RATE_PER_SECOND, burst=settings.WS_RATE_BURST)
        self.violations = 0
        self.last_pong = time.monotonic()
        self.closing = False
        await self.accept()
        await self.send(text_data=self.wire.open(
            sid=self.sid,
            ping_interval_ms=int(ping_interval_seconds() * 1000),
            ping_timeout_ms=int(ping_timeout_seconds() * 1000),
            max_payload=settings.WS_MAX_MESSAGE_BYTES,
        ))
        self.heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(), name=f"sio-ping-{self.sid}")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Decode, charge the socket's token bucket, dispatch.

        Every packet costs a token, whatever it is: CONNECT (each one with a token is a database
        query), PING, PONG, events, and frames that are not valid at all. A binary event and its
        attachment frames are one packet, charged when complete."""
        if self.closing:
            return
        frame: str | bytes = text_data if text_data is not None else (bytes_data or b"")
        if len(frame) > settings.WS_MAX_MESSAGE_BYTES:
            if await self._spend():
                await self._error(invalid(
                    f"Message of {len(frame)} bytes exceeds the {settings.WS_MAX_MESSAGE_BYTES}-byte limit.",
                    limit=settings.WS_MAX_MESSAGE_BYTES,
                ))
            return
        try:
            packet = self.wire.feed(frame)
        except WireError as exc:
            if await self._spend():
                await self._error(invalid(f"Malformed Socket.IO frame: {exc}"))
            return
        if packet is None:
            return
        if not await self._spend(packet.ack_id if isinstance(packet, Event) else None):
            return
        if isinstance(packet, Pong):
            self.last_pong = time.monotonic()
        elif isinstance(packet, Ping):
            await self.send(text_data=self.wire.pong(packet.data))
        elif isinstance(packet, Close):
            await self.close()
        elif isinstance(packet, Connect):
            await self.on_connect(packet)
        elif isinstance(packet, Disconnect):
            await self.close()
        elif isinstance(packet, Ack):
            return
        elif isinstance(packet, Event):
            await self._dispatch(packet)

    async def disconnect(self, code: int) -> None:
        heartbeat = getattr(self, "heartbeat", None)
        if heartbeat is not None:
            heartbeat.cancel()
        chunk = getattr(self, "chunk", None)
        if chunk is not None and chunk.is_owned_by(self):
            # Not the end of the call: the session waits (resume window) for the client to come back.
            chunk.detach(self)
            session_id = chunk.session_id
            await until_recorded(lambda: gateway.mark_dropped(session_id=session_id), what="session dropped")
        self.chunk = None

    # --- command handlers ----------------------------------------------------------------------
    async def on_connect(self, packet: Connect) -> None:
        if packet.namespace != "/":
            await self._frames(self.wire.connect_error("Invalid namespace", namespace=packet.namespace))
            return
        if self.user is not None:
            # One CONNECT per socket: a repeat would only cost a token check against the database.
            await self._error(invalid("This socket is already connected; send CONNECT once."))
            return
        user = self.scope.get("user")
        unavailable = bool(self.scope.get(AUTH_UNAVAILABLE))
        token = packet.auth.get("token") if isinstance(packet.auth, dict) else None
        if isinstance(token, str) and token:
            try:
                user = await user_from_token(token)  # an auth token decides, as ?token= does
                unavailable = False
            except AuthUnavailable:
                unavailable = True
        if unavailable:
            # The database is down, the credentials may be fine: say so and keep the socket for a retry.
            refusal = database_unavailable()
            details = refusal.details
            await self._frames(self.wire.connect_error(
                refusal.message, data={"code": details["reason"], "retry_after": details["retry_after"]},
            ))
            return
        if user is None or not user.is_authenticated:
            await self._frames(self.wire.connect_error("Authentication required", data={"code": "unauthorized"}))
            await self.close(code=4401)
            return
        self.user = user
        await self._frames(self.wire.connect_ack(sid=self.sid))

    async def _dispatch(self, event: Event) -> None:
        if self.user is None:
            await self._error(invalid("Send a Socket.IO CONNECT (with auth) before any event."))
            return
        if event.namespace != "/":
            await self._error(invalid("Only the default namespace / is served."), ack_id=event.ack_id)
            return
        handler = {
            "start-session": self.on_start_session,
            "audio-chunk": self.on_audio_chunk,
            "end-session": self.on_end_session,
            "text-message": self.on_text_message,
        }.get(event.name)
        data = event.args[0] if event.args else {}
        try:
            if handler is None:
                raise invalid(f"Unknown event {event.name[:40]!r}.", known=list(EVENTS))
            if not isinstance(data, dict):
                raise invalid(f"The {event.name} payload must be an object.")
            reply = await handler(data)
        except ProtocolError as exc:
            await self._error(exc, ack_id=event.ack_id)
            return
        if event.ack_id is not None:
            await self._frames(self.wire.ack(event.ack_id, reply if reply is not None else {"ok": True}))

    async def on_start_session(self, data: dict[str, Any]) -> dict[str, Any]:
        self._refuse_during_shutdown()
        if self.chunk is not None and not self.chunk.closed:
            raise invalid("A session is already running on this socket; end it first.")
        self.chunk = None  # ended under it (its media worker stopped): this socket may start it again
        audio_config = _audio_config(data.get("audioConfig"))
        session_id = data.get("sessionId")
        if session_id is not None and (not isinstance(session_id, str) or len(session_id) > MAX_ID_CHARS):
            raise invalid(f"sessionId must be a string of at most {MAX_ID_CHARS} characters, or null.",
                          limit=MAX_ID_CHARS)
        if session_id:
            return await self._resume(session_id, audio_config)
        scenario_id = data.get("scenarioId")
        if not _valid_scenario_id(scenario_id):
            raise invalid("scenarioId is required to start a new session: a positive integer.")
        info = await gateway.open_session(user=self.user, scenario_id=str(scenario_id),
                                          transport=gateway.Transport.CHUNK)
        chunk = await self._open(info.session_id, audio_config, opening=True)
        started = self._started_payload(info, audio_config, resumed=False, next_offset=0)
        await self._emit("session-started", started)
        await chunk.attach(self, self._emit_via_layer)  # the opening line waited in its outbox till now
        self.chunk = chunk
        return started

    async def _resume(self, session_id: str, audio_config: dict[str, Any]) -> dict[str, Any]:
        info = await gateway.resume_session(user=self.user, session_id=session_id, transport=gateway.Transport.CHUNK)
        chunk = manager.get(session_id)
        stream_reset = chunk is None
        if chunk is None:
            # This process never had the session (or restarted, or its worker stopped): the recorder
            # must start a new stream.
            chunk = await self._open(session_id, audio_config, opening=False)
        elif chunk.user_id != self.user.pk:
            raise gateway.refused(gateway.Transport.CHUNK, gateway.Refusal.SESSION_NOT_FOUND, "No such session.",
                                  session=session_id[:64])
        started = self._started_payload(info, chunk.audio_config, resumed=True, next_offset=chunk.next_offset)
        started["streamReset"] = stream_reset
        await self._emit("session-started", started)
        previous = await chunk.attach(self, self._emit_via_layer)
        self.chunk = chunk
        if previous is not None and hasattr(previous, "channel_name"):
            # The old socket of this session is stale (a phone that switched networks): retire it.
            await self.channel_layer.send(previous.channel_name, {"type": "chunk.takeover"})
        return started

    async def _open(self, session_id: str, audio_config: dict[str, Any], *, opening: bool) -> ChunkSession:
        """A chunk session whose call a media worker has taken; refused (the session left resumable)
        when no worker can take it: none running, or all lines busy."""
        sink = RemoteChunkSink(session_id=session_id, user_id=self.user.pk, audio_config=audio_config)
        chunk = manager.open(session_id=session_id, user_id=self.user.pk, sink=sink, audio_config=audio_config)
        sink.bind(chunk.emit, lambda reason: manager.close(session_id, reason))
        try:
            await sink.open(opening=opening)
        except ProtocolError:
            await manager.close(session_id, "dropped")
            await until_recorded(lambda: gateway.mark_dropped(session_id=session_id), what="session dropped")
            raise
        return chunk

    @staticmethod
    def _started_payload(
        info: gateway.SessionInfo, audio_config: dict[str, Any], *, resumed: bool, next_offset: int,
    ) -> dict[str, Any]:
        return {
            "sessionId": info.session_id,
            "maxTurns": info.max_turns,
            "buyerPersona": info.buyer_persona,
            "audioConfig": audio_config,
            "resumed": resumed,
            "nextOffset": next_offset,
        }

    async def on_audio_chunk(self, data: dict[str, Any]) -> dict[str, Any]:
        chunk = self._session_for(data)
        offset = data.get("offset")
        if not _integer(offset) or offset < 0:
            # How far ahead is the session's to say (its window), with the offset it expects.
            raise invalid("offset must be a non-negative integer (the chunk's index in the stream).")
        total = data.get("totalChunks")
        if total is not None and not (_integer(total) and 1 <= total <= MAX_STREAM_CHUNKS):
            raise invalid("totalChunks, when given, must be a positive integer.", offset=offset,
                          limit=MAX_STREAM_CHUNKS)
        raw = data.get("audioData")
        if isinstance(raw, (bytes, bytearray)):
            audio = bytes(raw)
        elif isinstance(raw, str):
            try:
                audio = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise invalid("audioData is not valid base64.", offset=offset) from None
        else:
            raise invalid("audioData must be a base64 string or binary.", offset=offset)
        if not audio:
            raise invalid("audioData is empty.", offset=offset)
        if len(audio) > settings.CHUNK_FLUSH_BYTES:
            raise invalid(
                f"Chunk of {len(audio)} bytes exceeds the {settings.CHUNK_FLUSH_BYTES}-byte limit; "
                "send smaller pieces.",
                offset=offset, limit=settings.CHUNK_FLUSH_BYTES,
            )
        try:
            receipt = chunk.receive(offset, audio)
        except ChunkRefused as exc:
            raise ProtocolError(exc.code, exc.message, exc.details) from None
        body = receipt.payload(now_ms())
        await self._emit("audio-received", body)
        return body

    async def on_end_session(self, data: dict[str, Any]) -> dict[str, Any]:
        chunk = self._session_for(data)
        self.chunk = None
        await manager.close(chunk.session_id, "user_requested")  # the protocols' disconnect reason
        return {"sessionId": chunk.session_id}

    async def on_text_message(self, data: dict[str, Any]) -> dict[str, Any]:
        chunk = self._session_for(data)
        text = data.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS:
            raise invalid(f"text must be a non-empty string of at most {MAX_TEXT_CHARS} characters.")
        chunk.touch()
        return {"queued": await chunk.sink.text(text.strip())}

    def _session_for(self, data: dict[str, Any]) -> ChunkSession:
        chunk = self.chunk
        if chunk is None or chunk.closed:
            self.chunk = None
            raise ProtocolError(ErrorCode.SESSION_NOT_FOUND, "No session on this socket; send start-session first.")
        requested = data.get("sessionId")
        if requested not in (None, chunk.session_id):
            raise ProtocolError(ErrorCode.SESSION_NOT_FOUND, "That is not this socket's session.",
                                {"session": str(requested)[:64]})
        return chunk

    async def _spend(self, ack_id: int | None = None) -> bool:
        """Take a token for one packet; without one, say so (and close a socket that keeps on)."""
        if self.bucket.take():
            self.violations = 0
            return True
        await self._rate_limited(ack_id)
        return False

    async def _rate_limited(self, ack_id: int | None) -> None:
        self.violations += 1
        retry = self.bucket.retry_after_ms()
        await self._error(
            ProtocolError(ErrorCode.RATE_LIMIT, "Too many messages; slow down.", {"retry_after": retry}),
            ack_id=ack_id,
        )
        if self.violations >= settings.WS_RATE_VIOLATIONS_BEFORE_CLOSE:
            self.closing = True  # frames already queued behind this one are not answered
            await self._frames(self.wire.disconnect())
            await self.close(code=4429)

    # --- channel-layer handlers ------------------------------------------------------------------
    async def chunk_emit(self, message: dict[str, Any]) -> None:
        """An event from the session's turn logic (transcription, ai-response, ... session-ended)."""
        await self._emit(message["event"], message["data"])
        if message["event"] == "session-ended":
            self.chunk = None

    async def chunk_takeover(self, message: dict[str, Any]) -> None:
        """Another socket of the same user took this session over."""
        self.chunk = None
        await self._error(ProtocolError(ErrorCode.SESSION_NOT_FOUND, "This session continued on another connection."))
        await self._frames(self.wire.disconnect())
        await self.close(code=4409)

    # --- sending ---------------------------------------------------------------------------------
    async def _emit_via_layer(self, name: str, data: dict[str, Any]) -> None:
        await self.channel_layer.send(self.channel_name, {"type": "chunk.emit", "event": name, "data": data})

    async def _emit(self, name: str, data: dict[str, Any]) -> None:
        await self._frames(self.wire.event(name, data))

    async def _error(self, exc: ProtocolError, *, ack_id: int | None = None) -> None:
        body: dict[str, Any] = {"code": str(exc.code), "message": exc.message}
        if exc.details:
            body["details"] = exc.details
        await self._emit("error", body)
        if ack_id is not None:
            await self._frames(self.wire.ack(ack_id, {"error": body}))

    async def _frames(self, frames: list[str | bytes]) -> None:
        for frame in frames:
            if isinstance(frame, str):
                await self.send(text_data=frame)
            else:
                await self.send(bytes_data=frame)

    async def _heartbeat(self) -> None:
        """Engine.IO v4: the server pings every pingInterval; a client that does not pong within
        pingTimeout is gone. A socket that never sends CONNECT is closed after a few seconds."""
        interval, timeout = ping_interval_seconds(), ping_timeout_seconds()
        tick = min(interval, timeout, 1.0)
        started = time.monotonic()
        next_ping = started + interval
        awaiting: float | None = None
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(tick)
                now = time.monotonic()
                if self.user is None and now - started >= CONNECT_TIMEOUT_SECONDS:
                    await self.close(code=4408)
                    return
                if awaiting is not None and self.last_pong >= awaiting:
                    awaiting = None
                if awaiting is not None and now - awaiting >= timeout:
                    logger.info("socket.io client missed a pong; closing", extra={"sid": self.sid})
                    await self.close(code=4408)
                    return
                if awaiting is None and now >= next_ping:
                    awaiting = now
                    next_ping = now + interval
                    await self.send(text_data=self.wire.ping())

    # --- server shutdown (signaling.shutdown) ----------------------------------------------------
    async def websocket_connect(self, message: dict[str, Any]) -> None:
        """Register the socket so the server's drain can end its session; refused while it drains."""
        await super().websocket_connect(message)
        if getattr(self, "wire", None) is None:  # refused by connect()
            return
        if shutdown.accepting():
            shutdown.register(self)
        else:
            await self.close(code=CloseCode.GOING_AWAY)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        shutdown.unregister(self)
        await super().websocket_disconnect(message)

    async def end_for_shutdown(self, reason: str) -> None:
        """End this socket's session as ``end-session`` does, then say goodbye.

        The chunk session's close (signaling.chunk_sessions → its call in the media worker) ends the
        session, stores the recording and emits ``session-ended`` through the channel layer; the
        goodbye goes the same way, so this socket's loop sends it after ``session-ended``.
        """
        chunk, self.chunk = self.chunk, None
        if chunk is not None and chunk.is_owned_by(self):
            await manager.close(chunk.session_id, reason)
        await self.channel_layer.send(self.channel_name, {"type": "server.shutdown"})

    async def server_shutdown(self, message: dict[str, Any]) -> None:
        await self._frames(self.wire.disconnect())
        await self.close(code=CloseCode.GOING_AWAY)

    def _refuse_during_shutdown(self) -> None:
        if not shutdown.accepting():
            raise ProtocolError(
                ErrorCode.CONNECTION_FAILED,
                "The server is shutting down; start the session again shortly.",
                {"reason": shutdown.REASON, "retry_after": shutdown.RETRY_AFTER_MS},
            )


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_scenario_id(value: Any) -> bool:
    """A scenario's primary key, as a number or a string of digits (what the page sends)."""
    if isinstance(value, str) and 0 < len(value) <= 20 and value.isascii() and value.isdigit():
        value = int(value)
    return _integer(value) and 0 < value < 2**63


def _audio_config(raw: Any) -> dict[str, Any]:
    """The accepted audio format: WebM/Opus from MediaRecorder (default) or raw PCM16 at ``sampleRate``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise invalid("audioConfig must be an object.")
    audio_format = raw.get("format", "webm-opus")
    rate = raw.get("sampleRate", 16000 if audio_format == "pcm16" else 48000)
    if audio_format not in CHUNK_AUDIO_FORMATS:
        raise ProtocolError(ErrorCode.AUDIO_ENCODE_FAILED, f"Unsupported audio format {str(audio_format)[:40]!r}.",
                            {"supported": list(CHUNK_AUDIO_FORMATS)})
    if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 48000:
        raise invalid("audioConfig.sampleRate must be an integer between 8000 and 48000.")
    return {"format": audio_format, "sampleRate": rate, "channels": 1, "chunkMs": CHUNK_MS}


__all__ = ["SocketIOConsumer"]
