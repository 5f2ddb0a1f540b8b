"""A call's recording while it is made: stereo segments in storage, joined into one WAV at the end.

Why segments: the media worker used to keep the recording in a temporary file until the call
ended, so a killed worker (or server) lost all of it. Now the recorder
(``media_pipeline.recording.CallRecorder``) stores every ``RECORDING_SEGMENT_SECONDS`` of both
sides under ``sessions/<id>/segments/`` while the call goes; the end of the call joins them into
the usual raw WAV (``sessions/<id>/recording-raw.wav``) and deletes them. When the process dies
instead, the after-call job (``roleplay.after_call``) joins whatever segments exist, so at most
the segment being filled is lost.

This lives on the roleplay side (it imports nothing from ``media_pipeline``) because the after-call
job needs it as much as the worker does.

Format: a segment is raw little-endian int16 stereo at 16 kHz (left: trainee, right: buyer) named
``<start_sample:012d>-<writer>-<part>.pcm``. ``start_sample`` places it on the session timeline;
``writer`` names the recorder that made it, so two recorders of one session (a killed worker and
the one the call moved to, a resumed call) never overwrite each other; ``part`` numbers a late
write into a stretch already stored. Overlapping audio is mixed (added and clipped): a recorder
writes silence where it heard nothing, so mixing changes nothing outside what was heard. A stored
segment is never rewritten, which is what makes a join safe against a writer that is still going.

A live writer holds a lease in the cache (refreshed with every segment); the after-call job waits
for it to go (the writer joins itself) before it joins leftovers of a writer that died.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from django.core.cache import cache
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from roleplay.audio_format import SAMPLE_RATE as RATE

log = logging.getLogger(__name__)

CHANNELS = 2
FRAME_BYTES = 2 * CHANNELS
_BLOCK_FRAMES = RATE * 10  # the join works in 10 s blocks: memory stays flat whatever the call's length
_SEGMENT_RE = re.compile(r"^(\d{12})-([0-9a-z]{1,32})-(\d{1,6})\.pcm$")
# A join waits this long for another join of the same session (a worker and the after-call job).
JOIN_LOCK_SECONDS = 120.0


def raw_recording_name(session_id: str) -> str:
    return f"sessions/{session_id}/recording-raw.wav"


def segments_prefix(session_id: str) -> str:
    return f"sessions/{session_id}/segments/"


def segment_name(session_id: str, *, start_sample: int, writer: str, part: int) -> str:
    return f"{segments_prefix(session_id)}{start_sample:012d}-{writer}-{part}.pcm"


def _lease_key(session_id: str) -> str:
    return f"lingecho:recording-writer:{session_id}"


def _join_key(session_id: str) -> str:
    return f"lingecho:recording-join:{session_id}"


@dataclass(frozen=True)
class StoredSegment:
    name: str
    start_sample: int
    writer: str
    part: int


@dataclass(frozen=True)
class JoinedRecording:
    name: str
    frames: int
    segments: int

    @property
    def duration_ms(self) -> int:
        return self.frames * 1000 // RATE


# --------------------------------------------------------------------------- writing


def store_segment(session_id: str, *, start_sample: int, writer: str, part: int, frames: np.ndarray) -> str:
    """Store one stretch of stereo audio (``(n, 2)`` int16) under its unique name."""
    if frames.ndim != 2 or frames.shape[1] != CHANNELS:
        raise ValueError("a segment is (n, 2) int16 frames")
    data = np.ascontiguousarray(frames, dtype="<i2").tobytes()
    return default_storage.save(segment_name(session_id, start_sample=start_sample, writer=writer, part=part),
                                ContentFile(data))


def hold_lease(session_id: str, *, writer: str, seconds: float) -> None:
    """A writer is recording this session: the after-call job leaves its segments to it for ``seconds``."""
    cache.set(_lease_key(session_id), writer, timeout=max(1, int(seconds)))


def release_lease(session_id: str, *, writer: str) -> None:
    if cache.get(_lease_key(session_id)) == writer:
        cache.delete(_lease_key(session_id))


def writer_active(session_id: str) -> bool:
    return cache.get(_lease_key(session_id)) is not None


# --------------------------------------------------------------------------- reading


def list_segments(session_id: str) -> list[StoredSegment]:
    """The session's stored segments in timeline order (local storage and S3 alike)."""
    try:
        _, files = default_storage.listdir(segments_prefix(session_id))
    except FileNotFoundError:  # local storage: no folder until the first segment
        return []
    found = []
    for filename in files:
        match = _SEGMENT_RE.match(os.path.basename(filename))
        if match:
            found.append(StoredSegment(segments_prefix(session_id) + os.path.basename(filename),
                                       int(match[1]), match[2], int(match[3])))
    return sorted(found, key=lambda s: (s.start_sample, s.writer, s.part))


