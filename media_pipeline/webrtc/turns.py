"""The turn stage of a WebRTC call: finals in → one trainee turn → the buyer's reply spoken.

:class:`VoiceTurns` is the call's ``InboundListener`` (``media_pipeline.webrtc.inbound``): it hears interims,
finals and "the trainee is speaking", and decides what they mean for the conversation:

- a final becomes a turn, persisted through ``roleplay.conversation``, answered by the buyer's
  streamed reply on the call's :class:`~media_pipeline.webrtc.speaking.Speaker`; turns run one at a time,
  in order, each in its own task so a hang-up lets it persist what was said;
- **one turn is one turn** (``media_pipeline.joining``): a final that ends on "and"/"um"/"因为" is held
  (shown as an interim) for the rest of the thought; the trainee going on within
  ``TURN_YIELD_GRACE_MS`` of the buyer starting makes the buyer yield (the reply is withdrawn) and
  joins the fragment to the same utterance and ``result_id``; an open turn nobody continues is
  answered as it stands;
- **barge-in on words**: speech over the buyer stops it once ASR confirms words that are not a
  backchannel; a backchannel ("mm-hm") is reported with ``backchannel: true`` and is not a turn.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from media_pipeline import metrics
from media_pipeline.contract import ErrorCode
from media_pipeline.engine_pool import Engines
from media_pipeline.joining import OpenTurn, is_backchannel, joined_facts, turn_end_facts
from media_pipeline.webrtc.inbound import FinalResult, InboundAudio
from media_pipeline.webrtc.outbound import OutboundAudioTrack
from media_pipeline.webrtc.speaking import Speaker, playback_facts
from roleplay import conversation, services
from roleplay.audio_format import SAMPLE_RATE as RATE
from roleplay.errors import SessionEnded
from roleplay.models import Utterance

log = logging.getLogger(__name__)


class TurnsHost(Protocol):
    """What the turn stage needs of its call (``media_pipeline.webrtc.call.CallSession``)."""

    session_id: str
    engines: Engines
    inbound: InboundAudio | None
    outbound: OutboundAudioTrack | None
    speaker: Speaker
    mode: str
    closed: bool
    voice: str
    language: str
    patience_ms: int  # the longest pause inside a turn (the scenario's, else TURN_PATIENCE_MS)

    def session_ms(self, monotonic: float) -> int: ...
    async def emit(self, message_type: str, data: dict[str, Any]) -> None: ...
    async def error(self, code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> None: ...
    def spawn(self, coro: Any) -> asyncio.Task: ...
    async def request_end(self, reason: str) -> None: ...


@database_sync_to_async
def _update_utterance(utterance_id: int, **fields: Any) -> None:
    services.utterance_update(utterance_id=utterance_id, **fields)


@database_sync_to_async
def _withdraw_reply(session_id: str, utterance_id: int) -> None:
    services.utterance_withdraw(session_id=session_id, utterance_id=utterance_id)


async def _settled(task: asyncio.Task) -> Any:
    """The task's result, or None if it failed (already logged by whoever cares)."""
    try:
        return await task
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - the caller falls back to persisting what was heard
        log.exception("early reply persist failed")
        return None


def final_data(result: FinalResult) -> dict[str, Any]:
    """The protocol's ``asr_result`` data for a final."""
    return {"result_id": result.result_id, "text": result.text, "is_final": True,
            "confidence": round(result.confidence, 3), "language": result.language,
            "start_time": result.stream_start_ms, "end_time": result.stream_end_ms}


def _as_final(turn: OpenTurn, latest: FinalResult) -> FinalResult:
    return dataclasses.replace(latest, text=turn.text, result_id=turn.result_id, start_ms=turn.start_ms,
                               end_ms=turn.end_ms, confidence=turn.confidence, language=turn.language,
                               stream_start_ms=turn.stream_start_ms, stream_end_ms=turn.stream_end_ms)


