"""Engine threads yield the CPU to the event loops that answer sockets.

On a small machine the engine threads (decode, VAD, Whisper, TTS, after-call re-transcription) can
keep every core busy. The kernel shares CPU evenly between runnable threads, so an event loop that
needs a millisecond to acknowledge a chunk, answer a ping or send a 20 ms RTP frame would queue
behind them and its latency would grow with the load. A higher nice value on the engine threads lets
the loop run the moment it wakes while the engines still get all the CPU the loops leave.

Linux keeps the nice value per thread and new threads inherit it, so the native pools an engine
starts from a lowered thread (CTranslate2's workers, onnxruntime's intra-op threads) are lowered
too. Raising one's own nice value needs no privilege. Elsewhere this is a no-op.
"""

from __future__ import annotations

import logging
import os
import threading

from django.conf import settings

logger = logging.getLogger(__name__)

_lowered = threading.local()


def lower_current_thread_priority(increment: int | None = None) -> None:
    """Add ``increment`` (default ``ENGINE_THREAD_NICE``) to this thread's nice value, once per
    thread (0 turns it off)."""
    if increment is None:
        increment = getattr(settings, "ENGINE_THREAD_NICE", 0)
    if increment <= 0 or getattr(_lowered, "done", False) or not hasattr(os, "setpriority"):
        return
    _lowered.done = True
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError as exc:  # e.g. a seccomp profile without setpriority: run at normal priority
        logger.warning("could not lower engine thread priority: %s", exc)


def lower_after_call_priority() -> None:
    """After-call jobs (recording compression, re-transcription) below the live engines too:
    ``AFTER_CALL_THREAD_NICE``. At the engines' own nice value a job took a quarter of the embedded
    server's samples while other calls were still talking (py-spy, 4 calls) and competed with
    their decodes as an equal; the trainee waiting for a reply comes before the report of a call
    that has ended."""
    lower_current_thread_priority(getattr(settings, "AFTER_CALL_THREAD_NICE", 0))


def current_thread_nice() -> int:
    """This thread's nice value (what the tests check)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
