"""When a pause ends the turn: ask after a short silence, believe "complete", wait out "incomplete".

The endpointer (``engines/vad/base.py``) calls :meth:`TurnPolicy.decide` once a pause inside an
utterance has lasted ``ask_silence_ms``:

- the latest words end on a conjunction, filler or unfinished clause (``words.trailing_cue``) →
  incomplete, without running the model (the words already say it);
- otherwise the detector's probability ≥ ``threshold`` → complete: the turn ends now;
- otherwise incomplete: listening goes on; if the trainee speaks again the pause was inside the
  turn (the next pause is asked again), and if the pause reaches ``patience_ms`` the turn ends
  anyway (``patience_expired``).

So a finished sentence costs ``ask_silence_ms`` plus one inference, and an unfinished one costs at
most the patience, instead of a fixed ``ENDPOINT_SILENCE_MS`` for both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from media_pipeline.turns.base import TurnDetector, Verdict
from media_pipeline.turns.words import trailing_cue


@dataclass(frozen=True)
class TurnPolicy:
    detector: TurnDetector
    ask_silence_ms: int = 200
    patience_ms: int = 2000
    threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.patience_ms < self.ask_silence_ms:
            object.__setattr__(self, "patience_ms", self.ask_silence_ms)

    @property
    def needs_audio(self) -> bool:
        return bool(getattr(self.detector, "needs_audio", True))

    def decide(
        self, audio: np.ndarray | None, *, text: str = "", language: str = "en", early: Verdict | None = None
    ) -> Verdict:
        """The verdict on a turn whose audio (pause included) is ``audio`` and latest words ``text``.

        ``early``: the detector's answer already computed for this pause (then ``audio`` is unused).
        """
        cue = trailing_cue(text, language) if text else ""
        if cue:
            return Verdict(complete=False, probability=0.0, inference_ms=0.0, detector="words", cue=cue)
        verdict = early
        if verdict is None:
            verdict = self.detector.predict(np.zeros(0, dtype=np.float32) if audio is None else audio,
                                            text=text, language=language)
        return replace(verdict, complete=verdict.probability >= self.threshold)
