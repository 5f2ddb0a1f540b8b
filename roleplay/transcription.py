"""The after-call job's port to the speech engines: read a stored call recording and transcribe it again.

The after-call job (``roleplay.after_call``) belongs to the domain, the speech engines to the
media pipeline, and the domain imports nothing from the media pipeline. So the job asks for a
:class:`Retranscriber` here, and the media pipeline registers its implementation at start-up
(``MediaPipelineConfig.ready``), which runs in every process that runs the job: the Celery worker
and the server of the embedded default.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import IO, Protocol

import numpy as np


class RecordingUnreadable(ValueError):
    """The stored recording could not be decoded (not transient: retrying will not help)."""


class NoRetranscriber(RuntimeError):
    """Nothing registered to re-transcribe recordings: the media pipeline's app did not start here."""


@dataclass(frozen=True)
class RetranscribeOptions:
    model_path: str = ""  # empty: the bundled default model
    language: str = "en"
    beam_size: int = 1
    cpu_threads: int = 2


class Retranscriber(Protocol):
    def load_stereo(self, source: str | IO[bytes]) -> np.ndarray:
        """A stored recording (raw WAV or archived WebM/Opus) as int16 ``(n, 2)`` at 16 kHz.

        Column 0 is the trainee, column 1 the buyer. Raises :class:`RecordingUnreadable`.
        """
        ...

    def retranscribe(self, stereo: np.ndarray, options: RetranscribeOptions) -> dict[str, object]:
        """The whole call transcribed offline with word timestamps, one speaker per channel.

        Raises :class:`RecordingUnreadable`.
        """
        ...


_registered: Retranscriber | None = None
_lock = threading.Lock()


def register_retranscriber(retranscriber: Retranscriber | None) -> None:
    """Make ``retranscriber`` the process's implementation (None: forget it, for tests)."""
    global _registered
    with _lock:
        _registered = retranscriber


def get_retranscriber() -> Retranscriber:
    """The registered implementation; :class:`NoRetranscriber` says what is missing instead of failing later."""
    with _lock:
        retranscriber = _registered
    if retranscriber is None:
        raise NoRetranscriber(
            "no re-transcription engine is registered in this process: add 'media_pipeline' to "
            "INSTALLED_APPS (its AppConfig.ready registers one) or call "
            "roleplay.transcription.register_retranscriber()"
        )
    return retranscriber
