"""Call recording: both sides on the session's own timeline, stored in segments as the call goes.

Each side is written at the sample offset of its session-relative time, so the recording lines
up with utterance ``start_ms``/``end_ms`` without any bookkeeping. The recorder keeps only the
stretches still being filled in memory, ``RECORDING_SEGMENT_SECONDS`` long; once the session clock
has passed a stretch (plus a little for late audio), the writer task stores it as a stereo segment
(left: trainee, right: buyer) through Django storage, on a thread, never on the event loop.
``save`` stores what is left and joins the segments into the stereo WAV
(``roleplay.recording_segments``); the after-call job transcodes it to a compact browser format.

A killed process loses only the stretch being filled: the after-call job joins the segments a
dead writer left (see ``roleplay.recording_segments``). The session is told before the stored file
is replaced, so the after-call job never deletes a recording mid-write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from channels.db import database_sync_to_async
from django.conf import settings

from roleplay import recording_segments, services
from roleplay.audio_format import SAMPLE_RATE as RATE
from roleplay.recording_segments import raw_recording_name

log = logging.getLogger(__name__)

__all__ = ["RATE", "SIDES", "CallRecorder", "raw_recording_name"]

SIDES = ("trainee", "buyer")
# How long past a stretch's end the writer waits for late audio (the trainee's arrives a jitter
# buffer late, a chunked client's up to a flush late) before it stores the stretch.
LATE_AUDIO_MS = 1000


@dataclass
class _Stretch:
    """One segment's worth of both sides, being filled."""

    index: int
    frames: np.ndarray  # (segment_frames, 2) int16
    lo: int  # written frames span [lo, hi) within the stretch
    hi: int
    part: int


@dataclass
class SegmentWriteStats:
    """What storing segments cost this process (for operators and the benches)."""

    segments: int = 0
    seconds: float = 0.0
    failures: int = 0


WRITE_STATS = SegmentWriteStats()


