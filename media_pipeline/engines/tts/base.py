"""TTS interface: text in, a stream of int16 mono chunks out at the engine's own sample rate.

Chunks are yielded as soon as they exist so the pipeline can start pacing audio out before
the whole reply is synthesised; the caller resamples to the call's codec rate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np


class TTSError(RuntimeError):
    """Synthesis failed (maps to the protocol's ERR_TTS_FAILED)."""


class TTSEngine(ABC):
    name: str = "tts"

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Rate of the int16 chunks that :meth:`synthesize` yields."""

    @abstractmethod
    def synthesize(
        self,
        text: str,
        *,
        voice: str = "",
        language: str = "en",
        speed: float = 1.0,
        pitch: float = 1.0,
    ) -> Iterator[np.ndarray]:
        """Yield int16 mono chunks of ``text`` spoken. ``voice`` "" means the language's default.

        ``speed`` and ``pitch`` are factors (1.0 = the voice's normal). Blocking: callers run
        it in the engine executor.
        """


def check_prosody(speed: float, pitch: float) -> None:
    for name, value in (("speed", speed), ("pitch", pitch)):
        if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
