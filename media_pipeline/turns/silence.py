"""Today's rule, as a strategy: a pause of a fixed length ends the turn.

Asked at ``ENDPOINT_SILENCE_MS`` of silence it always says "complete", so the endpointer behaves
exactly as before the turn detector existed: the baseline of ``bench/turn_taking.py`` and what a
process without the Smart Turn model (or with ``TURN_DETECTOR=silence``) does.
"""

from __future__ import annotations

import numpy as np

from media_pipeline.turns.base import Verdict


class SilenceDetector:
    name = "silence"
    needs_audio = False

    def predict(self, audio: np.ndarray, *, text: str = "", language: str = "en") -> Verdict:
        return Verdict(complete=True, probability=1.0, inference_ms=0.0, detector=self.name)
