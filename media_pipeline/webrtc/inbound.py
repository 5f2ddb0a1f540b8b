"""The trainee's voice over WebRTC: every inbound track consumed, decoded audio → 16 kHz → listening.

Stages, each one job: each frame is decoded on the loop as aiortc's packet handler completes it
(``inline_decode``: no decoder thread, no hand-over per frame; a track whose receiver is not
aiortc's is read by ``_consume`` instead) and resampled to 16 kHz (one libswresample call a
frame: ``audio.FrameConverter``) into the shared
listening stage (``media_pipeline.listening``: kept audio, VAD, pre-roll, final decodes and their
failures); ``_vad_loop`` has it score 32 ms batches off the loop (through the process's
``vad_batch`` queue: one VAD-thread pass scores every call's waiting hop, so thread hand-overs do
not grow with the number of calls) and turns endpointer events into ASR work. What this
transport adds on top: interim decodes run every ``INTERIM_INTERVAL_MS`` of speech but only on an
idle ASR thread and never two at once for a call (finals come first); the final decode starts at
``silence_began`` and is dropped on ``speech_resumed``, so the transcript is usually ready when
endpointing fires.

The listener (the pipeline) gets plain callbacks; sample offsets count from the start of the
stream (16 kHz) and are turned into ms since ``asr_start`` and session-relative ms here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from aiortc.mediastreams import MediaStreamError

from media_pipeline import metrics
from media_pipeline.audio import FrameConverter
from media_pipeline.contract import ErrorCode
from media_pipeline.engine_pool import Engines
from media_pipeline.engines.vad.base import VADEvent
from media_pipeline.executor import EngineBusy, RateBudget
from media_pipeline.listening import Heard, Listening, heard
from media_pipeline.spare_cpu import spare_cpu
from media_pipeline.turns import TurnDecision
from media_pipeline.vad_batch import vad_batcher
from media_pipeline.webrtc.inline_decode import InlineDecoder, install
from roleplay.audio_format import SAMPLE_RATE as RATE

log = logging.getLogger(__name__)

VAD_BATCH_SAMPLES = 512  # one Silero window: a 32 ms hop; endpointing waits for the batch, so keep it small
STALL_SECONDS = 0.8  # no frame for this long mid-utterance: the track stopped, close the turn
NO_AUDIO_ERROR_SECONDS = 5.0
_interim_budget: RateBudget | None = None


def interim_budget() -> RateBudget:
    """The process's interim budget (INTERIM_BUDGET_PER_SECOND), shared by every call on this loop."""
    global _interim_budget
    if _interim_budget is None:
        from django.conf import settings

        _interim_budget = RateBudget(settings.INTERIM_BUDGET_PER_SECOND, burst=2.0)
    return _interim_budget


@dataclass(frozen=True)
class FinalResult(Heard):
    """A final as this transport reports it: the heard words (session-relative ms) and its timings."""

    result_id: str
    stream_start_ms: int  # since asr_start: the protocol's start_time/end_time
    stream_end_ms: int
    interim_count: int
    last_voiced_at: float  # monotonic arrival of the last voiced frame
    decided_at: float  # monotonic: endpointing (or asr_stop) closed the turn
    ready_at: float  # monotonic: the transcript existed
    turn: TurnDecision | None = None  # how endpointing decided the turn was over (None: asr_stop, limit)

    @property
    def endpointing_ms(self) -> float:
        return max(0.0, (self.decided_at - self.last_voiced_at) * 1000)

    @property
    def asr_final_ms(self) -> float:
        return max(0.0, (self.ready_at - self.decided_at) * 1000)


class InboundListener(Protocol):
    def on_interim(self, result_id: str, text: str, confidence: float) -> None: ...
    def on_final(self, result: FinalResult) -> None: ...
    def on_speech(self, speech_ms: float) -> None: ...
    def on_error(self, code: ErrorCode, message: str, details: dict[str, Any]) -> None: ...


