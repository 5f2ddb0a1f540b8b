"""Call recording: both sides on the session's own timeline, written to disk as the call goes.

Each side is a sparse raw PCM file (16 kHz mono int16) written at the byte offset of its
session-relative time, so the recording lines up with utterance ``start_ms``/``end_ms`` without
any bookkeeping, and memory stays flat however long the call runs. ``save`` interleaves the two
sides into a stereo WAV (left: trainee, right: buyer) in blocks and stores it through Django
storage; the after-call job transcodes it to a compact browser format. The session is told
before the stored file is replaced, so the after-call job never deletes a recording mid-write.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import wave

import numpy as np
from django.core.files import File
from django.core.files.storage import default_storage

log = logging.getLogger(__name__)

RATE = 16000
SIDES = ("trainee", "buyer")
_BYTES_PER_MS = RATE * 2 // 1000
_BLOCK_SAMPLES = RATE * 10


def raw_recording_name(session_id: str) -> str:
    return f"sessions/{session_id}/recording-raw.wav"


def _announce_saving(session_id: str) -> None:
    """Tell the session a new recording is being written (see ``session_recording_saving``).

    Done here rather than by each caller so every transport that stores a recording (the media
    worker, the chunk fallback) is covered; the caller attaches the stored name afterwards.
    A session id that is not in the database (a bench, a unit test) is a no-op update.
    """
    from roleplay import services

    services.session_recording_saving(session_id=session_id)


def _announce_stored(session_id: str) -> None:
    """The complete file is in storage: a new recording version (re-processed if the session ended)."""
    from roleplay import services

    try:
        services.session_recording_stored(session_id=session_id)
    except Exception:  # noqa: BLE001 - the file is stored; the caller still attaches it
        log.exception("recording stored but not announced", extra={"session_id": session_id})


def _announce_failed(session_id: str) -> None:
    from roleplay import services

    try:
        services.session_recording_save_failed(session_id=session_id)
    except Exception:  # noqa: BLE001 - the storage error is the one worth raising
        pass


class CallRecorder:
    def __init__(self, session_id: str, *, max_seconds: int = 3 * 3600) -> None:
        self.session_id = session_id
        self.max_bytes = max_seconds * RATE * 2
        self._files = {side: tempfile.TemporaryFile(prefix=f"rec-{side}-") for side in SIDES}
        self._cursor = dict.fromkeys(SIDES, 0)
        self._lock = threading.Lock()
        self.truncated = False

    def add(self, side: str, samples: np.ndarray, *, at_ms: int | None = None) -> None:
        """Write 16 kHz mono audio for one side; ``at_ms`` places it, else it follows the last write."""
        if side not in self._files:
            raise ValueError(f"unknown side {side!r}")
        if samples.dtype != np.int16:
            samples = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
        data = samples.tobytes()
        with self._lock:
            offset = at_ms * _BYTES_PER_MS if at_ms is not None else self._cursor[side]
            offset -= offset % 2
            if offset + len(data) > self.max_bytes:
                self.truncated = True
                data = data[: max(0, self.max_bytes - offset)]
            if not data:
                return
            handle = self._files[side]
            handle.seek(offset)
            handle.write(data)
            self._cursor[side] = offset + len(data)

    @property
    def duration_ms(self) -> int:
        return max(self._cursor.values()) // _BYTES_PER_MS

    def save(self) -> str | None:
        """Store the stereo WAV and return its storage name (None when nothing was recorded)."""
        with self._lock:
            total = max(self._cursor.values()) // 2
            if total == 0:
                self.close()
                return None
            with tempfile.NamedTemporaryFile(suffix=".wav", delete=False) as out:
                path = out.name
            try:
                with wave.open(path, "wb") as wav:
                    wav.setnchannels(2)
                    wav.setsampwidth(2)
                    wav.setframerate(RATE)
                    for start in range(0, total, _BLOCK_SAMPLES):
                        count = min(_BLOCK_SAMPLES, total - start)
                        block = np.zeros((count, 2), dtype=np.int16)
                        for column, side in enumerate(SIDES):
                            handle = self._files[side]
                            handle.seek(start * 2)
                            raw = handle.read(count * 2)
                            block[: len(raw) // 2, column] = np.frombuffer(raw[: len(raw) - len(raw) % 2], np.int16)
                        wav.writeframes(block.tobytes())
                name = raw_recording_name(self.session_id)
                _announce_saving(self.session_id)
                try:
                    if default_storage.exists(name):
                        default_storage.delete(name)
                    with open(path, "rb") as handle:
                        stored = default_storage.save(name, File(handle))
                except BaseException:
                    _announce_failed(self.session_id)
                    raise
                _announce_stored(self.session_id)
            finally:
                os.unlink(path)
                self.close()
            return stored

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
