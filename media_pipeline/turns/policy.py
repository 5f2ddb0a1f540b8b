"""When a pause ends the turn: ask after a short silence, believe "complete", ask once more, wait out the rest.

The endpointer (``engines/vad/base.py``) calls :meth:`TurnPolicy.decide` once a pause inside an
utterance has lasted ``ask_silence_ms``, and again at ``Verdict.ask_again_ms`` if it supports
re-asking. Three tiers:

- **open clause** — the latest words end on a conjunction, filler or a function word a sentence
  cannot end on ("and", "um", "the", "with", "we're", "因为", "把": ``words.trailing_cue``) →
  incomplete without running the model, and no second question: the patience decides;
- **complete** — the model's probability ≥ ``threshold`` → the turn ends now;
- **unsure** — otherwise incomplete, but worth one more question at ``reask_silence_ms`` of pause
  (``Verdict.ask_again_ms``). The model hears the trailing silence, and a finished sentence it
  doubted after 200 ms usually reads as finished after 400 ms, while a speaker who stopped on
  "and"/"um" stays near 0 (bench/turn_taking.py: the trailing-conjunction cases stay ≤ 0.15 up
  to 800 ms of pause). So the second question has the lower bar ``reask_threshold``: "not
  confidently incomplete" ends the turn there. Below it, listening goes on; speech that resumes
  joins the same turn, and a pause that reaches ``patience_ms`` ends it anyway.

By the second question the speculative final's words have usually landed too, so a cue that was
not known at 200 ms still holds the turn. A cue from the ASR's odds alone (``words.trails_off``:
no word says it, Whisper's odds of "…" do) is weaker: it holds the turn until
``trails_off_wait_ms`` of pause, where the model is asked as at a second question.
A finished sentence costs ``ask_silence_ms`` plus one inference, a doubted one
``reask_silence_ms`` plus one more, an unfinished one up to the patience.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from media_pipeline.turns.base import TurnDetector, Verdict
from media_pipeline.turns.words import ASR_TRAILS_OFF, Odds, trailing_cue

DEFAULT_REASK_SILENCE_MS = 400
DEFAULT_REASK_THRESHOLD = 0.2


@dataclass(frozen=True)
class TurnPolicy:
    detector: TurnDetector
    ask_silence_ms: int = 200
    patience_ms: int = 2000
    threshold: float = 0.5
    reask_silence_ms: int = DEFAULT_REASK_SILENCE_MS  # 0: ask once only
    reask_threshold: float = DEFAULT_REASK_THRESHOLD
    trails_off_wait_ms: int = 1200  # a turn held on the ASR's odds alone: asked again this far into the pause

    def __post_init__(self) -> None:
        if self.patience_ms < self.ask_silence_ms:
            object.__setattr__(self, "patience_ms", self.ask_silence_ms)
        if not self.ask_silence_ms < self.reask_silence_ms < self.patience_ms:
            object.__setattr__(self, "reask_silence_ms", 0)  # a second question only between the two
        object.__setattr__(self, "reask_threshold", min(self.reask_threshold, self.threshold))

    @property
    def needs_audio(self) -> bool:
        return bool(getattr(self.detector, "needs_audio", True))

    def decide(
        self,
        audio: np.ndarray | None,
        *,
        text: str = "",
        language: str = "en",
        early: Verdict | None = None,
        pause_ms: int | None = None,
        odds: Odds | None = None,
    ) -> Verdict:
        """The verdict on a turn whose audio (pause included) is ``audio`` and latest words ``text``.

        ``early``: the detector's answer already computed for this pause (then ``audio`` is unused).
        ``pause_ms``: how long the pause has lasted when asked; None is the first question. At or
        past ``reask_silence_ms`` it is the second question, judged against ``reask_threshold``.
        ``odds``: the ASR's ending odds for ``text`` (``words.trails_off``).
        """
        cue = trailing_cue(text, language, odds) if text else ""
        if cue == ASR_TRAILS_OFF and pause_ms is not None and pause_ms >= self.trails_off_wait_ms:
            cue = ""  # the odds held it long enough: the model decides now, as at a second question
        if cue:
            again = None
            if cue == ASR_TRAILS_OFF and self.ask_silence_ms < self.trails_off_wait_ms < self.patience_ms:
                again = self.trails_off_wait_ms
            return Verdict(complete=False, probability=0.0, inference_ms=0.0, detector="words", cue=cue,
                           ask_again_ms=again)
        verdict = early
        if verdict is None:
            verdict = self.detector.predict(np.zeros(0, dtype=np.float32) if audio is None else audio,
                                            text=text, language=language)
        second = bool(self.reask_silence_ms) and pause_ms is not None and pause_ms >= self.reask_silence_ms
        complete = verdict.probability >= (self.reask_threshold if second else self.threshold)
        again = self.reask_silence_ms if not (complete or second) and self.reask_silence_ms else None
        return replace(verdict, complete=complete, ask_again_ms=again)
