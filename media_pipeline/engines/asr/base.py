"""ASR interface: one finished utterance (float32 mono 16 kHz) in, one :class:`Transcript` out.

``transcribe`` is synchronous and CPU-bound; callers run it in the engine executor. Streaming
(interim results) is built on top by the pipeline, by re-decoding the growing utterance.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

# The rate every engine is given (re-exported: the engines import it with the interface).
from roleplay.audio_format import SAMPLE_RATE as SAMPLE_RATE

MIN_AUDIO_S = 0.1  # shorter than this cannot hold a word; decoding it only invites hallucinations


class ASRError(RuntimeError):
    """Recognition failed (maps to the protocol's ERR_ASR_FAILED)."""


class UnsupportedLanguage(ValueError):
    """The engine's model cannot transcribe the requested language."""


class EndingOdds(NamedTuple):
    """How the ASR would go on right after the last word it heard, as probabilities of its next token.

    ``more``: a mark that says the speech trails off or goes on ("…", ",", "-"); ``stop``: a full
    stop, question or exclamation mark, or the end of the text. Whisper learned both from human transcripts, where a
    speaker who breaks off mid-clause is written "so we could…": on audio that stops mid-clause
    the odds of "more" rise well above those after a finished sentence, even when the argmax is
    still a full stop. Read by ``turns.words.trailing_cue``; engines that cannot tell leave it None.
    """

    more: float
    stop: float


class Word(NamedTuple):
    word: str
    start_s: float
    end_s: float
    probability: float


@dataclass
class Transcript:
    text: str
    confidence: float
    language: str
    duration_s: float
    words: list[Word] = field(default_factory=list)
    ending: EndingOdds | None = None  # the odds of the speech going on after it (None: not known)

    @property
    def is_empty(self) -> bool:
        """No words: nothing, or only marks. Whisper writes "." or "..." for a burst of noise (a
        corrupted packet run, a knock); that is no trainee turn and must not get a reply."""
        return not any(ch.isalnum() for ch in self.text)


def whisper_language(language: str) -> str:
    """Protocol tag ("en-US", "zh-CN", "cmn") -> Whisper code ("en", "zh")."""
    lang = (language or "en").lower().replace("_", "-").split("-")[0]
    return {"cmn": "zh", "yue": "zh"}.get(lang, lang)


def check_audio(audio: np.ndarray) -> np.ndarray:
    """Validate and normalise ASR input to a contiguous 1-D float32 array.

    int16 is rescaled; an ``(n, 1)`` or ``(1, n)`` array is flattened; anything else multi-
    channel, or any NaN/inf, is a caller bug and raises ``ValueError`` with the reason.
    """
    audio = np.asarray(audio)
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise ValueError(f"ASR input must be mono 1-D audio, got shape {audio.shape}")
    if audio.dtype == np.int16:
        audio = audio.astype(np.float32) / 32768.0
    elif not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"ASR input must be float32 or int16 samples, got {audio.dtype}")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if audio.size and not np.isfinite(audio).all():
        raise ValueError("ASR input contains NaN or infinite samples")
    return audio


class ASREngine(ABC):
    name: str = "asr"

    @abstractmethod
    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str,
        word_timestamps: bool = False,
        beam_size: int = 1,
    ) -> Transcript:
        """Transcribe one utterance; empty or too-short audio gives an empty transcript."""

    def supports_language(self, language: str) -> bool:
        return True

    def warm_up(self) -> None:
        """Load models now rather than on the first call (the first turn should not pay it)."""
        return None  # engines with nothing to load (remote APIs) keep this