def _final_now(turn: OpenTurn) -> FinalResult:
    """An open turn as a final decided now (nothing more came, so there is no later final to time it)."""
    now = time.monotonic()
    return FinalResult(text=turn.text, confidence=turn.confidence, language=turn.language, start_ms=turn.start_ms,
                       end_ms=turn.end_ms, result_id=turn.result_id, stream_start_ms=turn.stream_start_ms,
                       stream_end_ms=turn.stream_end_ms, interim_count=0, last_voiced_at=now, decided_at=now,
                       ready_at=now)


class VoiceTurns:
    def __init__(self, host: TurnsHost) -> None:
        self.host = host
        self._queue: asyncio.Queue[tuple[FinalResult, OpenTurn | None]] = asyncio.Queue()
        self.current: asyncio.Task | None = None  # the turn being answered (close() lets it finish)
        # The turn the reply being spoken answers, and a turn whose reply yielded to the trainee (or
        # that ended on "and…"), waiting for the rest of the thought.
        self._answering: OpenTurn | None = None
        self._open_turn: OpenTurn | None = None
        self._during_reply = ""  # result id of the trainee utterance that began while the buyer spoke
        self._confirm: asyncio.Task | None = None
        self._confirm_speech_ms = 0.0
        self.last_turn_latency: dict[str, float | None] = {}

    # ==== what the trainee's ears report (InboundListener) =======================================

    def on_interim(self, result_id: str, text: str, confidence: float) -> None:
        self.host.spawn(self.host.emit("asr_interim", {"result_id": result_id, "text": text, "is_final": False,
                                                       "confidence": round(confidence, 3)}))

    def on_error(self, code: ErrorCode, message: str, details: dict[str, Any]) -> None:
        self.host.spawn(self.host.error(code, message, details))

    def on_final(self, result: FinalResult) -> None:
        host = self.host
        during_reply = result.result_id == self._during_reply and host.outbound is not None
        if result.text and during_reply and self._open_turn is None and is_backchannel(result.text, result.language):
            # "mm-hm" while the buyer talks: shown and counted, but neither a turn nor an interruption.
            metrics.BACKCHANNELS.inc()
            host.spawn(host.emit("asr_result", {**final_data(result), "backchannel": True}))
            return
        continues, self._open_turn = self._open_turn, None
        if continues is not None:
            if not result.text:  # the trainee's "more" was nothing: answer what they said
                self._release(continues, result)
                return
            joined = continues.joined(result.text, end_ms=result.end_ms, confidence=result.confidence,
                                      language=result.language, turn_end=turn_end_facts(result.turn))
            result = dataclasses.replace(
                result, text=joined.text, result_id=joined.result_id, start_ms=joined.start_ms,
                confidence=joined.confidence, stream_start_ms=continues.stream_start_ms, ending=None)
        held = OpenTurn(result_id=result.result_id, text=result.text, start_ms=result.start_ms,
                        end_ms=result.end_ms, confidence=result.confidence, language=result.language,
                        utterance_id=continues.utterance_id if continues else None,
                        stream_start_ms=result.stream_start_ms, stream_end_ms=result.stream_end_ms,
                        turn_end=turn_end_facts(result.turn), ending=result.ending)
        if result.text and host.mode == "auto" and held.cue:
            # "…and", "um", "因为": the thought goes on. Shown as an interim; the final waits for the rest
            # (or for the patience to run out), so the turn gets one asr_result and one reply. The
            # pause endpointing already waited counts: "and…" then silence is answered one patience
            # after the last word, not two.
            self._open_turn = held
            self.on_interim(result.result_id, result.text, result.confidence)
            wait = max(0.0, held.hold_ms(host.patience_ms) - result.endpointing_ms) / 1000
            host.spawn(self._answer_if_abandoned(held, wait))
            return
        host.spawn(host.emit("asr_result", final_data(result)))
        if result.text:
            self._queue.put_nowait((result, continues))

    def on_speech(self, speech_ms: float) -> None:
        """The trainee is speaking (``speech_ms`` so far) — maybe over the buyer.

        Within the grace window of the buyer's first audible frame it is the same thought going on:
        the buyer yields. Later, sustained speech stops the buyer once ASR confirms words that are
        not a backchannel (``BARGE_IN_CONFIRM_WORDS``), else as soon as it lasts
        ``BARGE_IN_MIN_SPEECH_MS``.
        """
        host, speaker = self.host, self.host.speaker
        track = host.outbound
        if track is None or track.playing is None or speaker.barge_in_at is not None:
            return
        now = time.monotonic()
        if host.inbound is not None and self._during_reply != host.inbound.result_id:
            self._during_reply, self._confirm_speech_ms = host.inbound.result_id, 0.0
        answering = self._answering
        if answering is not None and answering.response_id not in speaker.withdrawn:
            onset = now - speech_ms / 1000
            started = track.first_frame_at
            if started is None or onset - started <= settings.TURN_YIELD_GRACE_MS / 1000:
                self._yield(answering, now)
                return
        if speech_ms < settings.BARGE_IN_MIN_SPEECH_MS:
            return
        if not settings.BARGE_IN_CONFIRM_WORDS:
            speaker.barge_in(now)
        elif (self._confirm is None or self._confirm.done()) and (
                not self._confirm_speech_ms or speech_ms - self._confirm_speech_ms >= settings.BARGE_IN_MIN_SPEECH_MS):
            self._confirm_speech_ms = speech_ms
            self._confirm = host.spawn(self._confirm_words())

    # ==== one turn is one turn ===================================================================

    def _yield(self, answering: OpenTurn, at: float) -> None:
        """The trainee went on within the grace window: withdraw the reply, keep the turn open."""
        self._open_turn = answering
        metrics.TURN_YIELDS.inc()
        self.host.speaker.withdraw(answering.response_id, at)
        self.host.spawn(self._answer_if_abandoned(answering, (self.host.patience_ms + 1000) / 1000))

    def _release(self, turn: OpenTurn, latest: FinalResult | None = None) -> None:
        """Answer an open turn as it stands (its final is sent now unless it was sent before the yield).

        ``latest``: the final that said nothing more (its timings are kept); None when nothing came.
        """
        final = _as_final(turn, latest) if latest is not None else _final_now(turn)
        if turn.utterance_id is None:
            self.host.spawn(self.host.emit("asr_result", final_data(final)))
        self._queue.put_nowait((final, turn))

    async def _answer_if_abandoned(self, turn: OpenTurn, wait: float) -> None:
        """Nothing more came (a yield for a cough, a held "and…" then silence): answer the open turn
        once the trainee has been quiet for ``wait`` seconds of *listened* audio — on the VAD's own
        clock, so a loaded machine whose VAD runs behind never mistakes unheard speech for silence —
        or, when no audio arrives at all (a muted microphone), for twice that on the wall clock."""
        inbound = self.host.inbound
        quiet_from = inbound.quiet_until if inbound is not None else 0
        quiet_since = time.monotonic()
        while self._open_turn is turn and not self.host.closed:
            await asyncio.sleep(0.1)
            inbound = self.host.inbound
            # The loop's view between VAD passes: voice heard but not yet long enough to be called
            # speech does not count as quiet (inbound.quiet_until stays where it began).
            speaking = inbound is not None and (inbound.hearing_speech or inbound.utt_start is not None)
            if speaking:
                quiet_from, quiet_since = inbound.quiet_until, time.monotonic()
                continue
            listened = (inbound.quiet_until - quiet_from) / RATE if inbound is not None else 0.0
            if (listened >= wait or time.monotonic() - quiet_since >= 2 * wait) and self._open_turn is turn:
                self._open_turn = None
                self._release(turn)

    async def _confirm_words(self) -> None:
        """Decode what the trainee has said over the buyer so far; real words (not "yeah") stop the buyer."""
        inbound, speaker = self.host.inbound, self.host.speaker
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
        if speaker.playing is not None and speaker.barge_in_at is None:
            speaker.barge_in(time.monotonic())

    # ==== answering, one turn at a time ==========================================================

    async def run(self) -> None:
        while not self.host.closed:
            result, continues = await self._queue.get()
            try:
                # Its own task, so close() can let it persist what was said before stopping it.
                self.current = asyncio.get_running_loop().create_task(self._turn(result, continues))
                await self.current
            except asyncio.CancelledError:
                raise
            except SessionEnded:
                await self.host.request_end("error")
            except Exception:  # noqa: BLE001 - keep the call alive for the next turn
                log.exception("turn failed", extra={"session_id": self.host.session_id})
                await self.host.error(ErrorCode.ASR_FAILED, "The turn could not be completed.",
                                      {"result_id": result.result_id})

    async def _turn(self, result: FinalResult, continues: OpenTurn | None = None) -> None:
        host = self.host
        session_id = host.session_id
        latency: dict[str, float | None] = {
            "endpointing_ms": round(result.endpointing_ms, 1),
            "asr_final_ms": round(result.asr_final_ms, 1),
        }
        metrics.ENDPOINTING_DELAY_SECONDS.observe(result.endpointing_ms / 1000)
        metrics.ASR_FINAL_LATENCY_SECONDS.labels(engine=host.engines.asr.name).observe(result.asr_final_ms / 1000)
        # The last pause's decision; a turn that took several utterances says how many were joined.
        turn_end = turn_end_facts(result.turn)
        if continues is not None:
            turn_end = joined_facts(continues.turn_end, turn_end)
        if continues is not None and continues.utterance_id is not None:
            # The rest of a thought the buyer yielded to: the same utterance, the same turn count.
            trainee_id = continues.utterance_id
            await _update_utterance(trainee_id, text=result.text, end_ms=result.end_ms, turn_end=turn_end)
        else:
            trainee_id = (await conversation.record_trainee_turn(
                session_id=session_id, text=result.text, source=Utterance.Source.VOICE,
                start_ms=result.start_ms, end_ms=result.end_ms, confidence=result.confidence,
                interim_count=result.interim_count, latency=latency, turn_end=turn_end,
            )).pk
        reply = await conversation.begin_buyer_reply(session_id)
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
            now = host.session_ms(time.monotonic())
            early.append(asyncio.ensure_future(reply.persist(
                source=Utterance.Source.VOICE, start_ms=now, end_ms=now, latency=latency)))
            await asyncio.shield(early[0])

        spoken = await host.speaker.speak(
            response_id, reply.stream(), voice=host.voice, language=host.language,
            text_response={"message_id": result.result_id, "response_id": response_id}, on_text=persist_text,
        )
        self._answering = None
        utterance = await _settled(early[0]) if early else None
        if response_id in host.speaker.withdrawn:
            host.speaker.withdrawn.discard(response_id)
            if utterance is not None:  # never heard: not part of the conversation
                await _withdraw_reply(session_id, utterance.pk)
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
            metrics.TTS_FIRST_AUDIO_SECONDS.labels(engine=host.engines.tts.name).observe(tts_first_ms / 1000)
        self.last_turn_latency = dict(latency)
        measured = {k: v for k, v in latency.items() if v is not None}
        await _update_utterance(trainee_id, **measured)
        if utterance is not None:
            await _update_utterance(utterance.pk, **playback_facts(spoken), **measured)
        else:
            # The text never completed (barge-in or hang-up mid-stream, a failing engine): keep what was heard.
            heard = played.spoken_text if played.interrupted else reply.text
            if heard:
                await reply.persist(
                    spoken_text=heard, interrupted=played.interrupted, source=Utterance.Source.VOICE,
                    start_ms=spoken.start_ms, end_ms=spoken.end_ms, latency=latency,
                )
        if reply.ends_conversation:
            await host.request_end(str(reply.end_reason))


__all__ = ["TurnsHost", "VoiceTurns", "final_data"]
