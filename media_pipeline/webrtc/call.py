"""One voice call in the media worker: the peer connection, and the stages it wires together.

A :class:`CallSession` takes the contract's worker messages in order (one queue per call, so an
``ice`` never overtakes its ``offer``) and owns the call's parts: the peer connection (``peer``),
the trainee's ears (``inbound`` → the shared ``listening`` stage), the turn stage
(``webrtc.turns.VoiceTurns``: finals → turns → replies, one turn is one turn, barge-in), the buyer's
voice (``speaking.Speaker`` → the paced ``outbound`` track) and the recorder. Everything the client
should see goes back as ``media.event`` messages to the consumer's ``reply_channel`` (updated from
every incoming message, so a reconnected socket gets the events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import numpy as np
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from media_pipeline import contract
from media_pipeline.contract import ErrorCode
from media_pipeline.engine_pool import Engines, call_engines, get_engines
from media_pipeline.recording import CallRecorder
from media_pipeline.webrtc.inbound import InboundAudio
from media_pipeline.webrtc.outbound import OutboundAudioTrack
from media_pipeline.webrtc.peer import Negotiated, NegotiationError, answer_offer, new_peer_connection, parse_candidate
from media_pipeline.webrtc.speaking import Speaker, playback_facts, text_once
from media_pipeline.webrtc.turns import VoiceTurns
from roleplay import selectors, services
from roleplay.models import RealtimeSession, Utterance
from roleplay.selectors import CallFacts

log = logging.getLogger(__name__)

ICE_CONNECT_TIMEOUT_SECONDS = settings.ICE_CONNECT_TIMEOUT_SECONDS  # read once at import (tests patch this name)
# On hang-up, how long in-flight turns get to persist what the trainee saw and heard.
CLOSE_GRACE_SECONDS = 3.0


@database_sync_to_async
def _update_session_utterance(session_id: str, utterance_id: int, **fields: Any) -> None:
    """Late facts about a reply the signaling side persisted (a typed turn's reply, spoken here)."""
    if Utterance.objects.filter(pk=utterance_id, session_id=session_id).exists():
        services.utterance_update(utterance_id=utterance_id, **fields)


class CallSession:
    kind = "webrtc"  # the transport, for the worker's per-transport admission

    def __init__(
        self, *, session_id: str, layer: Any, worker_channel: str, reply_channel: str, engines: Engines | None = None
    ) -> None:
        self.session_id = session_id
        self.layer = layer
        self.worker_channel = worker_channel
        self.reply_channel = reply_channel
        self.engines = engines or get_engines()
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.pc: Any = None
        self.outbound: OutboundAudioTrack | None = None
        self.inbound: InboundAudio | None = None
        self.recorder: CallRecorder | None = None
        self.negotiated: Negotiated | None = None
        self.info: CallFacts | None = None
        self.t0 = time.monotonic()
        self.connected = False
        self.mode = "auto"
        self.closed = False
        self.offer_id: Any = None  # the consumer's id of the offer this call answered last
        self.last_signal = time.monotonic()  # the last message from signaling (the idle reaper reads it)
        self.counted = False  # in the worker's ACTIVE_CALLS
        self.speaker = Speaker(self)
        self.turns = VoiceTurns(self)
        self._tasks: set[asyncio.Task] = set()
        self._ice_watch: asyncio.Task | None = None
        self.on_closed: Any = None  # set by the worker: drop from the registry
        loop = asyncio.get_running_loop()
        self._runner = loop.create_task(self._run(), name=f"call-{session_id}")
        self._turn_runner = loop.create_task(self.turns.run(), name=f"turns-{session_id}")

    # ==== plumbing ===============================================================================

    def session_ms(self, monotonic: float) -> int:
        return int((monotonic - self.t0) * 1000)

    def submit(self, message: dict[str, Any]) -> None:
        self.touch()
        if message.get("reply_channel"):
            self.reply_channel = message["reply_channel"]
        self.queue.put_nowait(message)

    def touch(self) -> None:
        """Signaling still knows this call (any message, or its keepalive)."""
        self.last_signal = time.monotonic()

    async def emit(self, message_type: str, data: dict[str, Any]) -> None:
        try:
            await self.layer.send(self.reply_channel, contract.event(message_type, data, session_id=self.session_id,
                                                                     worker_channel=self.worker_channel))
        except Exception:  # noqa: BLE001 - a vanished consumer (ChannelFull) must not kill the call
            log.warning("event not delivered", extra={"session_id": self.session_id, "type": message_type})

    async def error(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> None:
        await self.emit("error", {"code": code, "message": message, "details": details or {}})

    @property
    def voice(self) -> str:
        return self.info.voice if self.info else ""

    @property
    def language(self) -> str:
        return self.info.language if self.info else "en"

    @property
    def patience_ms(self) -> int:
        return self.info.patience_ms if self.info else settings.TURN_PATIENCE_MS

    @property
    def barge_in_stop_ms(self) -> float | None:
        """The last barge-in: stop asked → playback stopped (ms)."""
        return self.speaker.barge_in_stop_ms

    def spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self) -> None:
        handlers = {
            "media.offer": self.on_offer,
            "media.ice": self.on_ice,
            "media.ready": self.on_ready,
            "media.asr_start": self.on_asr_start,
            "media.asr_stop": self.on_asr_stop,
            "media.tts_request": self.on_tts_request,
            "media.text_reply": self.on_text_reply,
            "media.hangup": self.on_hangup,
        }
        while not self.closed:
            message = await self.queue.get()
            handler = handlers.get(message.get("type", ""))
            if handler is None:
                continue
            try:
                await handler(message)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad message must not end the call silently
                log.exception("media message failed", extra={"session_id": self.session_id})
                await self.error(ErrorCode.WEBRTC_FAILED, "The media worker could not handle that message.")

    # ==== negotiation ============================================================================

    async def on_offer(self, message: dict[str, Any]) -> None:
        self.offer_id = message.get("offer_id")
        await self.layer.send(
            self.reply_channel,
            {"type": "media.pinned", "session_id": self.session_id, "worker_channel": self.worker_channel,
             "offer_id": self.offer_id},
        )
        if self.info is None:
            try:
                self.info = await database_sync_to_async(selectors.session_call_facts)(session_id=self.session_id)
            except RealtimeSession.DoesNotExist:
                await self.error(ErrorCode.SESSION_NOT_FOUND, "No such session.")
                await self.close("error")
                return
            self.t0 = time.monotonic() - (timezone.now() - self.info.started_at).total_seconds()
            # A resumed call (or one re-offered here after a peer failure) continues the stored recording.
            self.recorder = CallRecorder(self.session_id, continue_stored=True)
            self.recorder.start(lambda: self.session_ms(time.monotonic()))
            # The scenario's engines (cloud ones wrapped with the offline ones behind them).
            self.engines = call_engines(self.info, on_error=self.turns.on_error, base=self.engines)
        if self.info.ended:
            await self.error(ErrorCode.SESSION_NOT_FOUND, "This session has ended.", {"reason": "ended"})
            return
        await self._close_peer()
        if self.inbound is None:
            self.inbound = InboundAudio(
                engines=self.engines,
                listener=self.turns,
                session_ms=self.session_ms,
                record=self._record_trainee,
                end_silence_ms=settings.ENDPOINT_SILENCE_MS,
                interim_interval_ms=settings.INTERIM_INTERVAL_MS,
                vad_threshold=settings.VAD_THRESHOLD,
                max_utterance_ms=settings.MAX_AUDIO_DURATION_MS,
                patience_ms=self.info.patience_ms,
            )
        self.inbound.detach_tracks()
        pc = new_peer_connection()
        self.pc = pc
        self.outbound = OutboundAudioTrack(48000, record=self._record_buyer)
        inbound = self.inbound

        @pc.on("track")
        def on_track(track: Any) -> None:
            # Consume every inbound track, audio or not: aiortc queues frames without bound otherwise.
            receiver = next((t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None)
            inbound.add_track(track, receiver)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc is not self.pc:
                return
            state = pc.connectionState
            if state == "connected" and not self.connected:
                self.connected = True
                await self.emit(
                    "connected",
                    {
                        "connection_state": "connected",
                        "audio_codec": self.negotiated.codec if self.negotiated else "",
                        "sample_rate": self.negotiated.sample_rate if self.negotiated else 0,
                    },
                )
            elif state == "failed":
                await self._peer_failed("peer_failed", "The WebRTC connection failed; send a new offer.")

        started = time.perf_counter()
        try:
            self.negotiated = await answer_offer(
                pc, message.get("sdp") or "", message.get("candidates") or [], self.outbound
            )
        except NegotiationError as exc:
            await self._close_peer()
            await self.error(ErrorCode.WEBRTC_FAILED, str(exc), {"error_type": "negotiation"})
            return
        self.outbound.configure(self.negotiated.sample_rate, dtx=self.negotiated.dtx)
        self.offer_answer_ms = (time.perf_counter() - started) * 1000
        # Candidate lines, as the protocol defines answer.candidates (they are in the SDP as well).
        await self.emit("answer", {"sdp": self.negotiated.sdp,
                                   "candidates": [c["candidate"] for c in self.negotiated.candidates]})
        self._ice_watch = self.spawn(self._watch_ice(pc))

    async def _watch_ice(self, pc: Any) -> None:
        await asyncio.sleep(ICE_CONNECT_TIMEOUT_SECONDS)
        if pc is self.pc and not self.connected:
            await self._peer_failed("ice_timeout", "ICE did not connect in time; send a new offer.")

    async def _peer_failed(self, error_type: str, text: str) -> None:
        await self._close_peer()
        await self.error(ErrorCode.WEBRTC_FAILED, text, {"error_type": error_type})

    async def on_ice(self, message: dict[str, Any]) -> None:
        if self.pc is None:
            return
        try:
            candidate = parse_candidate(message)
        except NegotiationError as exc:
            await self.error(ErrorCode.INVALID_MESSAGE, str(exc), {"field": "candidate"})
            return
        await self.pc.addIceCandidate(candidate)

    async def on_ready(self, message: dict[str, Any]) -> None:
        await self.emit("ready", {"direction": message.get("direction") or "both"})

    # ==== recognition ============================================================================

    async def on_asr_start(self, message: dict[str, Any]) -> None:
        self.mode = message.get("mode") or "auto"
        if self.inbound is not None:
            language = message.get("language") or (self.info.language if self.info else "en")
            if not self.engines.asr.supports_language(language):
                await self.error(ErrorCode.ASR_FAILED, f"The speech model cannot transcribe {language!r}.",
                                 {"language": language})
                return
            self.inbound.start_recognition(language=language, mode=self.mode)

    async def on_asr_stop(self, message: dict[str, Any]) -> None:
        if self.inbound is not None:
            self.inbound.stop_recognition()

    async def on_tts_request(self, message: dict[str, Any]) -> None:
        self.spawn(self.speaker.speak(
            message.get("request_id") or f"tts_{uuid.uuid4().hex[:8]}", text_once(message.get("text") or ""),
            voice=message.get("voice") or "", language=self.language,
            speed=float(message.get("speed") or 1.0), pitch=float(message.get("pitch") or 1.0),
        ))

    async def on_text_reply(self, message: dict[str, Any]) -> None:
        self.spawn(self._speak_text_reply(message))

    async def _speak_text_reply(self, message: dict[str, Any]) -> None:
        """Speak a typed turn's reply (persisted by signaling as typed), then record that it was heard."""
        spoken = await self.speaker.speak(
            message.get("response_id") or f"resp_{uuid.uuid4().hex[:8]}", text_once(message.get("text") or ""),
            voice=self.voice, language=self.language,
        )
        utterance_id = message.get("utterance_id")
        if spoken is None or spoken.played.first_frame_at is None or not utterance_id:
            return  # never played: it stays what it was, a typed reply
        await _update_session_utterance(self.session_id, int(utterance_id), **playback_facts(spoken))

    # ==== recording ==============================================================================

    def _record_trainee(self, samples: np.ndarray, at_ms: int) -> None:
        if self.recorder is not None:
            self.recorder.add("trainee", samples, at_ms=max(0, at_ms))

    def _record_buyer(self, samples: np.ndarray, sent_at: float) -> None:
        if self.recorder is not None:
            self.recorder.add("buyer", samples, at_ms=max(0, self.session_ms(sent_at)))

    # ==== ending =================================================================================

    async def on_hangup(self, message: dict[str, Any]) -> None:
        offer_id = message.get("offer_id")
        if offer_id is not None and offer_id != self.offer_id:
            return  # signaling gave up an older offer; this call already answers a newer one
        await self.close(message.get("reason") or "user_requested")

    async def request_end(self, reason: str) -> None:
        """Ask signaling to end the session: it ends it and tells the client ``disconnect`` with ``reason``."""
        await self.layer.send(self.reply_channel, {"type": "media.session_end", "session_id": self.session_id,
                                                   "reason": reason})

    async def end_session(self, reason: str) -> None:
        """``request_end`` for callers that must not fail (shutdown): a lost message is left to the sweeper."""
        try:
            await self.request_end(reason)
        except Exception:  # noqa: BLE001 - a vanished consumer: the session is ended by the sweeper instead
            log.warning("session end not delivered", extra={"session_id": self.session_id, "reason": reason})

    async def _close_peer(self) -> None:
        pc, self.pc = self.pc, None
        self.connected = False
        if self.outbound is not None:
            self.outbound.flush()
        if self._ice_watch is not None:
            if self._ice_watch is not asyncio.current_task():  # the watcher itself may be closing
                self._ice_watch.cancel()
            self._ice_watch = None
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()

    async def close(self, reason: str = "user_requested") -> None:
        """End this call in this worker: close the peer, store the recording, leave the registry."""
        if self.closed:
            return
        self.closed = True
        await self._close_peer()  # flushes the outbound track: a reply being played ends as interrupted
        if self.inbound is not None:
            await self.inbound.close()
        # A reply the trainee already saw or heard is persisted (and its playback facts written) by
        # the turn that produced it: let in-flight turns and spoken replies finish before stopping them.
        pending = [t for t in (self.turns.current, *self._tasks) if t is not None and not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_GRACE_SECONDS)
        for task in [self._turn_runner, *self._tasks]:
            task.cancel()
        if self.recorder is not None:
            try:
                await self._save_recording()
            except Exception:  # noqa: BLE001 - the call's data in the database stays; log the loss
                log.exception("recording not stored", extra={"session_id": self.session_id})
        if self.on_closed:
            self.on_closed(self)
        if asyncio.current_task() is not self._runner:
            self._runner.cancel()

    async def _save_recording(self) -> None:
        recorder = self.recorder
        self.recorder = None
        await recorder.finish({
            "codec": self.negotiated.codec if self.negotiated else None,
            "codec_sample_rate": self.negotiated.sample_rate if self.negotiated else None,
        })