class InboundAudio:
    def __init__(
        self,
        *,
        engines: Engines,
        listener: InboundListener,
        session_ms: Callable[[float], int],
        record: Callable[[np.ndarray, int], None] | None = None,
        end_silence_ms: int = 400,
        interim_interval_ms: int = 500,
        vad_threshold: float = 0.5,
        max_utterance_ms: int = 30000,
        patience_ms: int | None = None,
    ) -> None:
        self.engines = engines
        self.listener = listener
        self.session_ms = session_ms  # monotonic time -> session-relative ms
        self.record = record
        self.listening = Listening(engines, vad_threshold=vad_threshold, end_silence_ms=end_silence_ms,
                                   max_utterance_ms=max_utterance_ms, patience_ms=patience_ms)
        self.detector = self.listening.detector
        self.interim_samples = interim_interval_ms * RATE // 1000
        self.max_utterance_samples = self.listening.max_utterance_samples
        self.language = "en"
        self.mode = "auto"
        self.active = False
        self.asr_start_sample = 0
        self._arrivals: collections.deque[tuple[int, float]] = collections.deque()
        self._anchor: tuple[int, float] | None = None  # (sample, session ms) for the timeline
        # VAD
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._vad_wake = asyncio.Event()
        self._force_end = False
        # The loop's view of what the VAD has heard, taken between its passes (see _heard): the VAD
        # thread moves the detector's own fields while it scores, so a reader on the loop mid-pass
        # would see voice scored but not yet called speech as a pause that goes on.
        self.quiet_until = 0  # stream samples scored and heard as no speech (Endpointer.quiet_until)
        self.hearing_speech = False
        # utterance
        self.utt_start: int | None = None
        self.result_id = ""
        self.interim_count = 0
        self._interims_started = 0
        self._last_interim_at = 0
        self._interim_end = 0
        self._interim_task: asyncio.Task | None = None
        self._final: tuple[tuple[int, int], asyncio.Task] | None = None
        self._final_order = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._consumers: list[asyncio.Task] = []
        self._inline: list[InlineDecoder] = []
        self._stall_watch: asyncio.Task | None = None
        self._primary_taken = False
        self._last_frame_at = time.monotonic()
        self._audio_error_sent = False
        self.frames_in = 0
        self._closed = False
        self._vad_task = asyncio.get_running_loop().create_task(self._vad_loop(), name="inbound-vad")

    # --- control -------------------------------------------------------------------------------
    def start_recognition(self, *, language: str, mode: str) -> None:
        self.language = language or "en"
        self.mode = mode if mode in ("auto", "manual") else "auto"
        self.active = True
        self.asr_start_sample = self.total
        self._new_utterance(self.total if self.mode == "manual" else None)

    def stop_recognition(self) -> None:
        """``asr_stop``: in manual mode the held utterance is final now; in auto mode close any open one."""
        if not self.active:
            return
        if self.mode == "manual":
            start = self.utt_start if self.utt_start is not None else self.asr_start_sample
            self._close_turn(start, self.total, time.monotonic(), self._last_voiced())
        elif self.detector.in_speech:
            self._force_end = True
            self._vad_wake.set()
        self.active = False

    @property
    def total(self) -> int:
        """Samples received since the stream began."""
        return self.listening.total

    def add_track(self, track: Any, receiver: Any = None) -> None:
        """Hear ``track``: decoded inline on the loop when its aiortc ``receiver`` allows, else read.

        Only the first audio track is heard; any other is still consumed (aiortc would queue its
        frames without bound) but not decoded when inline.
        """
        primary = not self._primary_taken
        self._primary_taken = True
        loop = asyncio.get_running_loop()
        if receiver is not None and getattr(track, "kind", "") == "audio":
            decoder = InlineDecoder(RATE, self._on_pcm if primary else None,
                                    self._on_track_end if primary else None)
            if install(receiver, decoder):
                self._inline.append(decoder)
                if primary:
                    self._stall_watch = loop.create_task(self._watch_stall(), name="inbound-stall")
                    self._consumers.append(self._stall_watch)
                return
            log.warning("aiortc's receiver is not the shape inline_decode knows: reading the track instead")
        self._consumers.append(loop.create_task(self._consume(track, primary)))

    def detach_tracks(self) -> None:
        """A new offer replaces the peer: stop reading the old tracks, the next one is primary."""
        for task in self._consumers:
            task.cancel()
        for decoder in self._inline:
            decoder.detach()
        self._consumers = []
        self._inline = []
        self._stall_watch = None
        self._primary_taken = False

    async def close(self) -> None:
        self._closed = True
        for decoder in self._inline:
            decoder.detach()
        for task in [self._vad_task, *self._consumers, *self._tasks]:
            task.cancel()
        for task in [self._vad_task, *self._consumers]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # --- stage 1: decoded frames as 16 kHz float32 --------------------------------------------------
    def _on_pcm(self, x: np.ndarray) -> None:
        """One decoded frame of the primary track, on the loop (inline-decoded, or read by ``_consume``)."""
        if self._closed:
            return
        now = time.monotonic()
        self._last_frame_at = now
        self._audio_error_sent = False
        self._append(x, now)

    def _on_track_end(self) -> None:
        """The primary track ended (either way it is heard): stop watching it, close a turn left open."""
        if self._stall_watch is not None:
            self._stall_watch.cancel()
            self._stall_watch = None
        if not self._closed:
            self._on_stall()  # the track ended: close a turn left open

    async def _watch_stall(self) -> None:
        """What ``_consume``'s read timeout does for an inline track: no frame for STALL_SECONDS."""
        while not self._closed:
            wait = self._last_frame_at + STALL_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._on_stall()
            await asyncio.sleep(STALL_SECONDS)

    async def _consume(self, track: Any, primary: bool) -> None:
        to_16k = FrameConverter(RATE)
        while not self._closed:
            try:
                frame = await asyncio.wait_for(track.recv(), STALL_SECONDS)
            except TimeoutError:
                self._on_stall()
                continue
            except MediaStreamError:
                break
            if not primary:
                continue  # still read, so aiortc's queue stays empty; one voice per call
            self._on_pcm(to_16k.convert(frame))
        if primary:
            self._on_track_end()

    def _on_stall(self) -> None:
        if self.detector.in_speech:
            self._force_end = True
            self._vad_wake.set()
        if time.monotonic() - self._last_frame_at > NO_AUDIO_ERROR_SECONDS and not self._audio_error_sent:
            self._audio_error_sent = True
            self.listener.on_error(
                ErrorCode.AUDIO_ENCODE_FAILED,
                "No decodable audio has arrived for a while; check the microphone and the codec.",
                {"error_type": "no_inbound_audio", "seconds": NO_AUDIO_ERROR_SECONDS},
            )

    def _append(self, x: np.ndarray, now: float) -> None:
        if x.size == 0:
            return
        start = self.total
        self.listening.append(x)
        self._arrivals.append((self.total, now))
        ms = self.session_ms(now) - x.size * 1000 // RATE
        if self._anchor is None or abs(self._timeline_ms(start) - ms) > 200:
            self._anchor = (start, ms)  # first frame, or a gap (track paused): re-anchor
        if self.record:
            self.record(x, self._timeline_ms(start))
        self._pending.append(x)
        self._pending_n += x.size
        if self._pending_n >= VAD_BATCH_SAMPLES:
            self._vad_wake.set()
        self._trim()

    def _timeline_ms(self, sample: int) -> int:
        assert self._anchor is not None
        return int(self._anchor[1] + (sample - self._anchor[0]) * 1000 // RATE)

    def _trim(self) -> None:
        self.listening.trim(self.utt_start)
        while len(self._arrivals) > 1 and self._arrivals[0][0] < self.listening.kept_from:
            self._arrivals.popleft()

    def arrival(self, sample: int) -> float:
        for end, at in self._arrivals:
            if end >= sample:
                return at - (end - sample) / RATE
        return self._arrivals[-1][1] if self._arrivals else time.monotonic()

    def _last_voiced(self) -> float:
        return self.arrival(self.total)

    # --- stage 2: VAD and turn events ----------------------------------------------------------
    async def _vad_loop(self) -> None:
        while not self._closed:
            await self._vad_wake.wait()
            self._vad_wake.clear()
            if self._pending_n:
                batch = np.concatenate(self._pending)
                self._pending, self._pending_n = [], 0
                try:
                    if self.listening.scores_idle(batch):
                        events = self.listening.score(batch)  # quiet between turns: no model runs
                        metrics.VAD_HOPS_TOTAL.labels("idle").inc()
                    else:
                        events = await vad_batcher(self.engines.vad_pool).score(self.listening.score, batch)
                        metrics.VAD_HOPS_TOTAL.labels("scored").inc()
                except EngineBusy:
                    log.warning("VAD executor full; a batch was dropped")
                    continue
                except Exception:  # noqa: BLE001 - a bad batch must not kill the call's ears
                    log.exception("VAD failed on a batch")
                    continue
                for event in events:
                    self._on_event(event)
            if self._force_end:
                self._force_end = False
                for event in self.detector.finish():
                    self._on_event(event)
            self._heard()
            self._after_batch()

    def _heard(self) -> None:
        """Take in what the pass just scored, once its events are applied (on the loop, no pass in flight)."""
        endpointer = self.detector.endpointer
        self.quiet_until, self.hearing_speech = endpointer.quiet_until, endpointer.in_speech

    def _new_utterance(self, start: int | None) -> None:
        self.utt_start = start
        self.result_id = f"asr_{uuid.uuid4().hex[:12]}"
        self.interim_count = 0
        self._interims_started = 0
        self._last_interim_at = start or 0
        self._interim_end = 0  # stream sample the newest interim shown covers (never show an older one)

    def _on_event(self, event: VADEvent) -> None:
        manual = self.active and self.mode == "manual"
        if event.kind == "speech_start":
            if not manual:
                self._new_utterance(event.start_sample)
            elif self.utt_start is None:
                self.utt_start = max(self.asr_start_sample, event.start_sample)
            return
        if manual or not self.active:
            if event.kind in ("speech_end", "speech_discarded") and not self.active:
                self.utt_start = None
            return
        if event.kind == "silence_began":
            key = (event.start_sample, event.sample)
            task = self._spawn(self._decode(event.start_sample, event.sample))
            self._final = (key, task)
            task.add_done_callback(lambda done, key=key, rid=self.result_id: self._early_interim(done, key, rid))
        elif event.kind == "speech_resumed":
            self._drop_speculative()  # the pause was a breath: that decode is stale
        elif event.kind == "speech_end":
            assert event.end_sample is not None
            decided = time.monotonic()
            self._close_turn(event.start_sample, event.end_sample, decided, self.arrival(event.end_sample),
                             turn=Listening.decision(event))
            self.utt_start = None
        elif event.kind == "speech_discarded":
            self._drop_speculative()
            self.utt_start = None

    def _drop_speculative(self) -> None:
        """Forget the final decode started at the pause (counted: a pause that did not end the turn).

        Many pauses the VAD hears are gaps of 32-128 ms between words, and each costs a whole decode
        (0.4-0.8 per answered turn in bench/capacity.py). Starting it only ~100 ms into a pause
        wasted fewer, but made every turn's final later, and at 12 calls p95 was worse in three
        pairs of three (docs/performance.md, ninth round): so it starts at once.
        """
        if self._final is not None:
            metrics.SPECULATIVE_FINALS_TOTAL.labels("stale").inc()
        self._final = None

    def _early_interim(self, task: asyncio.Task, key: tuple[int, int], result_id: str) -> None:
        """The speculative final is ready while endpointing still waits: show it as an interim.

        Free (the decode is done anyway), and on a loaded machine it is often the only partial
        result a short turn gets, since regular interims yield to finals.
        """
        if task.cancelled() or task.exception() is not None:
            return
        # Still worth showing after a ``speech_resumed`` (a breath): it is a true partial of this
        # utterance, unless a later interim already covers more of it. In fluent speech with short
        # breaths this is often the only partial a turn would otherwise get.
        if result_id != self.result_id or key[1] <= self._interim_end:
            return
        transcript, _ = task.result()
        if not transcript.is_empty:
            self._interim_end = key[1]
            self.listening.hear_words(transcript.text, key[1], self.language, transcript.ending)
            self.interim_count += 1
            self.listener.on_interim(result_id, transcript.text, transcript.confidence)

    def _after_batch(self) -> None:
        if self.detector.in_speech and self.utt_start is not None:
            self.listener.on_speech((self.detector.endpointer.position - self.utt_start) * 1000 / RATE)
        if not self.active or self.utt_start is None:
            return
        pos = self.detector.endpointer.position
        if self.mode == "auto" and not self.detector.in_speech:
            return
        if pos - self.utt_start >= self.max_utterance_samples:
            # A monologue longer than the limit: close it here rather than grow without bound.
            self._close_turn(self.utt_start, pos, time.monotonic(), self._last_voiced())
            self._new_utterance(pos if self.mode == "manual" else None)
            if self.mode == "auto":
                self.detector.endpointer.reset()
            return
        if pos - self._last_interim_at < self.interim_samples:
            return
        if self._interim_task is not None and not self._interim_task.done():
            return  # never two interims at once for a call
        if self._final is not None:
            return  # a pause has begun: the speculative final decode is the next partial result
        if self._interims_started and not (self.engines.asr_idle() and spare_cpu().spare()
                                           and interim_budget().try_take()):
            # Finals first: after the first, interims only on idle ASR threads, on a machine with
            # idle cores (media_pipeline.spare_cpu), and within the process's budget. Skipped, not
            # retried every batch: the next try is one interval later.
            self._last_interim_at = pos
            metrics.INTERIMS_SKIPPED_TOTAL.inc()
            return
        if not self._interims_started:
            interim_budget().try_take()  # the first of a turn always runs, but counts
        self._interims_started += 1
        self._last_interim_at = pos
        self._interim_task = self._spawn(self._interim(self.result_id, self.utt_start, pos))

    # --- stage 3: ASR --------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _decode(self, start: int, end: int) -> tuple[Any, float]:
        audio = self.listening.utterance_audio(start, end)
        transcript = await self.listening.transcribe(audio, language=self.language)
        return transcript, time.monotonic()

    async def _interim(self, result_id: str, start: int, end: int) -> None:
        try:
            transcript, _ = await self._decode(start, end)
        except Exception:  # noqa: BLE001 - an interim is best effort
            return
        if (result_id == self.result_id and self.utt_start is not None and not transcript.is_empty
                and end > self._interim_end):
            self._interim_end = end
            self.listening.hear_words(transcript.text, end, self.language, transcript.ending)  # the word cue
            self.interim_count += 1
            self.listener.on_interim(result_id, transcript.text, transcript.confidence)

    def _close_turn(self, start: int, end: int, decided_at: float, last_voiced_at: float,
                    turn: TurnDecision | None = None) -> None:
        """Turn over: reuse the decode started at silence_began if it covers the same span."""
        pending, self._final = self._final, None
        if pending and pending[0] == (start, end):
            task = pending[1]
            metrics.SPECULATIVE_FINALS_TOTAL.labels("used").inc()
        else:
            task = self._spawn(self._decode(start, end))
        self._spawn(self._finalize(task, start, end, decided_at, last_voiced_at, self.result_id, self.interim_count,
                                   turn))

    async def _finalize(
        self, task: asyncio.Task, start: int, end: int, decided_at: float, last_voiced_at: float,
        result_id: str, interims: int, turn: TurnDecision | None = None,
    ) -> None:
        async with self._final_order:  # results leave in the order the turns ended
            try:
                transcript, ready_at = await task
            except Exception as exc:  # noqa: BLE001 - reported to the client (listening decides how)
                failure = self.listening.failure(exc, language=self.language)
                self.listener.on_error(failure.code, failure.message, {**failure.details, "result_id": result_id})
                return
            first = self._timeline_ms(start) if self._anchor else 0
            last = self._timeline_ms(end) if self._anchor else 0
            said = heard(transcript, language=self.language, start_ms=first, end_ms=last)
            self.listener.on_final(
                FinalResult(
                    **vars(said),
                    result_id=result_id,
                    stream_start_ms=max(0, (start - self.asr_start_sample) * 1000 // RATE),
                    stream_end_ms=max(0, (end - self.asr_start_sample) * 1000 // RATE),
                    interim_count=interims,
                    last_voiced_at=last_voiced_at,
                    decided_at=decided_at,
                    ready_at=max(ready_at, decided_at),
                    turn=turn,
                )
            )
