"""End-of-turn detection: one interface, one strategy per file (like ``engines/``).

A :class:`TurnDetector` looks at the turn's audio so far (float32 mono 16 kHz, the trailing pause
included) and, when it has them, the latest words, and says whether the speaker has finished.
The endpointer asks it once a pause has lasted a short while (``policy.TurnPolicy``); what the
detector says decides whether the turn ends now or listening goes on up to the patience.

:class:`TurnDecision` is what became of one utterance, kept for metrics and the review page.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Verdict:
    """One answer: ``complete`` and the probability behind it (1.0/0.0 for a rule), and its cost.

    ``cue`` names the trailing words that kept the turn open (``words.trailing_cue``), if any.
    ``started_at``: the stream sample at which the inference began (listening sets it; an early
    start, at the beginning of the pause, is how the answer is ready by the ask point).
    ``ask_again_ms``: an "incomplete" that is worth asking once more when the pause has lasted this
    long (``policy.TurnPolicy`` sets it on a first answer that no words cue confirmed); None: wait
    out the patience. The endpointer honours it if it re-asks (``getattr``, so older callers that
    ask once simply wait out the patience as before).
    ``pending``: no answer yet (the model's early run has not finished): not a question answered,
    so the endpointer asks again at ``ask_again_ms`` rather than block the VAD thread waiting.
    """

    complete: bool
    probability: float
    inference_ms: float
    detector: str
    cue: str = ""
    started_at: int = -1
    ask_again_ms: int | None = None
    pending: bool = False


class TurnDetector(Protocol):
    """A strategy. ``needs_audio`` False lets the caller skip cutting audio out (the silence rule)."""

    name: str
    needs_audio: bool

    def predict(self, audio: np.ndarray, *, text: str = "", language: str = "en") -> Verdict:
        """Is the turn in ``audio`` (16 kHz float32, ending with the pause) over? Blocking, CPU."""
        ...


@dataclass(frozen=True)
class TurnDecision:
    """How one utterance's end was decided, for ``/metrics``, the utterance's latency facts and review.

    - ``decision``: ``complete`` (the detector said so at the ask point), ``patience_expired``
      (it said incomplete and the pause outlasted the patience), ``stream_end`` (the stream
      stopped or the client said ``asr_stop``), ``too_short`` (a cough: no question asked).
    - ``probability`` / ``inference_ms``: of the last question asked in this utterance's final
      pause (None / 0 when none was asked).
    - ``waited_ms``: from the start of the final pause to the decision (stream time).
    - ``cue``: the trailing words that made the detector wait, if that is why.
    - ``asks``: how many pauses inside the utterance were judged incomplete before the last one.
    """

    decision: str
    detector: str
    probability: float | None
    inference_ms: float
    waited_ms: int
    cue: str = ""
    asks: int = 0

    def as_dict(self) -> dict[str, Any]:
        facts = asdict(self)
        facts["inference_ms"] = round(self.inference_ms, 1)
        if self.probability is not None:
            facts["probability"] = round(self.probability, 3)
        return facts
