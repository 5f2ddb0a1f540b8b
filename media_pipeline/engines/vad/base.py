"""VAD interface and the endpointer that turns per-window speech probabilities into turn events.

A VAD model is shared; each audio stream gets its own :class:`VADStream` (recurrent state).
The :class:`Endpointer` is model-agnostic: it only sees one probability per window, so a new
VAD provider is one new file that implements :class:`VADModel`. When the end of a turn is more
than a fixed pause, the endpointer asks a ``turn_end`` hook (``media_pipeline.turns``) once a
pause has lasted ``ask_silence_ms``: "complete" ends the segment there, "incomplete" keeps it open
until speech resumes (the pause was inside the turn) or the pause reaches ``patience_ms``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from roleplay.audio_format import SAMPLE_RATE

EventKind = Literal["speech_start", "silence_began", "speech_resumed", "speech_end", "speech_discarded"]
# Questions per pause at most: the first, the one an unsure answer asks for, and the one a turn held
# on the ASR's odds alone asks for when its wait is over (turns.policy).
MAX_QUESTIONS = 3
# Why a segment closed: a fixed pause, the hook said complete, the hook said incomplete and the
# pause outlasted the patience, the stream stopped (``finish``), too short to ask about.
EndReason = Literal["silence", "complete", "patience_expired", "stream_end", "too_short", ""]


class TurnCheck(Protocol):
    """What a ``turn_end`` hook answers (``media_pipeline.turns.base.Verdict`` is one)."""

    complete: bool


# (speech_start, pause_start, now) in stream samples -> the verdict on the turn so far.
TurnEndHook = Callable[[int, int, int], TurnCheck]


class VADStream(Protocol):
    """Per-stream state: feed audio of any length, get one probability per completed window."""

    sample_rate: int
    window_samples: int

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Buffer ``samples`` (float32 mono at ``sample_rate``) and score every completed window."""
        ...

    def reset(self) -> None:
        """Forget the recurrent state and any buffered partial window."""
        ...


class VADModel(Protocol):
    sample_rate: int
    window_samples: int

    def create_stream(self) -> VADStream: ...


@dataclass(frozen=True)
class VADEvent:
    """One endpointing event. Sample offsets count from the start of the stream.

    - ``speech_start``: ``start_sample`` is where the voiced run began (``sample`` == it).
    - ``silence_began``: ``sample`` is where the pause began; start the final ASR decode of
      ``[start_sample, sample)`` now, and drop it if ``speech_resumed`` follows.
    - ``speech_resumed``: the pause was only a breath; the segment goes on.
    - ``speech_end``: the segment ``[start_sample, end_sample)`` is over (after the silence
      hang-over); ``sample`` == ``end_sample``.
    - ``speech_discarded``: like ``speech_end`` but shorter than ``min_speech_ms``: a cough or
      a click, not a turn.

    ``detected_at`` is the stream position when the event was decided: ``detected_at - sample``
    is the endpointing delay. On ``speech_end``/``speech_discarded``, ``reason`` says why it
    closed, ``verdict`` is the hook's last answer about its final pause (None if none was asked)
    and ``asks`` counts the earlier pauses inside it that the hook judged incomplete.
    """

    kind: EventKind
    sample: int
    start_sample: int
    end_sample: int | None
    detected_at: int
    reason: EndReason = ""
    verdict: Any = None
    asks: int = 0

    def seconds(self, sample_rate: int = SAMPLE_RATE) -> float:
        return self.sample / sample_rate


@dataclass
class EndpointerConfig:
    """Thresholds in probability and milliseconds; the defaults suit a phone-like sales call."""

    threshold: float = 0.5
    neg_threshold: float | None = None  # default: threshold - 0.15, as Silero's own segmenter
    start_ms: int = 96
    end_silence_ms: int = 600
    min_speech_ms: int = 250
    # With a ``turn_end`` hook: ask after this much pause, end anyway after ``patience_ms``.
    ask_silence_ms: int = 200
    patience_ms: int = 2000

    def negative(self) -> float:
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(0.01, self.threshold - 0.15)


