"""Listening, the stage both transports share: 16 kHz PCM in → VAD → utterances → final transcripts.

One :class:`Listening` per trainee stream. It keeps the recent audio by stream sample offset,
runs the stream's VAD and endpointer (:class:`SpeechDetector`), cuts each utterance out with one
pre-roll and tail, decodes it on the engine pool's ASR executor, and turns an ASR failure into
one :class:`NotHeard` (code, message, details) whichever transport asked. What the transports
add on top stays theirs: WebRTC its speculative finals, interims, manual mode and barge-in
(``media_pipeline.webrtc.inbound``); the chunk path its decoder, flush batching and turn queue
(``media_pipeline.chunked.turns``).

End of turn: the endpointer asks this stage's turn policy (``media_pipeline.turns``) once a pause
has lasted ``TURN_ASK_SILENCE_MS``; the question runs inside ``score``, so the Smart Turn model
runs wherever the VAD does (the VAD executor for WebRTC, the decode executor for chunks), never on
a loop. The model reads the last ≤ 8 s the VAD has scored, which ``score`` keeps for itself (the
kept audio belongs to the other half, see below). Words help when a transport has them
(``hear_words``: WebRTC's interims). Each closed utterance carries a :class:`TurnDecision`
(``Segment.turn``, ``decision(event)``) and the decision is counted in ``/metrics``.

The question is started early: Smart Turn takes ~0.2 s on one core here, as long as the pause it
waits for. So when a pause begins (``score`` sees the endpointer in a pause not yet judged), the
model is started on the engine pool's ``turn`` executor over the turn so far with the pause filled
out to the ask point by repeating the room sound heard in it; at the ask point the answer is
usually ready. Speech that resumes first costs one wasted inference (counted in
``early_started``/``early_used``); a full executor or a flush that spans the whole pause (chunks)
simply asks at the ask point.

Threads: ``append``, ``audio`` and ``trim`` touch the kept audio; ``score`` touches only the
detector and its own copy of the scored audio. A caller may run ``score`` on the VAD executor while
appending on its loop (WebRTC), or everything on one decode thread (chunks), but never two callers
of the same half at once. ``hear_words`` may be called from anywhere (it replaces one tuple).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from django.conf import settings

from lingecho.resilience.redaction import redact
from media_pipeline.contract import ErrorCode
from media_pipeline.engine_pool import Engines
from media_pipeline.engines.asr.base import ASRError, EndingOdds, Transcript
from media_pipeline.engines.vad.base import EndpointerConfig, SpeechDetector, VADEvent
from media_pipeline.executor import EngineBusy
from media_pipeline.metrics import TURN_DECISIONS_TOTAL, TURN_DETECTOR_SECONDS
from media_pipeline.turns import TurnDecision, Verdict, turn_policy
from media_pipeline.turns.base import TurnDetector
from media_pipeline.turns.smart_turn import WINDOW_SAMPLES as TURN_WINDOW_SAMPLES
from roleplay.audio_format import SAMPLE_RATE as RATE

log = logging.getLogger(__name__)

# Decode from this long before the VAD's start: the endpointer needs a voiced run before it says
# "speech", and Silero scores a soft onset (an unvoiced "s", "h", "f") below the threshold.
PREROLL_SAMPLES = RATE * 3 // 10
TAIL_SAMPLES = RATE // 10  # and a little after its end: a trailing consonant fades under the threshold
# Audio kept behind the newest sample between utterances: where VAD runs behind arrival (WebRTC
# scores batches on an executor), a start it reports late must still find its pre-roll.
KEEP_SAMPLES = 2 * RATE
BUSY_RETRY_MS = 2000
# The turn detector hears the turn from this long before its start (Pipecat feeds Smart Turn 0.5 s
# of pre-speech), and at most its 8 s window.
TURN_PRESPEECH_SAMPLES = RATE // 2
# Words count for the turn decision only if they cover the speech up to this close to the pause:
# an older interim may end on an "and" the trainee has since finished.
WORDS_FRESH_SAMPLES = RATE // 5
# Start the model early once a pause has lasted this long (96 ms): it still answers before the ask
# point (200 ms; one inference is 28-50 ms on these machines), and fewer of the short dips between
# words start a run that speech then makes useless. bench/turn_taking.py, paced as a live call:
# 273 runs for 236 answers used instead of 369 for 232 after 32 ms, the same delay (p50 266 ms, p95
# 460 ms); bench/capacity.py at 4 calls: 16.4-16.6 % of a core per call instead of 17.3-18.1 %.
# (An earlier measurement that found a wait costly fed the bench flat out, not in real time.)
EARLY_AFTER_SAMPLES = RATE * 96 // 1000
# How long the VAD thread waits for an early answer that is not ready, and when it asks again.
EARLY_WAIT_SECONDS = 0.05
PENDING_RETRY_MS = 64


class SampleWindow:
    """The recent samples of one stream, addressed by stream offset: appended in pieces, sliced, and
    forgotten from the front. Not thread-safe: one owner thread (listening keeps two, one per half)."""

    def __init__(self) -> None:
        self._pieces: list[np.ndarray] = []
        self.start = 0  # stream offset of the first sample still held
        self.total = 0  # samples appended since the stream began

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._pieces.append(samples)
            self.total += samples.size

    def slice(self, start: int, end: int) -> np.ndarray:
        """Samples ``[start, end)`` of the stream, clipped to what is still held."""
        start, end = max(start, self.start), min(end, self.total)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        if len(self._pieces) > 1:
            self._pieces = [np.concatenate(self._pieces)]
        return self._pieces[0][start - self.start : end - self.start]

    def forget_before(self, offset: int) -> None:
        """Drop whole pieces that end at or before stream ``offset``."""
        while self._pieces and self.start + self._pieces[0].size <= offset:
            self.start += self._pieces.pop(0).size


@dataclass(frozen=True)
class Segment:
    """A finished trainee utterance: its audio (pre-roll and tail included) and where it sits (samples)."""

    audio: np.ndarray
    start_sample: int
    end_sample: int
    detected_at: float  # perf_counter when the end of speech was decided
    turn: TurnDecision | None = None  # how its end was decided (``media_pipeline.turns``)


@dataclass(frozen=True)
class Heard:
    """A final transcript, transport-neutral: what the trainee said and when, on the session timeline."""

    text: str
    confidence: float
    language: str
    start_ms: int
    end_ms: int
    ending: EndingOdds | None = field(default=None, kw_only=True)  # the ASR's odds of more to come


@dataclass(frozen=True)
class NotHeard:
    """An utterance lost to ASR: the protocol error both transports send (the stream keeps listening)."""

    code: ErrorCode
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class Listening:
    """One stream's ears. ``engines`` is the call's view of the pool: its VAD, ASR and ASR executor."""

    def __init__(
        self,
        engines: Engines,
        *,
        vad_threshold: float | None = None,
        end_silence_ms: int | None = None,
        max_utterance_ms: int | None = None,
        patience_ms: int | None = None,
    ) -> None:
        """``patience_ms``: the longest pause inside a turn (a scenario's own; default ``TURN_PATIENCE_MS``)."""
        self.engines = engines
        end_silence = settings.ENDPOINT_SILENCE_MS if end_silence_ms is None else end_silence_ms
        self.policy = turn_policy(getattr(engines, "turn", None), end_silence_ms=end_silence,
                                  patience_ms=patience_ms)
        self.detector = SpeechDetector(engines.vad, EndpointerConfig(
            threshold=settings.VAD_THRESHOLD if vad_threshold is None else vad_threshold,
            end_silence_ms=end_silence,
            ask_silence_ms=self.policy.ask_silence_ms,
            patience_ms=self.policy.patience_ms,
        ), turn_end=self._turn_end)
        self._scored = SampleWindow()  # the score half's copy of the last seconds, for the model
        # (text, stream sample it covers to, language, the ASR's ending odds)
        self._words: tuple[str, int, str, EndingOdds | None] = ("", 0, "en", None)
        self._early: tuple[tuple[int, int, int], Future[Verdict], int] | None = None  # (turn, pause, ask), job, start
        self.early_started = 0
        self.early_used = 0
        max_ms = settings.MAX_AUDIO_DURATION_MS if max_utterance_ms is None else max_utterance_ms
        self.max_utterance_samples = max_ms * RATE // 1000
        self._kept = SampleWindow()

    # --- audio kept for decoding ---------------------------------------------------------------
    @property
    def kept_from(self) -> int:
        """Stream offset of the oldest sample still kept."""
        return self._kept.start

    @property
    def total(self) -> int:
        """Samples appended since the stream began."""
        return self._kept.total

    def append(self, samples: np.ndarray) -> None:
        """Keep ``samples`` (float32 mono 16 kHz) for decoding; they are not VAD-scored here."""
        self._kept.append(samples)

    def audio(self, start: int, end: int) -> np.ndarray:
        """The kept samples ``[start, end)`` of the stream (clipped to what is still kept)."""
        return self._kept.slice(start, end)

    def utterance_audio(self, start: int, end: int) -> np.ndarray:
        """What the ASR decodes for the utterance ``[start, end)``: with pre-roll and tail, capped."""
        piece = self.audio(start - PREROLL_SAMPLES, end + TAIL_SAMPLES)
        return piece[-(self.max_utterance_samples + PREROLL_SAMPLES + TAIL_SAMPLES):].astype(np.float32)

    def trim(self, open_start: int | None = None) -> None:
        """Forget audio no decode can need: keep the last seconds, or the open utterance from its pre-roll."""
        keep_from = self.total - KEEP_SAMPLES
        if open_start is not None:
            keep_from = min(keep_from, open_start - PREROLL_SAMPLES)
        keep_from = max(keep_from, self.total - self.max_utterance_samples - RATE)
        self._kept.forget_before(keep_from)

    # --- VAD -------------------------------------------------------------------------------------
    def score(self, samples: np.ndarray) -> list[VADEvent]:
        """Run the VAD and endpointer over the next ``samples`` of the stream (blocking, CPU).

        May ask the turn detector (one Smart Turn inference) when a pause reaches the ask point.
        """
        if self.policy.needs_audio and samples.size:
            self._keep_scored(samples)
        events = self.detector.feed(samples)
        for event in events:
            if event.reason == "patience_expired":
                TURN_DECISIONS_TOTAL.labels("patience_expired").inc()
        self._start_early()
        return events

    def scores_idle(self, samples: np.ndarray) -> bool:
        """:meth:`score` of ``samples`` would run no model (VAD or turn) and yield no event: the line
        is quiet between turns (``SpeechDetector.idle_for``). The caller may then score them on its
        event loop instead of handing them to the VAD thread."""
        return self.detector.idle_for(samples)

    # --- end of turn -----------------------------------------------------------------------------
    def hear_words(self, text: str, end_sample: int, language: str = "en", odds: EndingOdds | None = None) -> None:
        """The latest words of the open utterance, transcribed up to stream sample ``end_sample``
        (``odds``: the ASR's ending odds for them, ``Transcript.ending``)."""
        self._words = (text, end_sample, language, odds)

    def _keep_scored(self, samples: np.ndarray) -> None:
        self._scored.append(np.asarray(samples, dtype=np.float32))
        self._scored.forget_before(self._scored.total - TURN_WINDOW_SAMPLES - TURN_PRESPEECH_SAMPLES)

    def _turn_audio(self, speech_start: int, now: int) -> np.ndarray:
        return self._scored.slice(max(speech_start - TURN_PRESPEECH_SAMPLES, now - TURN_WINDOW_SAMPLES), now)

    def _start_early(self) -> None:
        """A pause has begun and its next question is not answered yet: start the model now, on the
        turn executor, on the pause as it will sound at the ask point (the first question, or the
        second one an unsure first answer asked for), so the answer is ready when it is asked."""
        pool = getattr(self.engines, "turn_pool", None)
        ep = self.detector.endpointer
        pause, start = ep.pause_start, ep.speech_start
        target = ep.next_ask_samples()
        if pool is None or not self.policy.needs_audio or pause is None or start is None or target is None:
            return
        if self._early is not None and self._early[0][:2] == (start, pause):
            return  # this pause's answer is on its way, or waits to be asked for
        now = ep.position
        if now - pause < EARLY_AFTER_SAMPLES:
            return
        heard = self._turn_audio(start, now)
        missing = target - (now - pause)
        if missing > 0:  # the rest of the pause, as it will sound: the room heard in it so far
            room = self._scored.slice(pause, now)
            fill = np.resize(room, missing) if room.size else np.zeros(missing, dtype=np.float32)
            heard = np.concatenate([heard, fill.astype(np.float32)])
        if self._early is not None:
            # An earlier pause's job: speech resumed, so drop it if it has not begun; the executor
            # is one thread for every call, and stale work queued there delays every answer.
            self._early[1].cancel()
            self._early = None
        detector: TurnDetector = self.policy.detector
        try:
            job = pool.submit(detector.predict, heard)
        except EngineBusy:
            return
        self._early = ((start, pause, target), job, now)
        self.early_started += 1

    def _early_verdict(self, speech_start: int, pause: int, pause_ms: int) -> Verdict | None:
        """The early run's answer for this pause; a *pending* verdict while it is still running.

        Never waits more than ``EARLY_WAIT_SECONDS``: this runs on the VAD thread every call shares,
        and a turn executor running behind (a loaded machine starves its niced thread) once held it
        for ``ENGINE_TIMEOUT_SECONDS``, so every call's VAD stalled and held thoughts were answered
        on the wall clock mid-sentence. A pending answer is asked for again a few windows later."""
        early = self._early
        if early is None:
            return None
        if early[0][:2] != (speech_start, pause):
            early[1].cancel()
            self._early = None
            return None
        try:
            verdict = early[1].result(timeout=EARLY_WAIT_SECONDS)
        except TimeoutError:
            return Verdict(complete=False, probability=0.0, inference_ms=0.0,
                           detector=getattr(self.policy.detector, "name", ""), pending=True,
                           ask_again_ms=pause_ms + PENDING_RETRY_MS)
        except Exception:  # noqa: BLE001 - the early start is an optimisation: ask now instead
            log.warning("early turn-detector job failed; asking now", exc_info=True)
            self._early = None
            return None
        self._early = None
        self.early_used += 1
        return replace(verdict, started_at=early[2])

    def _turn_end(self, speech_start: int, pause: int, now: int) -> Verdict:
        """The endpointer's question at ``ask_silence_ms`` into a pause (and, if the answer was
        unsure, once more at its ``ask_again_ms``): is the turn over?"""
        text, covered_to, language, odds = self._words
        if covered_to < max(speech_start, pause - WORDS_FRESH_SAMPLES):
            text, odds = "", None  # words from an earlier utterance, or too old to speak for this pause
        pause_ms = (now - pause) * 1000 // RATE
        early = self._early_verdict(speech_start, pause, pause_ms) if self.policy.needs_audio else None
        if early is not None and early.pending:
            return early
        audio = None
        if early is None and self.policy.needs_audio:
            audio = self._turn_audio(speech_start, now)
        verdict = self.policy.decide(audio, text=text, language=language, early=early, pause_ms=pause_ms,
                                     odds=odds)
        if early is None:
            verdict = replace(verdict, started_at=now)
        if verdict.detector != "silence":  # the fixed-pause rule decides nothing worth counting
            TURN_DECISIONS_TOTAL.labels("complete" if verdict.complete else "incomplete").inc()
        if verdict.inference_ms:
            TURN_DETECTOR_SECONDS.observe(verdict.inference_ms / 1000)
        return verdict

    @staticmethod
    def decision(event: VADEvent) -> TurnDecision | None:
        """How ``event`` (a ``speech_end``) was decided; None for other events."""
        if event.kind not in ("speech_end", "speech_discarded") or not event.reason:
            return None
        verdict = event.verdict
        decision = event.reason
        if decision == "complete" and verdict is not None and verdict.detector == "silence":
            decision = "silence"
        return TurnDecision(
            decision=decision,
            detector=verdict.detector if verdict is not None else "",
            probability=verdict.probability if verdict is not None and verdict.detector != "silence" else None,
            inference_ms=verdict.inference_ms if verdict is not None else 0.0,
            waited_ms=(event.detected_at - event.sample) * 1000 // RATE,
            cue=verdict.cue if verdict is not None else "",
            asks=event.asks,
        )

    def feed(self, samples: np.ndarray) -> list[Segment]:
        """Append, score and cut in one go (one thread): the utterances that ended in ``samples``."""
        self.append(samples)
        segments = self.segments(self.score(samples))
        self.trim(self.detector.endpointer.speech_start)
        return segments

    def finish(self) -> list[Segment]:
        """The stream paused or ended: whatever is being said is over."""
        return self.segments(self.detector.finish())

    def segments(self, events: list[VADEvent]) -> list[Segment]:
        """The utterances ``events`` close (``speech_end``; a discarded cough is none)."""
        decided = time.perf_counter()
        return [
            Segment(self.utterance_audio(e.start_sample, e.end_sample), e.start_sample, e.end_sample, decided,
                    self.decision(e))
            for e in events if e.kind == "speech_end" and e.end_sample is not None
        ]

    # --- finals ----------------------------------------------------------------------------------
    async def transcribe(self, audio: np.ndarray, *, language: str) -> Transcript:
        """Decode ``audio`` with the call's ASR on the pool's ASR executor (batched with other calls'
        decodes when it has to wait: ``media_pipeline.asr_batch``); failures raise (see ``failure``)."""
        return await self.engines.transcribe(audio, language=language)

    def failure(self, exc: BaseException, *, language: str, **log_extra: Any) -> NotHeard:
        """What a failed final decode tells the client. The turn is lost as voice, not the call:
        listening goes on for the next one, and the trainee can type this one (e.g. a zh-CN call
        whose cloud ASR died, with only the English tiny.en model behind it)."""
        if isinstance(exc, EngineBusy):
            log.warning("final ASR decode refused: %s", exc, extra=log_extra)
            return NotHeard(ErrorCode.RATE_LIMIT, "Speech recognition is busy; please repeat that.",
                            {"retry_after": BUSY_RETRY_MS})
        if isinstance(exc, ASRError):
            log.warning("final ASR decode failed: %s", redact(str(exc)), extra=log_extra)
        else:
            log.error("final ASR decode failed", exc_info=exc, extra=log_extra)
        return NotHeard(
            ErrorCode.ASR_FAILED, "Speech recognition failed for this turn; please say it again or type it.",
            {"reason": redact(str(exc)), "engine": getattr(self.engines.asr, "name", ""), "language": language},
        )


def heard(transcript: Transcript, *, language: str, start_ms: int, end_ms: int) -> Heard:
    """The transport-neutral final of one decoded utterance (no words, only marks: heard nothing)."""
    return Heard(text="" if transcript.is_empty else transcript.text.strip(), confidence=float(transcript.confidence),
                 language=transcript.language or language, start_ms=max(0, start_ms), end_ms=max(0, end_ms),
                 ending=transcript.ending)


__all__ = ["Heard", "Listening", "NotHeard", "PREROLL_SAMPLES", "Segment", "heard"]