class CallRecorder:
    def __init__(self, session_id: str, *, max_seconds: int = 3 * 3600, segment_seconds: float | None = None,
                 continue_stored: bool = False) -> None:
        self.session_id = session_id
        self.writer = uuid.uuid4().hex[:10]
        self.continue_stored = continue_stored  # a resumed call: the stored WAV is the start of this one
        seconds = segment_seconds if segment_seconds is not None else settings.RECORDING_SEGMENT_SECONDS
        self.segment_frames = max(1, int(seconds * RATE))
        self.max_frames = max_seconds * RATE
        self.truncated = False
        self._open: dict[int, _Stretch] = {}
        self._parts: dict[int, int] = {}  # stretches already stored once -> parts so far
        self._retry: list[_Stretch] = []  # taken but not stored (storage outage): next batch
        self._cursor = dict.fromkeys(SIDES, 0)
        self._end = 0
        self._lock = threading.Lock()
        self._store_lock = threading.Lock()
        self._writer_task: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None
        self._closed = False

    # --- audio in (any thread) ---------------------------------------------------------------------
    def add(self, side: str, samples: np.ndarray, *, at_ms: int | None = None) -> None:
        """Write 16 kHz mono audio for one side; ``at_ms`` places it, else it follows the last write."""
        if side not in SIDES:
            raise ValueError(f"unknown side {side!r}")
        column = SIDES.index(side)
        if samples.dtype != np.int16:
            samples = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
        with self._lock:
            if self._closed:
                return
            at = at_ms * RATE // 1000 if at_ms is not None else self._cursor[side]
            if at + len(samples) > self.max_frames:
                self.truncated = True
                samples = samples[: max(0, self.max_frames - at)]
            if not len(samples):
                return
            position, offset = at, 0
            while offset < len(samples):
                index, within = divmod(position, self.segment_frames)
                count = min(len(samples) - offset, self.segment_frames - within)
                stretch = self._stretch(index)
                stretch.frames[within: within + count, column] = samples[offset: offset + count]
                stretch.lo, stretch.hi = min(stretch.lo, within), max(stretch.hi, within + count)
                position += count
                offset += count
            self._cursor[side] = position
            self._end = max(self._end, position)

    def _stretch(self, index: int) -> _Stretch:
        stretch = self._open.get(index)
        if stretch is None:
            # A stretch stored already gets a new part: stored segments are never rewritten.
            stretch = _Stretch(index, np.zeros((self.segment_frames, 2), np.int16), self.segment_frames, 0,
                               self._parts.get(index, 0))
            self._open[index] = stretch
        return stretch

    @property
    def duration_ms(self) -> int:
        return self._end * 1000 // RATE

    # --- segments out --------------------------------------------------------------------------------
    def take_due(self, now_ms: int) -> list[_Stretch]:
        """The stretches the session clock has left behind (plus the late-audio margin), out of memory."""
        edge = (now_ms - LATE_AUDIO_MS) * RATE // 1000
        with self._lock:
            due = [s for i, s in self._open.items() if (i + 1) * self.segment_frames <= edge]
            for stretch in due:
                del self._open[stretch.index]
                self._parts[stretch.index] = stretch.part + 1
            retry, self._retry = self._retry, []
            return retry + due

    def _take_all(self) -> list[_Stretch]:
        with self._lock:
            due = list(self._open.values())
            for stretch in due:
                self._parts[stretch.index] = stretch.part + 1
            self._open.clear()
            retry, self._retry = self._retry, []
            return retry + due

    def store(self, stretches: list[_Stretch]) -> None:
        """Store stretches as segments (blocking I/O: call it on a thread). Failed ones are kept for a retry."""
        with self._store_lock:
            failed = []
            for stretch in stretches:
                if stretch.hi <= stretch.lo:
                    continue
                started = time.perf_counter()
                try:
                    recording_segments.store_segment(
                        self.session_id, start_sample=stretch.index * self.segment_frames + stretch.lo,
                        writer=self.writer, part=stretch.part, frames=stretch.frames[stretch.lo: stretch.hi])
                except Exception:  # noqa: BLE001 - storage outage: keep it and try again with the next batch
                    WRITE_STATS.failures += 1
                    log.warning("recording segment not stored; retried later", exc_info=True,
                                extra={"session_id": self.session_id})
                    failed.append(stretch)
                    continue
                WRITE_STATS.segments += 1
                WRITE_STATS.seconds += time.perf_counter() - started
            if failed:
                with self._lock:
                    self._retry.extend(failed)
            self._hold_lease()

    def _hold_lease(self) -> None:
        try:
            recording_segments.hold_lease(self.session_id, writer=self.writer,
                                          seconds=self.segment_frames / RATE * 2 + LATE_AUDIO_MS / 1000 + 5)
        except Exception:  # noqa: BLE001 - a cache outage costs the after-call job a shorter wait
            log.warning("recording lease not refreshed", extra={"session_id": self.session_id})

    # --- the writer task (event loop) ----------------------------------------------------------------
    def start(self, now_ms: Callable[[], int]) -> None:
        """Store stretches as the session clock (``now_ms``: session ms) passes them, on a thread."""
        if self._writer_task is not None:
            return
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Held from the start (not from the first segment): the session's end then knows a recording is
        # coming and leaves the after-call dispatch to it (``services.session_end``). A cache call: off the loop.
        loop.run_in_executor(None, self._hold_lease)
        self._writer_task = loop.create_task(self._write_loop(now_ms), name=f"recording-{self.session_id}")

    async def _write_loop(self, now_ms: Callable[[], int]) -> None:
        loop = asyncio.get_running_loop()
        assert self._stop is not None
        segment_ms = self.segment_frames * 1000 // RATE
        while not self._stop.is_set():
            now = now_ms()
            due_at = (now - LATE_AUDIO_MS) // segment_ms * segment_ms + segment_ms + LATE_AUDIO_MS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=max(0.05, (due_at - now) / 1000))
            if self._stop.is_set():
                return
            due = self.take_due(now_ms())
            try:
                await loop.run_in_executor(None, self.store, due)
            except Exception:  # noqa: BLE001 - store() already kept what failed
                log.exception("recording writer failed", extra={"session_id": self.session_id})

    async def stop_writing(self) -> None:
        """Stop the writer task (a store in progress finishes first: ``save`` takes the rest)."""
        task, self._writer_task = self._writer_task, None
        if task is None:
            return
        if self._stop is not None:
            self._stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    # --- the end -------------------------------------------------------------------------------------
    def save(self) -> str | None:
        """Store what is left, join every segment into the stereo WAV; its storage name (None: nothing recorded).

        Blocking (storage I/O): run it on a thread, after ``stop_writing``.
        """
        self.store(self._take_all())
        try:
            joined = recording_segments.join_segments(self.session_id, include_stored=self.continue_stored,
                                                      writer=self.writer)
        finally:
            with contextlib.suppress(Exception):
                recording_segments.release_lease(self.session_id, writer=self.writer)
            self.close()
        if joined is None:
            return None
        self._end = max(self._end, joined.frames)
        return joined.name

    async def finish(self, metadata: dict[str, Any]) -> str | None:
        """The call is over in this process: stop the writer, store the rest, join the WAV and point
        the session at it, with ``metadata`` merged into its audio facts. Both transports end this
        way; returns the stored name (None: nothing was recorded)."""
        await self.stop_writing()
        name = await asyncio.to_thread(self.save)
        if name:
            facts = recording_segments.recording_facts(duration_ms=self.duration_ms, truncated=self.truncated)
            await database_sync_to_async(services.session_attach_recording)(
                session_id=self.session_id, name=name, audio_metadata={**metadata, "recording": facts})
        return name

    def close(self) -> None:
        """Forget the audio still in memory (after ``save``, or a recording nobody will keep)."""
        with self._lock:
            self._closed = True
            self._open.clear()
            self._retry.clear()
