"""One voice call in the media worker: the peer connection and the turn-taking wiring.

A :class:`CallSession` takes the contract's worker messages in order (one queue per call, so an
``ice`` never overtakes its ``offer``) and wires the stages: inbound (VAD → ASR) → the shared turn
service (``roleplay.conversation``) → sentence-by-sentence TTS → the paced outbound track. Barge-in
flushes the outbound track and persists only what was played. Everything the client should see
goes back as ``media.event`` messages to the consumer's ``reply_channel`` (updated from every
incoming message, so a reconnected socket gets the events).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from lingecho.resilience.redaction import redact
from media_pipeline import contract, metrics
from media_pipeline.audio import float32_to_pcm16, resample
from media_pipeline.contract import ErrorCode
from media_pipeline.engine_pool import Engines, engines_for_call, get_engines
from media_pipeline.engines.tts.text import SentenceBuffer
from media_pipeline.inbound import FinalResult, InboundAudio
from media_pipeline.joining import OpenTurn, is_backchannel, trailing_cue
from media_pipeline.outbound import OutboundAudioTrack, PlayResult
from media_pipeline.peer import Negotiated, NegotiationError, answer_offer, new_peer_connection, parse_candidate
from media_pipeline.recording import CallRecorder
from roleplay import conversation, services
from roleplay.errors import SessionEnded
from roleplay.models import RealtimeSession, Utterance

log = logging.getLogger(__name__)

ICE_CONNECT_TIMEOUT_SECONDS = settings.ICE_CONNECT_TIMEOUT_SECONDS  # read once at import (tests patch this name)
# On hang-up, how long in-flight turns get to persist what the trainee saw and heard.
CLOSE_GRACE_SECONDS = 3.0


@dataclass
class Spoken:
    """What one reply did on the outbound track, on the session timeline (ms since the session start)."""

    played: PlayResult
    tts_first_ms: float | None
    start_ms: int  # the first frame went out (when it stopped, if nothing was played)
    end_ms: int  # the last played frame finished (barge-in: the played part only)


@dataclass
class CallInfo:
    started_at: Any
    language: str
    voice: str
    ended: bool


@database_sync_to_async
def load_call_info(session_id: str) -> CallInfo:
    session = RealtimeSession.objects.select_related("scenario").get(pk=session_id)
    return CallInfo(
        started_at=session.started_at,
        language=session.scenario.language,
        voice=session.scenario.voice,
        ended=session.state == RealtimeSession.State.ENDED,
    )


@database_sync_to_async
def _update_utterance(utterance_id: int, **fields: Any) -> None:
    services.utterance_update(utterance_id=utterance_id, **fields)


@database_sync_to_async
def _withdraw_reply(session_id: str, utterance_id: int) -> None:
    services.utterance_withdraw(session_id=session_id, utterance_id=utterance_id)


@database_sync_to_async
def _update_session_utterance(session_id: str, utterance_id: int, **fields: Any) -> None:
    """Late facts about a reply the signaling side persisted (a typed turn's reply, spoken here)."""
    if Utterance.objects.filter(pk=utterance_id, session_id=session_id).exists():
        services.utterance_update(utterance_id=utterance_id, **fields)


def _synthesize(engines: Engines, text: str, rate: int, voice: str, language: str, speed: float, pitch: float) -> Any:
    """One sentence -> int16 at the codec rate (runs on the TTS executor thread)."""
    started = time.perf_counter()
    chunks = list(engines.tts.synthesize(text, voice=voice, language=language, speed=speed, pitch=pitch))
    if not chunks:
        return np.zeros(0, dtype=np.int16), time.perf_counter() - started
    pcm = np.concatenate(chunks)
    audio = float32_to_pcm16(resample(pcm, engines.tts.sample_rate, rate))
    return audio, time.perf_counter() - started


async def _text_once(text: str) -> AsyncIterator[str]:
    yield text


async def _settled(task: asyncio.Task) -> Any:
    """The task's result, or None if it failed (already logged by whoever cares)."""
    try:
        return await task
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the caller falls back to persisting what was heard
        log.exception("early reply persist failed")
        return None


def _playback_facts(spoken: Spoken) -> dict[str, Any]:
    """How a reply went out: voice, when, and (after barge-in) only the words that were played."""
    played = spoken.played
    facts: dict[str, Any] = {"source": Utterance.Source.VOICE, "start_ms": spoken.start_ms,
                             "end_ms": spoken.end_ms, "interrupted": played.interrupted}
    if played.interrupted and played.spoken_text:
        facts["text"] = played.spoken_text
    return facts


class CallSession:
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
        self.info: CallInfo | None = None
        self.t0 = time.monotonic()
        self.connected = False
        self.mode = "auto"
        self.closed = False
        self.offer_id: Any = None  # the consumer's id of the offer this call answered last
        self.last_signal = time.monotonic()  # the last message from signaling (the idle reaper reads it)
        self.counted = False  # in the worker's ACTIVE_CALLS
        self._turns: asyncio.Queue[tuple[FinalResult, OpenTurn | None]] = asyncio.Queue()
        # One turn is one turn (media_pipeline.joining): the turn the reply being spoken answers, and a
        # turn whose reply yielded to the trainee, waiting for the rest of the thought.
        self._answering: OpenTurn | None = None
        self._open_turn: OpenTurn | None = None
        self._yielded: set[str] = set()  # response ids withdrawn because the trainee went on
        self._during_reply = ""  # result id of the trainee utterance that began while the buyer spoke
        self._confirm: asyncio.Task | None = None
        self._confirm_speech_ms = 0.0
        self._speaking: asyncio.Task | None = None
        self._current_turn: asyncio.Task | None = None
        self._speak_lock = asyncio.Lock()
        self._barge_in_at: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self._ice_watch: asyncio.Task | None = None
        self.on_closed: Any = None  # set by the worker: drop from the registry
        loop = asyncio.get_running_loop()
        self._runner = loop.create_task(self._run(), name=f"call-{session_id}")
        self._turn_runner = loop.create_task(self._run_turns(), name=f"turns-{session_id}")

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
            await self.layer.send(self.reply_channel, contract.event(message_type, data, session_id=self.session_id))
        except Exception:  # noqa: BLE001 - a vanished consumer (ChannelFull) must not kill the call
            log.warning("event not delivered", extra={"session_id": self.session_id, "type": message_type})

    async def error(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> None:
        await self.emit("error", {"code": code, "message": message, "details": details or {}})

    def _spawn(self, coro: Any) -> asyncio.Task:
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
                self.info = await load_call_info(self.session_id)
            except RealtimeSession.DoesNotExist:
                await self.error(ErrorCode.SESSION_NOT_FOUND, "No such session.")
                await self.close("error")
                return
            self.t0 = time.monotonic() - (timezone.now() - self.info.started_at).total_seconds()
            # A resumed call (or one re-offered here after a peer failure) continues the stored recording.
            self.recorder = CallRecorder(self.session_id, continue_stored=True)
            self.recorder.start(lambda: self.session_ms(time.monotonic()))
            # The scenario's engines (cloud ones wrapped with the offline ones behind them).
            self.engines = await engines_for_call(self.session_id, on_error=self.on_error, base=self.engines)
        if self.info.ended:
            await self.error(ErrorCode.SESSION_NOT_FOUND, "This session has ended.", {"reason": "ended"})
            return
        await self._close_peer()
        if self.inbound is None:
            self.inbound = InboundAudio(
                engines=self.engines,
                listener=self,
                session_ms=self.session_ms,
                record=self._record_trainee,
                end_silence_ms=settings.ENDPOINT_SILENCE_MS,
                interim_interval_ms=settings.INTERIM_INTERVAL_MS,
                vad_threshold=settings.VAD_THRESHOLD,
                max_utterance_ms=settings.MAX_AUDIO_DURATION_MS,
            )
        self.inbound.detach_tracks()
        pc = new_peer_connection()
        self.pc = pc
        self.outbound = OutboundAudioTrack(48000, record=self._record_buyer)
        inbound = self.inbound

        @pc.on("track")
        def on_track(track: Any) -> None:
            # Consume every inbound track, audio or not: aiortc queues frames without bound otherwise.
            inbound.add_track(track)

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
        self.outbound.configure(self.negotiated.sample_rate)
        self.offer_answer_ms = (time.perf_counter() - started) * 1000
        # Candidate lines, as the protocol defines answer.candidates (they are in the SDP as well).
        await self.emit("answer", {"sdp": self.negotiated.sdp,
                                   "candidates": [c["candidate"] for c in self.negotiated.candidates]})
        self._ice_watch = self._spawn(self._watch_ice(pc))

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

    # InboundListener ----------------------------------------------------------------------------
    def on_interim(self, result_id: str, text: str, confidence: float) -> None:
        self._spawn(self.emit("asr_interim", {"result_id": result_id, "text": text, "is_final": False,
                                              "confidence": round(confidence, 3)}))

    def on_final(self, result: FinalResult) -> None:
        during_reply = result.result_id == self._during_reply and self.outbound is not None
        if result.text and during_reply and self._open_turn is None and is_backchannel(result.text, result.language):
            # "mm-hm" while the buyer talks: shown and counted, but neither a turn nor an interruption.
            metrics.BACKCHANNELS.inc()
            self._spawn(self.emit("asr_result", {**self._final_data(result), "backchannel": True}))
            return
        continues, self._open_turn = self._open_turn, None
        if continues is not None:
            if not result.text:  # the trainee's "more" was nothing: answer what they said
                self._release(continues, result)
                return
            joined = continues.joined(result.text, end_ms=result.end_ms, confidence=result.confidence,
                                      language=result.language)
            result = dataclasses.replace(
                result, text=joined.text, result_id=joined.result_id, start_ms=joined.start_ms,
                confidence=joined.confidence, stream_start_ms=continues.stream_start_ms)
        if result.text and self.mode == "auto" and trailing_cue(result.text, result.language):
            # "…and", "um", "因为": the thought goes on. Shown as an interim; the final waits for the rest
            # (or for the patience to run out), so the turn gets one asr_result and one reply.
            held = OpenTurn(result_id=result.result_id, text=result.text, start_ms=result.start_ms,
                            end_ms=result.end_ms, confidence=result.confidence, language=result.language,
                            utterance_id=continues.utterance_id if continues else None,
                            stream_start_ms=result.stream_start_ms, stream_end_ms=result.stream_end_ms)
            self._open_turn = held
            self.on_interim(result.result_id, result.text, result.confidence)
            self._spawn(self._answer_if_abandoned(held, settings.TURN_PATIENCE_MS / 1000))
            return
        self._spawn(self.emit("asr_result", self._final_data(result)))
        if result.text:
            self._turns.put_nowait((result, continues))

    def _release(self, turn: OpenTurn, latest: FinalResult) -> None:
        """Answer an open turn as it stands (its final is sent now unless it was sent before the yield)."""
        final = self._as_final(turn, latest)
        if turn.utterance_id is None:
            self._spawn(self.emit("asr_result", self._final_data(final)))
        self._turns.put_nowait((final, turn))

    @staticmethod
    def _final_data(result: FinalResult) -> dict[str, Any]:
        return {"result_id": result.result_id, "text": result.text, "is_final": True,
                "confidence": round(result.confidence, 3), "language": result.language,
                "start_time": result.stream_start_ms, "end_time": result.stream_end_ms}

    @staticmethod
    def _as_final(turn: OpenTurn, latest: FinalResult) -> FinalResult:
        return dataclasses.replace(latest, text=turn.text, result_id=turn.result_id, start_ms=turn.start_ms,
                                   end_ms=turn.end_ms, confidence=turn.confidence, language=turn.language,
                                   stream_start_ms=turn.stream_start_ms, stream_end_ms=turn.stream_end_ms)

    def on_speech(self, speech_ms: float) -> None:
        """The trainee is speaking (``speech_ms`` so far) — maybe over the buyer.

        Within the grace window of the buyer's first audible frame it is the same thought going on:
        the buyer yields. Later, sustained speech stops the buyer once ASR confirms words that are
        not a backchannel (``BARGE_IN_CONFIRM_WORDS``), else as soon as it lasts
        ``BARGE_IN_MIN_SPEECH_MS``.
        """
        track = self.outbound
        if track is None or track.playing is None or self._barge_in_at is not None:
            return
        now = time.monotonic()
        if self.inbound is not None and self._during_reply != self.inbound.result_id:
            self._during_reply, self._confirm_speech_ms = self.inbound.result_id, 0.0
        answering = self._answering
        if answering is not None and answering.response_id not in self._yielded:
            onset = now - speech_ms / 1000
            started = track.first_frame_at
            if started is None or onset - started <= settings.TURN_YIELD_GRACE_MS / 1000:
                self._yield(answering, now)
                return
        if speech_ms < settings.BARGE_IN_MIN_SPEECH_MS:
            return
        if not settings.BARGE_IN_CONFIRM_WORDS:
            self._barge_in(now)
        elif (self._confirm is None or self._confirm.done()) and (
                not self._confirm_speech_ms or speech_ms - self._confirm_speech_ms >= settings.BARGE_IN_MIN_SPEECH_MS):
            self._confirm_speech_ms = speech_ms
            self._confirm = self._spawn(self._confirm_words())

    def _barge_in(self, at: float) -> None:
        self._barge_in_at = at
        if self.outbound is not None:
            self.outbound.flush()  # resolves the reply's future: the speaker reports interrupted

    def _yield(self, answering: OpenTurn, at: float) -> None:
        """The trainee went on within the grace window: withdraw the reply, keep the turn open."""
        self._yielded.add(answering.response_id)
        self._open_turn = answering
        metrics.TURN_YIELDS.inc()
        self._barge_in(at)
        self._spawn(self._answer_if_abandoned(answering, (settings.TURN_PATIENCE_MS + 1000) / 1000))

    async def _answer_if_abandoned(self, turn: OpenTurn, wait: float) -> None:
        """Nothing more came (a yield for a cough, a held "and…" then silence): answer the open turn
        once the trainee has been quiet for ``wait`` seconds."""
        quiet_since = time.monotonic()
        while self._open_turn is turn and not self.closed:
            await asyncio.sleep(0.1)
            inbound = self.inbound
            if inbound is not None and (inbound.detector.in_speech or inbound.utt_start is not None):
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= wait and self._open_turn is turn:
                self._open_turn = None
                now = time.monotonic()
                self._release(turn, FinalResult(
                    text=turn.text, confidence=turn.confidence, language=turn.language, start_ms=turn.start_ms,
                    end_ms=turn.end_ms, result_id=turn.result_id, stream_start_ms=turn.stream_start_ms,
                    stream_end_ms=turn.stream_end_ms, interim_count=0, last_voiced_at=now, decided_at=now,
                    ready_at=now))

    async def _confirm_words(self) -> None:
        """Decode what the trainee has said over the buyer so far; real words (not "yeah") stop the buyer."""
        inbound = self.inbound
        if inbound is None or inbound.utt_start is None:
            return
        audio = inbound.listening.utterance_audio(inbound.utt_start, inbound.total)
        try:
            transcript = await inbound.listening.transcribe(audio, language=inbound.language)
            words = transcript.text.strip()
        except Exception:  # noqa: BLE001 - no ASR to ask: sustained speech is reason enough
            words = "?"
        if not words or is_backchannel(words, inbound.language):
            return
        if self.outbound is not None and self.outbound.playing is not None and self._barge_in_at is None:
            self._barge_in(time.monotonic())

    def on_error(self, code: ErrorCode, message: str, details: dict[str, Any]) -> None:
        self._spawn(self.error(code, message, details))

    # ==== turns ==================================================================================

    async def _run_turns(self) -> None:
        while not self.closed:
            result, continues = await self._turns.get()
            try:
                # Its own task, so close() can let it persist what was said before stopping it.
                self._current_turn = asyncio.get_running_loop().create_task(self._turn(result, continues))
                await self._current_turn
            except asyncio.CancelledError:
                raise
            except SessionEnded:
                await self._end("error")
            except Exception:  # noqa: BLE001 - keep the call alive for the next turn
                log.exception("turn failed", extra={"session_id": self.session_id})
                await self.error(ErrorCode.ASR_FAILED, "The turn could not be completed.",
                                 {"result_id": result.result_id})

    async def _turn(self, result: FinalResult, continues: OpenTurn | None = None) -> None:
        latency: dict[str, float | None] = {
            "endpointing_ms": round(result.endpointing_ms, 1),
            "asr_final_ms": round(result.asr_final_ms, 1),
        }
        metrics.ENDPOINTING_DELAY_SECONDS.observe(result.endpointing_ms / 1000)
        metrics.ASR_FINAL_LATENCY_SECONDS.labels(engine=self.engines.asr.name).observe(result.asr_final_ms / 1000)
        if continues is not None and continues.utterance_id is not None:
            # The rest of a thought the buyer yielded to: the same utterance, the same turn count.
            trainee_id = continues.utterance_id
            await _update_utterance(trainee_id, text=result.text, end_ms=result.end_ms)
        else:
            trainee_id = (await conversation.record_trainee_turn(
                session_id=self.session_id, text=result.text, source=Utterance.Source.VOICE,
                start_ms=result.start_ms, end_ms=result.end_ms, confidence=result.confidence,
                interim_count=result.interim_count, latency=latency,
            )).pk
        reply = await conversation.begin_buyer_reply(self.session_id)
        response_id = f"resp_{uuid.uuid4().hex[:12]}"
        self._answering = OpenTurn(
            result_id=result.result_id, text=result.text, start_ms=result.start_ms, end_ms=result.end_ms,
            confidence=result.confidence, utterance_id=trainee_id, language=result.language,
            stream_start_ms=result.stream_start_ms, stream_end_ms=result.stream_end_ms, response_id=response_id)
        early: list[asyncio.Task] = []

        async def persist_text(text: str) -> None:
            # The reply is stored the moment its text is complete, before the client sees it: a typed
            # turn sent after it is ordered after it (and its brain hears it), and a hang-up during
            # playback cannot lose it. Playback facts are filled in below. Shielded: a barge-in
            # cancels the producer, never the write.
            now = self.session_ms(time.monotonic())
            early.append(asyncio.ensure_future(reply.persist(
                source=Utterance.Source.VOICE, start_ms=now, end_ms=now, latency=latency)))
            await asyncio.shield(early[0])

        spoken = await self.speak(
            response_id, reply.stream(), voice=self.info.voice if self.info else "",
            language=self.info.language if self.info else "en",
            text_response={"message_id": result.result_id, "response_id": response_id}, on_text=persist_text,
        )
        self._answering = None
        utterance = await _settled(early[0]) if early else None
        if response_id in self._yielded:
            self._yielded.discard(response_id)
            if utterance is not None:  # never heard: not part of the conversation
                await _withdraw_reply(self.session_id, utterance.pk)
            return
        if spoken is None:
            return
        played, tts_first_ms = spoken.played, spoken.tts_first_ms
        latency["brain_first_token_ms"] = round(reply.first_chunk_ms, 1) if reply.first_chunk_ms is not None else None
        latency["tts_first_audio_ms"] = round(tts_first_ms, 1) if tts_first_ms is not None else None
        if played.first_frame_at is not None:
            latency["turn_latency_ms"] = round((played.first_frame_at - result.last_voiced_at) * 1000, 1)
            metrics.TURN_LATENCY_SECONDS.observe(latency["turn_latency_ms"] / 1000)
        if reply.first_chunk_ms is not None:
            metrics.BRAIN_FIRST_TOKEN_SECONDS.labels(engine=settings.BRAIN_ENGINE).observe(reply.first_chunk_ms / 1000)
        if tts_first_ms is not None:
            metrics.TTS_FIRST_AUDIO_SECONDS.labels(engine=self.engines.tts.name).observe(tts_first_ms / 1000)
        self.last_turn_latency = dict(latency)
        measured = {k: v for k, v in latency.items() if v is not None}
        await _update_utterance(trainee_id, **measured)
        if utterance is not None:
            await _update_utterance(utterance.pk, **_playback_facts(spoken), **measured)
        else:
            # The text never completed (barge-in or hang-up mid-stream, a failing engine): keep what was heard.
            heard = played.spoken_text if played.interrupted else reply.text
            if heard:
                await reply.persist(
                    spoken_text=heard, interrupted=played.interrupted, source=Utterance.Source.VOICE,
                    start_ms=spoken.start_ms, end_ms=spoken.end_ms, latency=latency,
                )
        if reply.ends_conversation:
            await self._end(str(reply.end_reason))

    async def _end(self, reason: str) -> None:
        await self.layer.send(self.reply_channel, {"type": "media.session_end", "session_id": self.session_id,
                                                   "reason": reason})

    # ==== speaking ===============================================================================

    async def speak(
        self,
        request_id: str,
        chunks: AsyncIterator[str],
        *,
        voice: str = "",
        language: str = "en",
        speed: float = 1.0,
        pitch: float = 1.0,
        text_response: dict[str, Any] | None = None,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> Spoken | None:
        """Speak a streamed text sentence by sentence; returns what was played, and when (None: no connection).

        ``on_text`` is awaited with the whole text once the stream is complete, before ``text_response``.
        """
        async with self._speak_lock:
            track = self.outbound
            if track is None or not self.connected:
                await self.error(ErrorCode.TTS_FAILED, "No media connection to speak on; send an offer first.",
                                 {"request_id": request_id})
                return None
            self._barge_in_at = None
            done = track.begin(request_id)
            await self.emit("tts_start", {"request_id": request_id, "audio_format": self.negotiated.codec,
                                          "sample_rate": track.sample_rate})
            first_audio: list[float] = []
            producer = self._spawn(self._produce(track, chunks, voice, language, speed, pitch, first_audio,
                                                 text_response, on_text))
            result: PlayResult = await done
            stopped_at = time.monotonic()
            if not producer.done():
                producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer
            if result.interrupted and self._barge_in_at is not None:
                self.barge_in_stop_ms = (time.monotonic() - self._barge_in_at) * 1000
            complete = {"request_id": request_id, "duration_ms": result.duration_ms, "interrupted": result.interrupted}
            if request_id in self._yielded:  # the trainee went on: this reply (and its text) is withdrawn
                complete["withdrawn"] = True
            await self.emit("tts_complete", complete)
            start_ms, end_ms = self._played_span(result, stopped_at)
            return Spoken(result, first_audio[0] if first_audio else None, start_ms, end_ms)

    def _played_span(self, result: PlayResult, stopped_at: float) -> tuple[int, int]:
        """Session ms of the reply's first frame and of the end of its last played frame.

        Frames are paced in real time, so the end is the first frame plus the played duration, or
        later when the track starved between sentences (then the reply ended when playback stopped).
        """
        stopped_ms = self.session_ms(stopped_at)
        if result.first_frame_at is None:
            return stopped_ms, stopped_ms
        start_ms = self.session_ms(result.first_frame_at)
        return start_ms, max(start_ms + result.duration_ms, stopped_ms)

    async def _produce(
        self, track: OutboundAudioTrack, chunks: AsyncIterator[str], voice: str, language: str, speed: float,
        pitch: float, first_audio: list[float], text_response: dict[str, Any] | None,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        sentences = SentenceBuffer(language)
        parts: list[str] = []
        mute: list[str] = []  # set by a TTS failure: the rest of the reply goes out as text only
        try:
            async for chunk in chunks:
                parts.append(chunk)
                for sentence in sentences.push(chunk):
                    await self._say(track, sentence, voice, language, speed, pitch, first_audio, mute)
            text = "".join(parts).strip()
            if on_text is not None:
                try:
                    await on_text(text)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the caller persists what was heard instead
                    log.exception("reply text not persisted early", extra={"session_id": self.session_id})
            if text_response is not None:
                await self.emit("text_response", {**text_response, "text": text,
                                                  "language": language, "confidence": 1.0})
            for sentence in sentences.flush():
                await self._say(track, sentence, voice, language, speed, pitch, first_audio, mute)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as ERR_TTS_FAILED; what was queued still plays
            log.exception("reply synthesis failed", extra={"session_id": self.session_id})
            await self.error(ErrorCode.TTS_FAILED, "Speech synthesis failed.", {"reason": str(exc)})
        finally:
            track.close_reply()

    async def _say(
        self, track: OutboundAudioTrack, sentence: str, voice: str, language: str, speed: float, pitch: float,
        first_audio: list[float], mute: list[str] | None = None,
    ) -> None:
        if mute:
            return
        try:
            audio, took = await self.engines.tts_pool.run(
                _synthesize, self.engines, sentence, track.sample_rate, voice, language, speed, pitch
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if mute is None:
                raise
            # No engine could speak (a cloud fallback already failed too): say so once and keep
            # reading the reply, so the trainee still gets its text as text_response.
            mute.append(str(exc))
            log.warning("reply synthesis failed", extra={"session_id": self.session_id})
            await self.error(ErrorCode.TTS_FAILED, "Speech synthesis failed; the reply is sent as text.",
                             {"reason": redact(str(exc)), "engine": self.engines.tts.name})
            return
        if not first_audio:
            first_audio.append(took * 1000)
        track.push(audio, text=sentence)

    async def on_tts_request(self, message: dict[str, Any]) -> None:
        self._spawn(self.speak(
            message.get("request_id") or f"tts_{uuid.uuid4().hex[:8]}", _text_once(message.get("text") or ""),
            voice=message.get("voice") or "", language=self.info.language if self.info else "en",
            speed=float(message.get("speed") or 1.0), pitch=float(message.get("pitch") or 1.0),
        ))

    async def on_text_reply(self, message: dict[str, Any]) -> None:
        self._spawn(self._speak_text_reply(message))

    async def _speak_text_reply(self, message: dict[str, Any]) -> None:
        """Speak a typed turn's reply (persisted by signaling as typed), then record that it was heard."""
        spoken = await self.speak(
            message.get("response_id") or f"resp_{uuid.uuid4().hex[:8]}", _text_once(message.get("text") or ""),
            voice=self.info.voice if self.info else "", language=self.info.language if self.info else "en",
        )
        utterance_id = message.get("utterance_id")
        if spoken is None or spoken.played.first_frame_at is None or not utterance_id:
            return  # never played: it stays what it was, a typed reply
        await _update_session_utterance(self.session_id, int(utterance_id), **_playback_facts(spoken))

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

    async def end_session(self, reason: str) -> None:
        """Ask signaling to end the session (it tells the client ``disconnect`` with ``reason``); see ``_end``."""
        try:
            await self._end(reason)
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
        pending = [t for t in (self._current_turn, *self._tasks) if t is not None and not t.done()]
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