def has_segments(session_id: str) -> bool:
    return bool(list_segments(session_id))


def _read_segment(segment: StoredSegment) -> np.ndarray | None:
    try:
        with default_storage.open(segment.name, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:  # joined and deleted by another join meanwhile (that join has its audio)
        return None
    usable = len(data) - len(data) % FRAME_BYTES
    return np.frombuffer(data[:usable], dtype="<i2").reshape(-1, CHANNELS)


class _Base:
    """The raw WAV already stored (an earlier part of a resumed call), read block by block."""

    def __init__(self, session_id: str) -> None:
        self.frames = 0
        self._handle = None
        self._wav = None
        name = raw_recording_name(session_id)
        if not default_storage.exists(name):
            return
        self._handle = default_storage.open(name, "rb")
        try:
            self._wav = wave.open(self._handle, "rb")
            if (self._wav.getnchannels(), self._wav.getframerate(), self._wav.getsampwidth()) == (CHANNELS, RATE, 2):
                self.frames = self._wav.getnframes()
        except (wave.Error, EOFError):
            log.warning("stored recording unreadable; joining the segments without it",
                        extra={"session_id": session_id})

    def read(self, count: int) -> np.ndarray:
        if self._wav is None or count <= 0:
            return np.zeros((0, CHANNELS), np.int16)
        raw = self._wav.readframes(count)
        return np.frombuffer(raw[: len(raw) - len(raw) % FRAME_BYTES], dtype="<i2").reshape(-1, CHANNELS)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


# --------------------------------------------------------------------------- joining


@contextmanager
def _join_lock(session_id: str) -> Iterator[None]:
    """One join per session at a time: two joins reading and deleting the same segments could drop some."""
    key, token = _join_key(session_id), f"{os.getpid()}-{time.monotonic_ns()}"
    deadline = time.monotonic() + JOIN_LOCK_SECONDS
    while not cache.add(key, token, timeout=int(JOIN_LOCK_SECONDS)):
        if time.monotonic() > deadline:
            log.warning("recording join lock not released; joining anyway", extra={"session_id": session_id})
            break
        time.sleep(0.05)
    try:
        yield
    finally:
        if cache.get(key) == token:
            cache.delete(key)


def join_segments(session_id: str, *, include_stored: bool = True, announce: bool = True,
                  writer: str | None = None) -> JoinedRecording | None:
    """Mix the stored segments (and, with ``include_stored``, the raw WAV already there) into the raw WAV.

    Returns None when there is nothing to join. The segments are deleted only once the WAV is
    stored, so a crash in between joins them again next time (the WAV is rebuilt, not appended to).
    ``announce`` tells the session a new recording version exists (re-processing an ended one);
    the after-call job, which joins inside its own run, passes False. A ``writer`` joining its own
    segments gives up its lease first: the processing it announces must not wait for it.
    """
    from roleplay import services  # the services import the models: keep this module light to import

    with _join_lock(session_id):
        segments = list_segments(session_id)
        if not segments:
            return None
        services.session_recording_saving(session_id=session_id)
        try:
            joined = _write_joined(session_id, segments, include_stored=include_stored)
        except BaseException:
            services.session_recording_save_failed(session_id=session_id)
            raise
        for segment in segments:
            try:
                default_storage.delete(segment.name)
            except OSError:  # joined already; a leftover is mixed in again (same audio) by a later join
                log.warning("segment not deleted", extra={"session_id": session_id})
        if writer is not None:
            release_lease(session_id, writer=writer)
        if announce:
            try:
                services.session_recording_stored(session_id=session_id)
            except Exception:  # noqa: BLE001 - the file is stored; the caller still attaches it
                log.exception("recording stored but not announced", extra={"session_id": session_id})
        else:
            services.session_recording_save_failed(session_id=session_id)  # lifts the "saving" mark
        return joined


def _write_joined(session_id: str, segments: list[StoredSegment], *, include_stored: bool) -> JoinedRecording:
    base = _Base(session_id) if include_stored else None
    with tempfile.NamedTemporaryFile(suffix=".wav", delete=False) as out:
        path = out.name
    try:
        with wave.open(path, "wb") as wav:
            wav.setnchannels(CHANNELS)
            wav.setsampwidth(2)
            wav.setframerate(RATE)
            frames = _mix_into(wav, segments, base)
        name = raw_recording_name(session_id)
        if default_storage.exists(name):
            default_storage.delete(name)
        with open(path, "rb") as handle:
            stored = default_storage.save(name, File(handle))
        return JoinedRecording(name=stored, frames=frames, segments=len(segments))
    finally:
        if base is not None:
            base.close()
        os.unlink(path)


def _mix_into(wav: wave.Wave_write, segments: list[StoredSegment], base: _Base | None) -> int:
    """Write base + segments block by block; a segment is read when the block it starts in comes up."""
    pending = list(segments)  # sorted by start
    loaded: list[tuple[int, np.ndarray]] = []
    total = base.frames if base is not None else 0
    start = 0
    while True:
        end = start + _BLOCK_FRAMES
        while pending and pending[0].start_sample < end:
            segment = pending.pop(0)
            data = _read_segment(segment)
            if data is not None and len(data):
                loaded.append((segment.start_sample, data))
                total = max(total, segment.start_sample + len(data))
        if start >= total and not pending:
            return start
        # Up to the end of the audio, or (a gap: the next segment starts past this block) a block of silence.
        count = min(_BLOCK_FRAMES, total - start) if start < total else _BLOCK_FRAMES
        block = np.zeros((count, CHANNELS), np.int32)
        if base is not None and start < base.frames:
            piece = base.read(min(count, base.frames - start))
            block[: len(piece)] += piece
        for first, data in loaded:
            lo, hi = max(start, first), min(start + count, first + len(data))
            if lo < hi:
                block[lo - start: hi - start] += data[lo - first: hi - first]
        loaded = [(first, data) for first, data in loaded if first + len(data) > start + count]
        wav.writeframes(np.clip(block, -32768, 32767).astype("<i2").tobytes())
        start += count


def recover_segments(session_id: str, *, wait_seconds: float) -> JoinedRecording | None:
    """After-call: join segments a dead writer left behind (a live writer joins its own).

    Waits up to ``wait_seconds`` for a live writer's lease to go (it is closing the call and joins
    its segments itself); what is left after that is joined here without a version bump, and the
    caller (already processing this session) attaches it.
    """
    if not has_segments(session_id):
        return None
    deadline = time.monotonic() + wait_seconds
    while writer_active(session_id) and time.monotonic() < deadline:
        time.sleep(0.25)
    return join_segments(session_id, announce=False)


def recover_recording(*, session_id: str) -> JoinedRecording | None:
    """For the after-call job: join and attach the segments of a call whose worker died before it could.

    A live writer gets a little over its lease (two segments and a margin) to finish its own join.
    """
    from django.conf import settings

    from roleplay import services

    joined = recover_segments(session_id, wait_seconds=2 * settings.RECORDING_SEGMENT_SECONDS + 10)
    if joined is None:
        return None
    log.info("joined %d recording segments left by a writer that died", joined.segments,
             extra={"session_id": session_id})
    services.session_attach_recording(session_id=session_id, name=joined.name, audio_metadata={
        "recording": recording_facts(duration_ms=joined.duration_ms, recovered_segments=joined.segments),
    })
    return joined


def recording_facts(*, duration_ms: int, **more: object) -> dict[str, object]:
    """What ``audio_metadata["recording"]`` says of a joined stereo WAV, whoever joined it."""
    return {"format": "wav", "sample_rate": RATE, "channels": CHANNELS, "left": "trainee", "right": "buyer",
            "duration_ms": duration_ms, **more}