@dataclass
class Endpointer:
    """Hysteresis state machine over window probabilities.

    Speech starts after ``start_ms`` of consecutive windows at or above ``threshold``. Inside
    speech a window below the negative threshold begins a pause (``silence_began``); a window
    at or above ``threshold`` cancels it (``speech_resumed``); windows in between neither start
    nor cancel a pause. After ``end_silence_ms`` of pause the segment ends; with a ``turn_end``
    hook, the hook decides at ``ask_silence_ms`` and ``patience_ms`` is the longest pause instead.
    The hook runs synchronously on the thread that calls :meth:`process` (an engine executor).
    """

    config: EndpointerConfig = field(default_factory=EndpointerConfig)
    sample_rate: int = SAMPLE_RATE
    window_samples: int = 512
    turn_end: TurnEndHook | None = None

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.window_index = 0
        self.in_speech = False
        self._run_start: int | None = None
        self._speech_start = 0
        self._silence_start: int | None = None
        self._verdict: TurnCheck | None = None  # the hook's answer about the current pause
        self._answers = 0  # answers (not "pending") the hook gave about the current pause
        self._asks = 0  # pauses of this segment the hook judged incomplete

    @property
    def speech_start(self) -> int | None:
        """Where the open segment began (stream samples), or None between segments."""
        return self._speech_start if self.in_speech else None

    @property
    def pause_start(self) -> int | None:
        """Where the open segment's current pause began, or None while speaking / between segments."""
        return self._silence_start if self.in_speech else None

    @property
    def asked(self) -> bool:
        """The ``turn_end`` hook has already judged the current pause."""
        return self._verdict is not None

    @property
    def position(self) -> int:
        """Stream samples scored so far (whole windows)."""
        return self.window_index * self.window_samples

    @property
    def quiet_until(self) -> int:
        """Between segments, how far the stream has been scored as no speech: where a run of voice
        not yet long enough to count as speech began, else :attr:`position` (stream samples). The
        voice that ends a pause is heard ``start_ms`` before it is called speech; the pause is
        only as long as this says. (Inside a segment, :attr:`position`.)"""
        if not self.in_speech and self._run_start is not None:
            return self._run_start
        return self.position

    def ask_samples(self) -> int:
        """How far into a pause the hook is asked (whole windows)."""
        return self._windows(self.config.ask_silence_ms) * self.window_samples

    def next_ask_samples(self) -> int | None:
        """How far into the current pause the hook will be asked next: the first question, the
        second one an unsure answer asked for (``ask_again_ms``), or the same question again when
        the hook had no answer yet (``pending``); None when no question is left."""
        verdict = self._verdict
        if verdict is None:
            return self.ask_samples()
        again = getattr(verdict, "ask_again_ms", None)
        pending = getattr(verdict, "pending", False)
        if again is None or verdict.complete or (self._answers >= MAX_QUESTIONS and not pending):
            return None
        return self._windows(again) * self.window_samples

    def _windows(self, ms: int) -> int:
        return max(1, int(np.ceil(ms * self.sample_rate / 1000 / self.window_samples)))

    def process(self, probs: np.ndarray | list[float]) -> list[VADEvent]:
        """Advance over one probability per window and return the events decided on the way."""
        cfg = self.config
        neg = cfg.negative()
        events: list[VADEvent] = []
        for p in np.asarray(probs, dtype=np.float32).reshape(-1):
            pos = self.window_index * self.window_samples
            self.window_index += 1
            now = self.window_index * self.window_samples
            if not self.in_speech:
                if p >= cfg.threshold:
                    if self._run_start is None:
                        self._run_start = pos
                    if now - self._run_start >= self._windows(cfg.start_ms) * self.window_samples:
                        self.in_speech = True
                        self._speech_start = self._run_start
                        self._silence_start = None
                        events.append(VADEvent("speech_start", self._run_start, self._run_start, None, now))
                else:
                    self._run_start = None
                continue
            if p >= cfg.threshold and self._silence_start is not None:
                self._silence_start = None
                if self._verdict is not None:
                    self._asks += 1
                self._verdict = None
                self._answers = 0
                events.append(VADEvent("speech_resumed", pos, self._speech_start, None, now))
            elif p < neg and self._silence_start is None:
                self._silence_start = pos
                events.append(VADEvent("silence_began", pos, self._speech_start, None, now))
            if self._silence_start is not None:
                closed = self._after_pause(self._silence_start, now)
                if closed is not None:
                    events.append(closed)
        return events

    def _after_pause(self, pause: int, now: int) -> VADEvent | None:
        """The segment's end, if the pause that began at ``pause`` ends it at ``now``."""
        cfg = self.config
        silent = now - pause
        if self.turn_end is None:
            if silent >= self._windows(cfg.end_silence_ms) * self.window_samples:
                return self._close(pause, now, "silence")
            return None
        if self._verdict is None:
            if silent < self.ask_samples():
                return None
            if pause - self._speech_start < cfg.min_speech_ms * self.sample_rate / 1000:
                return self._close(pause, now, "too_short")  # a cough: nothing to ask
            return self._ask(pause, now)
        again = self.next_ask_samples()
        if again is not None and silent >= again:
            # The first answer was unsure and asked to be asked again once the pause is longer, or
            # there was no answer yet.
            closed = self._ask(pause, now)
            if closed is not None:
                return closed
        if silent >= self._windows(max(cfg.patience_ms, cfg.ask_silence_ms)) * self.window_samples:
            return self._close(pause, now, "patience_expired")
        return None

    def _ask(self, pause: int, now: int) -> VADEvent | None:
        self._verdict = self.turn_end(self._speech_start, pause, now)
        if not getattr(self._verdict, "pending", False):
            self._answers += 1
        return self._close(pause, now, "complete") if self._verdict.complete else None

    def finish(self) -> list[VADEvent]:
        """End of stream (or a manual stop): close an open segment at the current position."""
        if not self.in_speech:
            self._run_start = None
            return []
        now = self.window_index * self.window_samples
        end = self._silence_start if self._silence_start is not None else now
        return [self._close(end, now, "stream_end")]

    def _close(self, end: int, now: int, reason: EndReason) -> VADEvent:
        long_enough = end - self._speech_start >= self.config.min_speech_ms * self.sample_rate / 1000
        kind: EventKind = "speech_end" if long_enough else "speech_discarded"
        verdict = self._verdict if self._silence_start is not None else None
        event = VADEvent(kind, end, self._speech_start, end, now, reason, verdict, self._asks)
        self.in_speech = False
        self._run_start = None
        self._silence_start = None
        self._verdict = None
        self._answers = 0
        self._asks = 0
        return event


