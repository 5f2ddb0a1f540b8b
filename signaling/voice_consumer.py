"""The LingEcho protocol consumer at ``/ws/voice/``.

It parses, validates, checks the state machine, dispatches and answers; the message schemas and
state machine are data in ``signaling.protocol``, the domain work is in ``signaling.gateway``
(roleplay services), and the audio lives in a media worker reached over the channel layer
(``media_pipeline.contract``). Three sections: socket events, command handlers, channel-layer
handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from media_pipeline.contract import MEDIA_CHANNEL, MEDIA_WORKERS_GROUP, hangup, to_worker
from signaling import gateway, shutdown
from signaling.auth import query_params
from signaling.db import DATABASE_ERRORS, database_unavailable, until_recorded
from signaling.ice import ice_servers
from signaling.protocol import (
    ACCEPTS,
    DISCONNECT_REASONS,
    MAX_CANDIDATES,
    MEDIA_RESET_STATE,
    OFFER_TIMEOUT_SECONDS,
    SERVER_TYPES,
    SERVER_VERSION,
    SUPPORTED_CODECS,
    ClientMessage,
    CloseCode,
    ErrorCode,
    ProtocolError,
    State,
    encode,
    envelope,
    error_envelope,
    invalid,
    next_state,
    now_ms,
    parse_client_frame,
)
from signaling.ratelimit import TokenBucket
from signaling.sending import DropSendsAfterClose

logger = logging.getLogger(__name__)

WORKER_CHECK_SECONDS = 5.0  # how often a pinned worker's heartbeat is re-checked
TTS_RETRY_AFTER_MS = 1000  # a refused tts_request: about one short sentence of speech later


_HANGUPS: set[asyncio.Future] = set()  # hang-ups in flight (a task nobody references may be collected)


def _clock() -> float:
    return asyncio.get_running_loop().time()


class VoiceConsumer(DropSendsAfterClose, AsyncWebsocketConsumer):
    session_id: str = ""
    info: gateway.SessionInfo | None = None
    state: State = State.WAITING
    finished: bool = False  # the session was ended (or handed over) by this connection
    worker_channel: str | None = None
    timer: asyncio.TimerHandle | None = None
    tick: asyncio.Future | None = None
    offer_deadline: float | None = None
    offer_timeout: float = OFFER_TIMEOUT_SECONDS
    offer_id: int = 0  # numbers this connection's offers: a hang-up names the one it gives up
    unpinned_offer: int | None = None  # sent, no worker answered yet: its hang-up must reach every worker

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch minus its per-message ``aclose_old_connections``.

        Channels 4.2+ hops to the (single, shared) database thread before every message to close
        stale connections. Every database call of this consumer goes through
        ``database_sync_to_async``, which does that itself, so here the hop only adds latency and
        queues every socket's pings behind other sockets' database work.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # ==== socket events ==========================================================================

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            # Before accept: on the wire the handshake fails with HTTP 403; nothing is disclosed.
            await self.close(code=CloseCode.UNAUTHENTICATED)
            return
        params = query_params(self.scope)
        try:
            if params.get("session"):
                self.info = await gateway.resume_session(user=user, session_id=params["session"],
                                                        transport=gateway.Transport.VOICE)
            elif params.get("scenario"):
                self.info = await gateway.open_session(user=user, scenario_id=params["scenario"],
                                                      transport=gateway.Transport.VOICE)
            else:
                raise ProtocolError(
                    ErrorCode.CONNECTION_FAILED,
                    "Pass ?scenario=<id> to start a session or ?session=<id> to resume one.",
                    {"reason": "scenario_required"},
                    close_code=CloseCode.BAD_REQUEST,
                )
        except ProtocolError as exc:
            # Authenticated but refused: accept only to say why, then close with the documented code.
            await self.accept()
            await self._send_error(exc)
            await self.close(code=exc.close_code or CloseCode.BAD_REQUEST)
            return

        self.session_id = self.info.session_id
        self.bucket = TokenBucket(rate=settings.WS_RATE_PER_SECOND, burst=settings.WS_RATE_BURST)
        self.violations = 0
        self.pending_ice: list[dict[str, Any]] = []
        self.trickled = 0  # ICE candidates received since the last offer
        # request_ids of tts_requests the worker has not finished: each one is a task queued there.
        self.pending_tts: list[str] = []
        self.next_ping = _clock() + settings.WS_PING_INTERVAL_SECONDS
        self.next_check = _clock() + WORKER_CHECK_SECONDS
        self.last_heard = _clock()
        # The scenario's time limit, on the loop clock (the limit counts from the session's start, across resumes).
        self.time_limit_at = _clock() + (self.info.ends_at - time.time()) if self.info.ends_at else math.inf
        self.group = f"voice.{self.session_id}"
        await self.accept()
        if self.info.resumed:
            # One live connection per session: the older one hands over and closes.
            await self.channel_layer.group_send(self.group, {"type": "voice.takeover", "channel": self.channel_name})
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self._send(
            "init",
            {
                "server_version": SERVER_VERSION,
                "supported_codecs": list(SUPPORTED_CODECS),
                "max_audio_duration": settings.MAX_AUDIO_DURATION_MS,
                "ice_servers": ice_servers(user=str(user.pk)),
                "max_turns": self.info.max_turns,
                "buyer_persona": self.info.buyer_persona,
                "resumed": self.info.resumed,
            },
        )
        self._schedule()
        logger.info("voice session attached", extra={"session_id": self.session_id, "resumed": self.info.resumed})
        opening = await gateway.opening_line(session_id=self.session_id, new=not self.info.resumed)
        if opening is not None:
            await self._send_buyer_text(opening, message_id=None)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.finished or self.info is None:
            return
        self.last_heard = _clock()
        size = len(bytes_data) if bytes_data is not None else len((text_data or "").encode("utf-8"))
        if size > settings.WS_MAX_MESSAGE_BYTES:
            await self._send_error(
                invalid("The frame is too large.", reason="too_large", limit=settings.WS_MAX_MESSAGE_BYTES, size=size)
            )
            await self._finish("error", CloseCode.TOO_BIG)
            return
        if not self.bucket.take():
            await self._rate_limited()
            return
        try:
            if bytes_data is not None:
                raise invalid("Binary frames are not part of this protocol; send JSON text.", reason="binary_frame")
            message = parse_client_frame(text_data or "")
            if message.session_id != self.session_id:
                raise ProtocolError(
                    ErrorCode.SESSION_NOT_FOUND,
                    "This connection carries another session.",
                    {"session_id": message.session_id[:64]},
                )
            if self.state not in ACCEPTS[message.type]:
                raise invalid(
                    f"{message.type} is not allowed in state {self.state.value}.",
                    reason="wrong_state",
                    type=message.type,
                    state=self.state.value,
                    allowed_in=sorted(s.value for s in ACCEPTS[message.type]),
                )
            await getattr(self, f"on_{message.type}")(message)
        except ProtocolError as exc:
            await self._send_error(exc)
            if exc.close_code:
                await self._finish("error", exc.close_code)
        except DATABASE_ERRORS:  # a turn's write hit a database outage: the call goes on, the client may retry
            logger.warning("voice message hit a database outage", extra={"session_id": self.session_id})
            await self._send_error(database_unavailable())
        except Exception:  # noqa: BLE001 - one bad turn must not kill the call; the log has the traceback
            logger.exception("voice message failed", extra={"session_id": self.session_id})
            await self._send_error(
                ProtocolError(ErrorCode.CONNECTION_FAILED, "Internal error.", {"reason": "internal_error"})
            )

    async def disconnect(self, code: int) -> None:
        if self.info is None:
            return
        already_finished, self.finished = self.finished, True
        if self.timer is not None:
            self.timer.cancel()
        if self.tick is not None and self.tick is not asyncio.current_task():
            self.tick.cancel()
        await self.channel_layer.group_discard(self.group, self.channel_name)
        if already_finished:
            return
        # Gone without a disconnect message: resumable with ?session= for SESSION_RESUME_SECONDS.
        await self._hangup("dropped")
        session_id = self.session_id
        await until_recorded(lambda: gateway.mark_dropped(session_id=session_id), what="session dropped")
        logger.info("voice session dropped", extra={"session_id": self.session_id, "code": code})

    # ==== command handlers =======================================================================

    async def on_ping(self, message: ClientMessage) -> None:
        await self._send("pong", {"server_time": now_ms()})

    async def on_pong(self, message: ClientMessage) -> None:
        """Answer to our ping; receiving it already refreshed the idle timer."""

    async def on_error(self, message: ClientMessage) -> None:
        logger.info("client reported error", extra={"session_id": self.session_id, "code": message.data["code"]})

    async def on_disconnect(self, message: ClientMessage) -> None:
        await self._finish(message.data["reason"], CloseCode.NORMAL)

    async def on_text_message(self, message: ClientMessage) -> None:
        reply = await gateway.text_turn(session_id=self.session_id, text=message.data["text"])
        await self._send_buyer_text(reply, message_id=message.data["message_id"])

    async def on_offer(self, message: ClientMessage) -> None:
        if not await gateway.live_worker_channels():
            raise ProtocolError(
                ErrorCode.WEBRTC_FAILED,
                "No media worker is running, so voice is unavailable; text messages still work.",
                {"error_type": "no_media_worker", "retry_after": 5000},
            )
        self._release_worker()  # a call for an earlier offer is closed unless this offer lands on it
        self.pending_ice = []
        self.trickled = 0
        self.offer_id += 1
        await self._to_worker(
            "media.offer",
            sdp=message.data["sdp"],
            candidates=list(message.data.get("candidates", [])),
            scenario_id=self.info.scenario_id,
            user_id=self.info.user_id,
            offer_id=self.offer_id,
        )
        self.unpinned_offer = self.offer_id
        self.offer_deadline = _clock() + self.offer_timeout
        self._schedule()
        self._advance("recv:offer")
        await gateway.use_webrtc(session_id=self.session_id)

    async def on_ice_candidate(self, message: ClientMessage) -> None:
        data = {
            "candidate": message.data["candidate"],
            "sdp_mid": message.data.get("sdp_mid"),
            "sdp_mline_index": message.data.get("sdp_mline_index"),
        }
        self.trickled += 1
        if self.trickled > MAX_CANDIDATES:
            # Each one is an ICE check in the worker; a real browser gathers a handful per offer.
            raise invalid("Too many ICE candidates for this offer.", reason="too_many_candidates",
                          limit=MAX_CANDIDATES)
        if self.worker_channel is None:
            # Trickled before the worker said who it is: held until media.pinned.
            if len(self.pending_ice) >= MAX_CANDIDATES:
                raise invalid("Too many ICE candidates before the answer.", reason="too_many_candidates")
            self.pending_ice.append(data)
            return
        await self._to_worker("media.ice", **data)

    async def on_connected(self, message: ClientMessage) -> None:
        """The client's view of the peer connection; the worker's ``connected`` drives the state."""
        logger.info(
            "client peer state",
            extra={"session_id": self.session_id, "connection_state": message.data["connection_state"]},
        )

    async def on_ready(self, message: ClientMessage) -> None:
        await self._to_worker("media.ready", direction=message.data["direction"])
        self._advance("recv:ready")

    async def on_asr_start(self, message: ClientMessage) -> None:
        data = message.data
        await self._to_worker(
            "media.asr_start",
            language=data.get("language") or self.info.language,
            format=data["format"],
            sample_rate=data["sample_rate"],
            mode=data.get("mode", "auto"),
        )
        self._advance("recv:asr_start")

    async def on_asr_stop(self, message: ClientMessage) -> None:
        await self._to_worker("media.asr_stop")

    async def on_tts_request(self, message: ClientMessage) -> None:
        """Forwarded to the worker, at most MAX_PENDING_TTS_REQUESTS at a time: each queues a
        synthesis task there, released by its tts_complete (or a TTS error, or a media reset)."""
        data = message.data
        limit = settings.MAX_PENDING_TTS_REQUESTS
        if len(self.pending_tts) >= limit:
            raise ProtocolError(
                ErrorCode.RATE_LIMIT,
                "Earlier speech requests are still being spoken; send this one when one completes.",
                {"retry_after": TTS_RETRY_AFTER_MS, "pending": len(self.pending_tts), "limit": limit,
                 "request_id": data["request_id"]},
            )
        await self._to_worker(
            "media.tts_request",
            request_id=data["request_id"],
            text=data["text"],
            voice=data.get("voice", ""),
            speed=float(data.get("speed", 1.0)),
            pitch=float(data.get("pitch", 1.0)),
        )
        self.pending_tts.append(data["request_id"])
        self._advance("recv:tts_request")

    # ==== channel-layer handlers =================================================================

    async def media_pinned(self, event: dict[str, Any]) -> None:
        if event.get("session_id") != self.session_id:
            return
        offer_id = event.get("offer_id")
        stale = offer_id is not None and offer_id != self.unpinned_offer
        if self.finished or self.state == State.INITIALIZED or stale:
            # An answer nobody waits for any more (reset, superseded by a newer offer): close its call.
            self._send_hangup(event["worker_channel"], offer_id, "media_reset")
            return
        self.unpinned_offer = None
        self.worker_channel = event["worker_channel"]
        self._schedule()
        pending, self.pending_ice = self.pending_ice, []
        for data in pending:
            await self.channel_layer.send(self.worker_channel, self._worker_message("media.ice", **data))

    async def media_event(self, event: dict[str, Any]) -> None:
        message = event.get("message") or {}
        kind, data = message.get("type"), message.get("data") or {}
        if event.get("session_id") != self.session_id or self.finished or kind not in SERVER_TYPES:
            logger.warning("media event dropped", extra={"session_id": self.session_id, "type": str(kind)})
            return
        sender = event.get("worker_channel")
        if sender and sender != self.worker_channel:
            # A worker this consumer is not pinned to: the loser of an offer delivered to two workers
            # (its call is hung up on its media.pinned), or a call replaced since. Its answer would
            # reach the client after the winner's, and a client that applied it never connected.
            logger.info("media event from an unpinned worker dropped",
                        extra={"session_id": self.session_id, "type": str(kind)})
            return
        if kind == "answer":
            self.offer_deadline = None
        if kind == "tts_complete":
            self._tts_done(data.get("request_id"))
        if kind == "error" and data.get("code") == ErrorCode.TTS_FAILED:
            self._tts_done((data.get("details") or {}).get("request_id"))
        if kind == "error":
            await self._send_raw(
                error_envelope(self.session_id, data.get("code", ""), data.get("message", ""), data.get("details"))
            )
            # All lines busy: no worker took the offer, so the client may offer again later.
            details = data.get("details") or {}
            capacity = data.get("code") == ErrorCode.RATE_LIMIT and details.get("reason") == "capacity"
            if data.get("code") == ErrorCode.WEBRTC_FAILED or capacity:
                self._media_reset()
            return
        await self._send(kind, data)

    async def media_session_end(self, event: dict[str, Any]) -> None:
        if event.get("session_id") != self.session_id or self.finished:
            return
        reason = event.get("reason")
        await self._finish(reason if reason in DISCONNECT_REASONS else "error", CloseCode.NORMAL)

    async def voice_takeover(self, event: dict[str, Any]) -> None:
        if event["channel"] == self.channel_name or self.finished:
            return
        self.finished = True  # the session lives on in the newer connection: neither end nor drop it
        await self._hangup("superseded")
        await self._send_error(
            ProtocolError(
                ErrorCode.CONNECTION_FAILED,
                "This session was resumed on another connection.",
                {"reason": "superseded"},
            )
        )
        await self.close(code=CloseCode.SUPERSEDED)

    # ==== helpers ================================================================================

    def _advance(self, event: str) -> None:
        self.state = next_state(self.state, event)

    async def _send_raw(self, message: dict[str, Any]) -> None:
        if message["type"] != "error":
            self._advance(f"sent:{message['type']}")
        await self.send(text_data=encode(message))

    async def _send(self, message_type: str, data: dict[str, Any]) -> None:
        await self._send_raw(envelope(message_type, self.session_id, data))

    async def _send_error(self, exc: ProtocolError) -> None:
        await self._send_raw(error_envelope(self.session_id, exc.code, exc.message, exc.details))

    async def _send_buyer_text(self, reply: gateway.BuyerText, *, message_id: str | None) -> None:
        await self._send(
            "text_response",
            {
                "message_id": message_id,
                "response_id": reply.response_id,
                "text": reply.text,
                "language": self.info.language,
                "confidence": 1.0,
            },
        )
        if self.worker_channel and self.state in (State.READY, State.ACTIVE):
            # Typed turn during a voice call: the worker speaks the reply too.
            # utterance_id: the worker marks the persisted reply as spoken, with when it played.
            await self._to_worker(
                "media.text_reply", text=reply.text, message_id=message_id, response_id=reply.response_id,
                utterance_id=reply.utterance_id,
            )
        if reply.ends_conversation:
            await self._finish(reply.end_reason, CloseCode.NORMAL)

    def _worker_message(self, kind: str, **data: Any) -> dict[str, Any]:
        return to_worker(kind, session_id=self.session_id, reply_channel=self.channel_name, **data)

    async def _to_worker(self, kind: str, **data: Any) -> None:
        if kind == "media.offer":
            await self.channel_layer.send(MEDIA_CHANNEL, self._worker_message(kind, **data))
            return
        if self.worker_channel is None or self.worker_channel not in await gateway.live_worker_channels():
            lost = self.worker_channel is not None
            self._media_reset()
            raise ProtocolError(
                ErrorCode.WEBRTC_FAILED,
                "The media worker is gone; send a new offer." if lost else "No media connection; send an offer.",
                {"error_type": "media_worker_lost" if lost else "not_pinned", "retry_after": 0},
            )
        await self.channel_layer.send(self.worker_channel, self._worker_message(kind, **data))

    def _tts_done(self, request_id: Any) -> None:
        if request_id in self.pending_tts:
            self.pending_tts.remove(request_id)

    def _media_reset(self) -> None:
        self._release_worker()
        self.pending_ice = []
        self.pending_tts = []
        self.offer_deadline = None
        if self.state != State.WAITING:
            self.state = MEDIA_RESET_STATE

    async def _hangup(self, reason: str) -> None:
        if self.worker_channel:
            try:
                await self.channel_layer.send(self.worker_channel, self._worker_message("media.hangup", reason=reason))
            except Exception:  # noqa: BLE001 - a full or vanished worker channel must not block the close
                logger.warning("hangup not delivered", extra={"session_id": self.session_id})
        elif self.unpinned_offer is not None:
            # No worker answered yet: whichever takes (or took) the offer closes (or refuses) it.
            with contextlib.suppress(Exception):
                await self.channel_layer.group_send(MEDIA_WORKERS_GROUP, hangup(
                    session_id=self.session_id, reply_channel=self.channel_name, reason=reason,
                    offer_id=self.unpinned_offer))
        self.worker_channel = None
        self.unpinned_offer = None
        self.pending_tts = []

    def _release_worker(self, reason: str = "media_reset") -> None:
        """Forget the current offer's worker and have it close that call (it keeps one answering a newer offer)."""
        if self.worker_channel:
            self._send_hangup(self.worker_channel, self.offer_id, reason)
        elif self.unpinned_offer is not None:
            self._send_hangup(None, self.unpinned_offer, reason)
        self.worker_channel = None
        self.unpinned_offer = None

    def _send_hangup(self, channel: str | None, offer_id: int | None, reason: str) -> None:
        """A hang-up for one offer, in the background (callers are sync); ``channel`` None: every worker."""
        message = hangup(session_id=self.session_id, reply_channel=self.channel_name, reason=reason,
                         offer_id=offer_id)

        async def send() -> None:
            try:
                if channel:
                    await self.channel_layer.send(channel, message)
                else:
                    await self.channel_layer.group_send(MEDIA_WORKERS_GROUP, message)
            except Exception:  # noqa: BLE001 - the worker's idle reaper closes the call instead
                logger.warning("media hangup not delivered", extra={"session_id": self.session_id})

        task = asyncio.ensure_future(send())
        _HANGUPS.add(task)
        task.add_done_callback(_HANGUPS.discard)

    async def _rate_limited(self) -> None:
        self.violations += 1
        retry_after = self.bucket.retry_after_ms()
        limit = settings.WS_RATE_VIOLATIONS_BEFORE_CLOSE
        await self._send_error(
            ProtocolError(
                ErrorCode.RATE_LIMIT,
                "Too many messages; slow down.",
                {
                    "retry_after": retry_after,
                    "rate_per_second": settings.WS_RATE_PER_SECOND,
                    "burst": settings.WS_RATE_BURST,
                    "violations": self.violations,
                    "violations_before_close": limit,
                },
            )
        )
        if self.violations >= limit:
            await self._finish("error", CloseCode.POLICY)

    async def _finish(self, reason: str, close_code: int) -> None:
        """End the session for good: tell the client, record the reason, release the worker, close."""
        if self.finished:
            return
        self.finished = True
        try:
            await self._hangup(reason)
            # Recorded before the client hears about it: after `disconnect` the session reads as ended.
            await gateway.end_session(session_id=self.session_id, reason=reason)
            logger.info("voice session ended", extra={"session_id": self.session_id, "reason": reason})
        finally:
            await self._send("disconnect", {"reason": reason})
            self.state = State.WAITING
            await self.close(code=close_code)

    # One timer handle per socket, not a sleeping task: an idle connection then costs a few hundred
    # bytes for its heartbeat. A tick task exists only while there is something to do.

    def _schedule(self) -> None:
        """(Re)arm the timer for the nearest deadline: ping, idle, time limit, offer, worker check."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.finished:
            return
        wake = min(
            self.next_ping,
            self.last_heard + settings.WS_IDLE_TIMEOUT_SECONDS,
            self.offer_deadline or math.inf,
            self.time_limit_at,
        )
        if self.worker_channel:
            wake = min(wake, self.next_check)
        self.timer = asyncio.get_running_loop().call_at(wake, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.tick = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        """Server pings, idle timeout, the scenario's time limit, offer timeout and pinned-worker liveness."""
        try:
            now = _clock()
            if self.finished:
                return
            if now - self.last_heard >= settings.WS_IDLE_TIMEOUT_SECONDS:
                await self._finish("timeout", CloseCode.IDLE_TIMEOUT)
                return
            if now >= self.time_limit_at:
                await self._finish("time_limit", CloseCode.NORMAL)
                return
            if now >= self.next_ping:
                self.next_ping = now + settings.WS_PING_INTERVAL_SECONDS
                await self._send("ping", {})
            if self.offer_deadline is not None and now >= self.offer_deadline:
                await self._media_failed("offer_timeout", "The media worker did not answer the offer.")
            if self.worker_channel and now >= self.next_check:
                self.next_check = now + WORKER_CHECK_SECONDS
                if self.worker_channel not in await gateway.live_worker_channels():
                    await self._media_failed("media_worker_lost", "The media worker stopped; send a new offer.")
                else:  # the worker closes calls nobody signals for (MEDIA_IDLE_REAP_SECONDS)
                    await self.channel_layer.send(self.worker_channel, self._worker_message("media.keepalive"))
        except Exception:  # noqa: BLE001 - a dead timer would silently stop heartbeats; log it loudly
            logger.exception("voice heartbeat failed", extra={"session_id": self.session_id})
        finally:
            self.tick = None
            self._schedule()

    async def _media_failed(self, error_type: str, message: str) -> None:
        self._media_reset()
        await self._send_error(ProtocolError(ErrorCode.WEBRTC_FAILED, message, {"error_type": error_type}))

    # ==== server shutdown (signaling.shutdown) ===================================================

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        """Refuse new calls while the server drains; register the others so the drain can end them."""
        if not shutdown.accepting():
            await self.accept()
            await self._send_error(ProtocolError(
                ErrorCode.CONNECTION_FAILED,
                "The server is shutting down; reconnect shortly.",
                {"reason": shutdown.REASON, "retry_after": shutdown.RETRY_AFTER_MS},
            ))
            await self.close(code=CloseCode.GOING_AWAY)
            return
        await super().websocket_connect(message)
        if self.info is None or self.finished:
            return
        if shutdown.accepting():
            shutdown.register(self)
        else:  # the drain began while this call was being set up: it missed this one
            await self.end_for_shutdown(shutdown.REASON)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        shutdown.unregister(self)
        await super().websocket_disconnect(message)

    async def end_for_shutdown(self, reason: str) -> None:
        """As any end: the worker hangs up (and stores the recording), the session ends, the client is told."""
        await self._finish(reason, CloseCode.GOING_AWAY)
