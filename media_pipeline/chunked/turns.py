"""Turn logic of the audio-chunk path: flushed bytes in, transport-neutral events out (``ChunkEvent``).

decode (webm_stream) → listening (VAD segmenting and the final ASR, ``media_pipeline.listening``)
→ the shared conversation turn (roleplay.conversation) → TTS stored as a WAV → ``avatar-response``.

It is the same engine pool, listening stage and turn service as the WebRTC path; what differs is
the delivery: the reply is a fetchable file rather than paced RTP, so there is no barge-in and
no outbound pacing here. Everything CPU-bound runs in the shared bounded executors, never on the
event loop that acknowledges chunks. Both sides are recorded with :class:`CallRecorder` on the
session timeline, and utterances carry session-relative ``start_ms``/``end_ms``, so review and
analytics cannot tell a chunked call from a WebRTC one.

One :class:`ChunkTurns` per session; it is the ``ChunkSink`` of signaling.chunk_sessions.

Load shape (100 concurrent sessions on two cores): the ack of a chunk never waits for anything
here. Each flush (every piece a session buffered since its last flush) is one decode-executor
(``chunk-decode``) call that decodes, resamples and VAD-scores it as one batch (Silero scores all its
windows in one ONNX run). Only finals are decoded by whisper on this path (no interims, no
speculative decodes), each session has at most one turn in flight, and the ``asr`` executor
hands out its slots first come first served, so finals from many sessions are served in order
of their end of speech. Utterances waiting behind a session's turn in flight are bounded
(``MAX_PENDING_TURNS``); past it the client is told to wait for the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from lingecho.channel_layer import cancel_until_done
from lingecho.resilience.redaction import redact
from media_pipeline import audio as audio_utils
from media_pipeline.chunked.webm_stream import AudioDecodeError, AudioStream, open_stream
from media_pipeline.contract import ChunkEvent, ErrorCode, error_body, now_ms
from media_pipeline.engine_pool import call_engines, get_engines, start_warm_up
from media_pipeline.executor import EngineBusy
from media_pipeline.joining import OpenTurn, turn_end_facts
from media_pipeline.listening import Listening, Segment, heard
from media_pipeline.recording import CallRecorder
from roleplay import conversation, selectors, services
from roleplay.errors import DomainError
from roleplay.models import RealtimeSession, Utterance
from roleplay.pages.media import media_url
from roleplay.selectors import CallFacts

logger = logging.getLogger(__name__)

RATE = audio_utils.ASR_RATE
MAX_PENDING_TURNS = 4  # utterances or typed turns queued behind the one being answered
HELD_CHECK_SECONDS = 0.25  # how often a held thought looks whether its patience ran out
STOPPED_SENDING_SECONDS = 5.0  # no flush for this long: the client stopped sending (a held thought is answered)
RESUME_WAIT_SECONDS = 1.0  # the longest a final waits for the audio after it (see ChunkTurns._heard_past)

Emit = Callable[[str, dict[str, Any]], Awaitable[None]]
CloseRequest = Callable[[str], Awaitable[None]]


def reply_audio_name(session_id: str, n: int) -> str:
    return f"sessions/{session_id}/replies/{n}.wav"


# --- what the turn logic needs to know about the session -----------------------------------------

async def load_call_facts(session_id: str) -> CallFacts:
    return await database_sync_to_async(selectors.session_call_facts)(session_id=session_id)


@database_sync_to_async
def _session_totals(session_id: str) -> dict[str, Any]:
    session = RealtimeSession.objects.get(pk=session_id)
    return {"total_turns": session.turn_count, "duration_s": round(session.duration_seconds or 0.0, 3)}


@database_sync_to_async
def _set_audio_metadata(session_id: str, metadata: dict[str, Any]) -> None:
    services.session_set_transport(
        session_id=session_id, transport=RealtimeSession.Transport.CHUNK, audio_metadata=metadata
    )


# --- per-session audio state (used only from the decode executor, one flush at a time) ----------

class StreamState:
    """Decoder, recorder and listening of one recorder stream. Not thread-safe: one flush at a time."""

    def __init__(self, audio_config: dict[str, Any], recorder: CallRecorder, origin_ms: Callable[[], int],
                 listening: Listening) -> None:
        self.audio_config = audio_config
        self.recorder = recorder
        self._origin_ms = origin_ms
        self.decoder: AudioStream = open_stream(audio_config.get("format", "webm-opus"),
                                                sample_rate=int(audio_config.get("sampleRate", RATE)))
        self.listening = listening
        self.origin: int | None = None  # session ms of stream sample 0

    @property
    def in_speech(self) -> bool:
        return self.listening.detector.in_speech

    def ms_at(self, sample: int) -> int:
        return (self.origin or 0) + sample * 1000 // RATE

    def feed(self, data: bytes) -> tuple[list[Segment], str | None]:
        decoded = self.decoder.feed(data)
        return self._take(decoded.audio), decoded.error

    def idle(self) -> list[Segment]:
        """The stream paused: whatever is being said is over."""
        return self.listening.finish()

    def finish(self) -> tuple[list[Segment], str | None]:
        decoded = self.decoder.finish()
        segments = self._take(decoded.audio)
        segments += self.idle()
        return segments, decoded.error

    def _take(self, samples: np.ndarray) -> list[Segment]:
        if samples.size == 0:
            return []
        if self.origin is None:
            self.origin = self._origin_ms()
        self.recorder.add("trainee", samples, at_ms=self.ms_at(self.listening.total))
        return self.listening.feed(samples)


# --- the sink --------------------------------------------------------------------------------------

class ChunkTurns:
    """Decode, endpoint and answer one chunked session. Bind ``emit``/``request_close`` before use."""

    def __init__(self, info: CallFacts, audio_config: dict[str, Any]) -> None:
        self.info = info
        self.session_id = info.session_id
        self.audio_config = audio_config
        # Continues a recording stored by an earlier connection of this session (a resumed call).
        self.recorder = CallRecorder(info.session_id, continue_stored=True)
        # This session's engines: the pool's, with the scenario's ASR/TTS (a cloud engine's failures
        # reach this client as protocol errors).
        start_warm_up()
        self.engines = call_engines(info, on_error=self._engine_error, base=get_engines())
        self.listening = Listening(self.engines, patience_ms=info.patience_ms)
        self.stream = StreamState(audio_config, self.recorder, info.elapsed_ms, self.listening)
        self.ended = False
        self._closed = False
        self._emit: Emit | None = None
        self._request_close: CloseRequest | None = None
        self._jobs: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=MAX_PENDING_TURNS)
        self._worker: asyncio.Task | None = None
        self.turn_latencies_ms: list[float] = []
        self._trainee_end_ms = 0
        self._reports: set[asyncio.Task] = set()
        # A thought held open (it ended on "and", "um"…, or the trainee was already speaking again):
        # the next utterance joins it, or it is answered when the patience runs out.
        self._held: OpenTurn | None = None
        self._release: asyncio.TimerHandle | None = None
        self._held_since = 0.0
        self._audio_at = 0.0  # monotonic arrival of the latest flush (decoded or not yet)
        # What the loop knows the stream said, as of the last flush whose segments it has queued:
        # the decode thread moves ``listening`` on while a flush is scored (its samples count in
        # ``total`` before the VAD has heard them), so a held thought read from there mid-flush
        # looks like a long pause with nobody speaking, and was answered with its rest in the flush.
        self._scored_to = 0  # stream samples the VAD has scored
        self._quiet_until = 0  # ...of which heard as no speech (see Endpointer.quiet_until)
        self._speaking = False

    def bind(self, emit: Emit, request_close: CloseRequest) -> None:
        self._emit, self._request_close = emit, request_close
        self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"turns-{self.session_id}")
        self.recorder.start(self.info.elapsed_ms)  # segments stored as the call goes: a crash keeps them

    async def emit(self, name: str, data: dict[str, Any]) -> None:
        if self._emit is not None:
            await self._emit(name, data)

    async def error(self, code: ErrorCode, message: str, **details: Any) -> None:
        await self.emit(ChunkEvent.ERROR, error_body(code, message, details))

    def _engine_error(self, code: ErrorCode, message: str, details: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self.error(code, message, **details))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    # --- ChunkSink -------------------------------------------------------------------------------
    async def audio(self, data: bytes) -> bool:
        """Decode + VAD one flush off the loop. False = the decoder is saturated and ``data`` was
        not touched: the session keeps it and retries (nothing is dropped)."""
        self._audio_at = time.monotonic()
        try:
            segments, problem = await self.engines.decode_pool.run(self.stream.feed, data)
        except EngineBusy:
            return False
        except AudioDecodeError as exc:  # e.g. an unsupported codec in the track description
            await self.error(ErrorCode.AUDIO_ENCODE_FAILED, f"Audio could not be decoded: {exc}")
            return True
        if problem:
            await self.error(ErrorCode.AUDIO_ENCODE_FAILED, f"Audio could not be decoded: {problem}")
        for segment in segments:
            await self._queue("turn", segment)
        self._heard()
        return True

    def _heard(self) -> None:
        """Take in what the flush just scored, once its segments are queued (on the loop)."""
        endpointer = self.listening.detector.endpointer
        self._scored_to, self._quiet_until = endpointer.position, endpointer.quiet_until
        self._speaking = endpointer.in_speech

    async def idle(self) -> None:
        if not self.stream.in_speech:
            # Nothing open to close: O(1) (forgets a half-started run), no executor hop for a quiet
            # stream. Safe on the loop: the session runs its flushes and idles one at a time.
            self.stream.idle()
            self._heard()
            return
        segments = await self.engines.decode_pool.run(self.stream.idle)
        for segment in segments:
            await self._queue("turn", segment)
        self._heard()

    async def _queue(self, kind: str, payload: Any) -> bool:
        try:
            self._jobs.put_nowait((kind, payload))
        except asyncio.QueueFull:
            await self.error(ErrorCode.RATE_LIMIT, "Earlier turns are still being answered; wait for the reply, then "
                             "say that again.", retry_after=2000, pending=MAX_PENDING_TURNS)
            return False
        return True

    async def text(self, text: str) -> bool:
        """Queue a typed trainee turn (the page's text box works on this path too)."""
        return await self._queue("text", text)

    def opening(self) -> None:
        """Queue the buyer's opening line (a new session; the queue is empty then)."""
        self._jobs.put_nowait(("opening", None))

    async def close(self, reason: str) -> None:
        """End the session: finish the stream, persist the end and the recording, say session-ended."""
        if self._closed:
            return
        self._closed = True
        worker = self._worker
        if worker is not None and worker is not asyncio.current_task():
            # Repeated until it lands: a turn in the middle of a Redis send can swallow one cancel
            # (CPython gh-86296) and would then answer on, holding this close up for seconds.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await cancel_until_done(worker)
        with contextlib.suppress(Exception):
            await self.engines.decode_pool.run(self.stream.finish)
        held, self._held = self._held, None
        if held is not None:  # a thought held open when the call ended is still part of the transcript
            with contextlib.suppress(DomainError):
                await conversation.record_trainee_turn(
                    session_id=self.session_id, text=held.text, source=Utterance.Source.VOICE,
                    start_ms=held.start_ms, end_ms=held.end_ms, confidence=held.confidence)
        # Stored before the end: the after-call job the end dispatches then finds the whole recording
        # (rather than waiting for this writer, see roleplay.recording_segments).
        await self._save_recording()
        try:
            await conversation.end_session(self.session_id, reason)
        except DomainError:
            logger.warning("could not end chunk session", extra={"session_id": self.session_id})
        totals = await _session_totals(self.session_id)
        await self.emit(ChunkEvent.ENDED, {"reason": reason, **totals})

    async def _save_recording(self) -> None:
        try:
            await self.recorder.finish(self._metadata())
        except Exception:  # noqa: BLE001 - a storage failure must not hide the end of the call
            logger.exception("could not save the chunk session recording", extra={"session_id": self.session_id})

    def _metadata(self) -> dict[str, Any]:
        cfg = self.audio_config
        return {"transport": "chunk", "format": cfg.get("format"), "sample_rate": cfg.get("sampleRate"),
                "channels": 1, "chunk_ms": cfg.get("chunkMs")}

    async def save_metadata(self) -> None:
        await _set_audio_metadata(self.session_id, self._metadata())

    # --- turns (one at a time, in order) -----------------------------------------------------------
    async def _work(self) -> None:
        while True:
            kind, payload = await self._jobs.get()
            if self.ended:
                continue
            try:
                if kind == "release":
                    await self._answer_held(payload)
                elif kind == "opening":
                    await self._reply(trigger=None)
                elif kind == "text":
                    await conversation.record_trainee_turn(
                        session_id=self.session_id, text=payload, source=Utterance.Source.TEXT
                    )
                    await self._reply(trigger=None)
                else:
                    await self._turn(payload)
            except asyncio.CancelledError:
                raise
            except DomainError as exc:
                await self.error(ErrorCode.SESSION_NOT_FOUND, exc.message)
            except Exception:  # noqa: BLE001 - one failed turn must not end the worker
                logger.exception("chunk turn failed", extra={"session_id": self.session_id})
                await self.error(ErrorCode.ASR_FAILED, "This turn could not be processed; please say it again.")

    async def _turn(self, segment: Segment) -> None:
        asr_started = time.perf_counter()
        queued_ms = (asr_started - segment.detected_at) * 1000
        try:
            transcript = await self.listening.transcribe(segment.audio, language=self.info.language)
        except Exception as exc:  # noqa: BLE001 - engine failures become a protocol error
            failure = self.listening.failure(exc, language=self.info.language, session_id=self.session_id)
            await self.error(failure.code, failure.message, **failure.details)
            return
        asr_ms = (time.perf_counter() - asr_started) * 1000
        logger.info("chunk turn heard", extra={"session_id": self.session_id, "queued_ms": round(queued_ms),
                                               "asr_ms": round(asr_ms), "seconds": round(segment.audio.size / RATE, 2)})
        said = heard(transcript, language=self.info.language, start_ms=self.stream.ms_at(segment.start_sample),
                     end_ms=self.stream.ms_at(segment.end_sample))
        held, self._held = self._held, None
        if self._release is not None:
            self._release.cancel()
        if not said.text:
            if held is not None:  # the "more" was nothing after all: answer what was said
                await self._answer(held, asr_ms=asr_ms, trigger=segment)
            return
        decided = turn_end_facts(segment.turn)
        turn = OpenTurn(result_id="", text=said.text, start_ms=said.start_ms, end_ms=said.end_ms,
                        confidence=said.confidence, language=said.language, turn_end=decided, ending=said.ending)
        if held is not None:
            turn = held.joined(said.text, end_ms=said.end_ms, confidence=said.confidence, language=said.language,
                               turn_end=decided)
        await self._heard_past(segment.end_sample + settings.TURN_YIELD_GRACE_MS * RATE // 1000)
        if self._unfinished(turn):
            self._hold(turn)
            return
        await self._answer(turn, asr_ms=asr_ms, trigger=segment)

    async def _heard_past(self, sample: int) -> None:
        """Wait (at most ``RESUME_WAIT_SECONDS``) until the stream is decoded ``TURN_YIELD_GRACE_MS``
        past the utterance's end, so whether the trainee went on is known before the buyer answers.

        The WebRTC buyer can yield after it starts; a reply delivered as a file cannot be taken back,
        and flushes arrive up to ``CHUNK_DECODE_INTERVAL_MS`` apart, so a final transcribed quickly
        would otherwise be answered before the audio that shows the thought going on was decoded."""
        deadline = time.monotonic() + RESUME_WAIT_SECONDS
        while self._scored_to < sample and time.monotonic() < deadline and not self._closed:
            await asyncio.sleep(0.05)

    def _unfinished(self, turn: OpenTurn) -> bool:
        """The buyer never starts over an unfinished thought: one that ends on "and"/"um"/"因为", or
        whose speaker is already talking again (a later utterance is being heard or is queued)."""
        queued = list(self._jobs._queue)  # noqa: SLF001 - asyncio.Queue has no public peek
        going_on = self._speaking or self._scored_to > self._quiet_until or any(kind == "turn" for kind, _ in queued)
        return going_on or bool(turn.cue)

    def _hold(self, turn: OpenTurn) -> None:
        self._held = turn
        self._held_since = time.monotonic()
        self._release = asyncio.get_running_loop().call_later(HELD_CHECK_SECONDS, self._release_held, turn)

    def _release_held(self, turn: OpenTurn) -> None:
        """Answer the held thought as it stands once the patience has run out with nothing more said:
        on the stream's own clock (decoding may run behind on a loaded machine: unheard audio is not
        silence), or on the wall clock, twice over, when the client stopped sending audio at all."""
        if self._held is not turn:
            return
        patience = turn.hold_ms(self.info.patience_ms) / 1000
        listened = (self.stream.ms_at(self._quiet_until) - turn.end_ms) / 1000
        # The wall clock only once no audio has reached this call for a while: flushes still on their
        # way (queued for a worker that decodes behind on a loaded machine) may hold the rest of it.
        quiet = max(2 * patience, STOPPED_SENDING_SECONDS)
        stopped = time.monotonic() - max(self._audio_at, self._held_since) >= quiet
        if not self._speaking and (listened >= patience or stopped):
            with contextlib.suppress(asyncio.QueueFull):
                self._jobs.put_nowait(("release", turn))
            return
        self._release = asyncio.get_running_loop().call_later(HELD_CHECK_SECONDS, self._release_held, turn)

    async def _answer_held(self, turn: OpenTurn) -> None:
        if self._held is turn:
            self._held = None
            await self._answer(turn, asr_ms=None, trigger=None)

    async def _answer(self, turn: OpenTurn, *, asr_ms: float | None, trigger: Segment | None) -> None:
        """One turn, however many utterances it took: one transcription, one utterance, one reply."""
        await self.emit(ChunkEvent.HEARD, {
            "text": turn.text,
            "timestamp": now_ms(),
            "confidence": round(turn.confidence, 3),
            "start_ms": turn.start_ms,
            "end_ms": turn.end_ms,
        })
        self._trainee_end_ms = max(self._trainee_end_ms, turn.end_ms)
        await conversation.record_trainee_turn(
            session_id=self.session_id,
            text=turn.text,
            source=Utterance.Source.VOICE,
            start_ms=turn.start_ms,
            end_ms=turn.end_ms,
            confidence=turn.confidence,
            latency={"asr_final_ms": asr_ms} if asr_ms is not None else None,
            turn_end=turn.turn_end,
        )
        await self._reply(trigger=trigger)

    async def _reply(self, *, trigger: Segment | None) -> None:
        reply = await conversation.begin_buyer_reply(self.session_id)
        async for _ in reply.stream():
            pass
        text = reply.text
        ends = reply.ends_conversation
        max_turns = reply.context.max_turns
        turn_count = reply.context.turn_count
        await self.emit(ChunkEvent.REPLY_TEXT, {
            "text": text,
            "turn_count": turn_count,
            "max_turns": max_turns,
            "timestamp": now_ms(),
            "conversation_ended": ends,
        })
        tts_started = time.perf_counter()
        pcm, rate = await self._synthesize(text)
        tts_ms = (time.perf_counter() - tts_started) * 1000
        # Never before the trainee stopped speaking on the session timeline (a client that sends
        # faster than real time, e.g. resending after a reconnect, runs the stream clock ahead).
        start_ms = max(self.info.elapsed_ms(), self._trainee_end_ms)
        duration_ms = int(len(pcm) * 1000 / rate) if rate else 0
        latency: dict[str, float | None] = {"tts_first_audio_ms": tts_ms}
        if trigger is not None:
            latency["turn_latency_ms"] = (time.perf_counter() - trigger.detected_at) * 1000
            self.turn_latencies_ms.append(latency["turn_latency_ms"])
        saved = await reply.persist(
            source=Utterance.Source.VOICE if len(pcm) else Utterance.Source.TEXT,
            start_ms=start_ms, end_ms=start_ms + duration_ms, latency=latency,
        )
        audio_url = None
        if len(pcm):
            name = await asyncio.to_thread(self._store_reply, saved.seq, pcm, rate, start_ms)
            audio_url = media_url(name)
        await self.emit(ChunkEvent.REPLY_AUDIO, {
            "audio_url": audio_url,
            "duration_s": round(duration_ms / 1000, 3),
            "video_url": media_url(self.info.video_name) if self.info.video_name else None,
        })
        if ends and self._request_close is not None:
            self.ended = True
            await self._request_close(str(reply.end_reason))

    async def _synthesize(self, text: str) -> tuple[np.ndarray, int]:
        engine = self.engines.tts

        def run() -> np.ndarray:
            chunks = list(engine.synthesize(text, voice=self.info.voice, language=self.info.language))
            return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

        try:
            return await self.engines.tts_pool.run(run), engine.sample_rate
        except Exception as exc:  # noqa: BLE001 - the text reply stands even if speech fails
            logger.warning("chunk TTS failed: %s", redact(str(exc)), extra={"session_id": self.session_id})
            await self.error(ErrorCode.TTS_FAILED, "The reply could not be spoken; it is sent as text.",
                             reason=redact(str(exc)), engine=getattr(engine, "name", ""))
            return np.zeros(0, dtype=np.int16), 0

    def _store_reply(self, n: int, pcm: np.ndarray, rate: int, start_ms: int) -> str:
        self.recorder.add("buyer", audio_utils.resample(pcm, rate, RATE), at_ms=start_ms)
        name = reply_audio_name(self.session_id, n)
        if default_storage.exists(name):
            default_storage.delete(name)
        return default_storage.save(name, ContentFile(audio_utils.wav_bytes(pcm, rate)))


__all__ = ["ChunkTurns", "StreamState", "load_call_facts", "reply_audio_name"]