class SpeechDetector:
    """A VAD stream and an endpointer together: audio in, events out. One per call leg."""

    def __init__(
        self, model: VADModel, config: EndpointerConfig | None = None, *, turn_end: TurnEndHook | None = None
    ) -> None:
        self.stream = model.create_stream()
        self.endpointer = Endpointer(
            config or EndpointerConfig(), model.sample_rate, model.window_samples, turn_end
        )
        self.last_probs = np.zeros(0, dtype=np.float32)

    @property
    def in_speech(self) -> bool:
        return self.endpointer.in_speech

    def feed(self, samples: np.ndarray) -> list[VADEvent]:
        self._allow_deferring()
        self.last_probs = self.stream.feed(samples)
        return self.endpointer.process(self.last_probs)

    def idle_for(self, samples: np.ndarray) -> bool:
        """Feeding ``samples`` would run no model and decide nothing: no segment is open and the
        stream defers them as quiet (``SileroVADStream.defers``; a VAD that cannot never is).
        Then :meth:`feed` is a few microseconds and may run on an event loop."""
        defers = getattr(self.stream, "defers", None)
        return defers is not None and self._allow_deferring() and bool(defers(samples))

    def _allow_deferring(self) -> bool:
        """A stream may score quiet windows 0 ahead of its model only between segments: inside one,
        every window's score counts (a pause's length, the turn questions)."""
        allowed = not self.endpointer.in_speech
        if hasattr(self.stream, "defer_ok"):
            self.stream.defer_ok = allowed
        return allowed

    def _ask(self, pause: int, now: int) -> VADEvent | None:
        self._verdict = self.turn_end(self._speech_start, pause, now)
        if not getattr(self._verdict, "pending", False):
            self._answers += 1
        return self._close(pause, now, "complete") if self._verdict.complete else None

    def finish(self) -> list[VADEvent]:
        return self.endpointer.finish()

    def reset(self) -> None:
        self.stream.reset()
        self.endpointer.reset()
