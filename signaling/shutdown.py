"""Graceful shutdown of the server process: the registry of live calls, and the drain.

Why: on SIGTERM daphne cancels every application instance (``Server.kill_all_applications``), so
no consumer's ``disconnect`` handling runs: sessions stay live, the embedded media worker's
recordings (temporary files) are lost and no after-call job is dispatched. ``lingecho.server``
therefore runs :func:`drain` first, from the same "before shutdown" trigger, while the reactor and
its event loop still run. In order, each step bounded by one deadline (``SHUTDOWN_DRAIN_SECONDS``):

1. new calls are refused (:func:`accepting` turns False; the server has stopped listening);
2. every registered call ends as a normal end would, with reason ``server_shutdown``: the client
   is told (LingEcho ``disconnect``; Socket.IO ``session-ended`` through the chunk session's own
   close path, then a Socket.IO disconnect), the session is ended (``session_end`` dispatches the
   after-call job on commit) and a pinned media worker is told to hang up; then the chunk sessions
   nobody is attached to (socket gone, inside the resume window) are closed the same way;
3. embedded default only: the in-process media worker closes its calls and stores their
   recordings (scaled: the ``runworker media`` processes get the hangups of step 2 and drain on
   their own SIGTERM);
4. the sockets of those calls close (the close frames reach the clients before the reactor stops);
5. the after-call jobs run in this process (Celery eager, one background thread) are given what is
   left of the deadline.

After-call jobs: they finish within the drain when they can (a short call's take a few seconds,
mostly the re-transcription). One still running or queued at the deadline is *not* waited for: the
server exits anyway (``lingecho.server`` ends the process hard after the reactor stops) and the
next start-up processes the session: in the embedded default the new process owns all after-call
work and takes every ``pending`` or ``running`` job at once (``roleplay.lifecycle``,
``after_call.processing_orphans_claim(every_unfinished=True)``; processing is idempotent); with a
broker the jobs are not in this process at all. A call still ending at the deadline is cancelled;
the start-up ends its session (``roleplay.lifecycle``) and its recording's stored segments are
joined by the after-call job.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from asgiref.sync import sync_to_async

from media_pipeline.contract import in_process_worker
from signaling.chunk_sessions import manager as chunk_manager

logger = logging.getLogger(__name__)

REASON = "server_shutdown"  # RealtimeSession.EndReason.SERVER_SHUTDOWN and the protocol's disconnect reason
RETRY_AFTER_MS = 2000  # what a refused client is told: another instance (or this one restarted) soon
POLL_SECONDS = 0.05


class LiveCall(Protocol):
    """A consumer the drain can end: ``end_for_shutdown`` tells its client and ends its session."""

    async def end_for_shutdown(self, reason: str) -> None: ...


class MediaWorker(Protocol):
    """The embedded media worker as the drain sees it (``media_pipeline.worker.MediaWorker``)."""

    sessions: dict[str, Any]

    async def drain(self, reason: str = ..., timeout: float | None = None) -> dict[str, Any]: ...


_calls: weakref.WeakSet[LiveCall] = weakref.WeakSet()  # weak: a consumer killed without disconnect leaves no trace
_accepting = True


def accepting() -> bool:
    """False once the drain has begun: consumers refuse new calls."""
    return _accepting


def register(call: LiveCall) -> None:
    _calls.add(call)


def unregister(call: LiveCall) -> None:
    _calls.discard(call)


def live_calls() -> list[LiveCall]:
    return list(_calls)


def reset() -> None:
    """Accept calls again and forget every registration (tests)."""
    global _accepting
    _accepting = True
    _calls.clear()


@dataclass
class DrainReport:
    calls: int = 0  # consumers told and ended
    detached_chunk_sessions: int = 0  # chunk sessions with no socket, ended
    worker_calls: int = 0  # calls the embedded media worker still had
    cancelled: int = 0  # steps still running at the deadline
    sockets_open: int = 0  # call sockets not closed by the deadline
    after_call_done: bool = True  # every in-process after-call job finished
    calls_seconds: float = 0.0  # until every call was over and its socket closed (steps 1-4)
    seconds: float = 0.0  # the whole drain, after-call jobs included

    def summary(self) -> str:
        return (
            f"{self.calls} calls, {self.detached_chunk_sessions} detached chunk sessions, "
            f"{self.worker_calls} media calls, {self.cancelled} cancelled, {self.sockets_open} sockets left open, "
            f"calls over in {self.calls_seconds:.2f} s, "
            f"after-call jobs {'done' if self.after_call_done else 'left to the start-up sweep'}, "
            f"{self.seconds:.2f} s"
        )


async def drain(*, timeout: float, reason: str = REASON) -> DrainReport:
    """End every call of this process within ``timeout`` seconds (see the module docstring)."""
    global _accepting
    _accepting = False
    started = time.monotonic()
    deadline = started + timeout
    report = DrainReport()
    calls = live_calls()
    report.calls = len(calls)
    report.cancelled += await _bounded((call.end_for_shutdown(reason) for call in calls), deadline)
    # After the consumers: each closes its own chunk session first so its client hears session-ended.
    detached = list(chunk_manager.sessions)
    report.detached_chunk_sessions = len(detached)
    report.cancelled += await _bounded((chunk_manager.close(sid, reason) for sid in detached), deadline)
    worker = in_process_worker()
    if worker is not None:
        report.worker_calls = len(worker.sessions)
        report.cancelled += await _bounded([_drain_worker(worker, reason, deadline)], deadline)
    report.sockets_open = await _sockets_closed(calls, deadline)
    report.calls_seconds = time.monotonic() - started
    report.after_call_done = await _after_call_jobs_done(deadline)
    report.seconds = time.monotonic() - started
    return report


async def _bounded(steps: Iterable[Awaitable[object]], deadline: float) -> int:
    """Run ``steps`` concurrently until the deadline; returns how many were cancelled unfinished."""
    tasks = [asyncio.ensure_future(step) for step in steps]
    if not tasks:
        return 0
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            logger.error("shutdown step failed", exc_info=task.exception())
    for task in pending:
        task.cancel()
    return len(pending)


async def _drain_worker(worker: MediaWorker, reason: str, deadline: float) -> None:
    """Close the worker's calls with ``reason`` and store their recordings.

    ``MediaWorker.drain`` closes the calls still open; the calls whose hangup (sent by their
    consumer in step 2) is already being handled close on their own, and a call leaves
    ``worker.sessions`` only once its recording is stored: the wait is for the registry to empty.
    Only then is every after-call job dispatched (``session_recording_stored`` dispatches again).
    """
    await worker.drain(reason, max(0.0, deadline - time.monotonic()))
    while worker.sessions and time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)


async def _sockets_closed(calls: list[LiveCall], deadline: float) -> int:
    """Wait (until the deadline) for the ended calls' sockets to close; returns how many are still open.

    A consumer unregisters when its socket is gone; until then its close frame may sit in a buffer
    that the reactor's shutdown would drop.
    """
    ended = set(map(id, calls))
    while time.monotonic() < deadline:
        if not any(id(call) in ended for call in _calls):
            return 0
        await asyncio.sleep(POLL_SECONDS)
    return sum(1 for call in _calls if id(call) in ended)


async def _after_call_jobs_done(deadline: float) -> bool:
    from roleplay.tasks import wait_for_background_jobs

    remaining = max(0.0, deadline - time.monotonic())
    return await sync_to_async(wait_for_background_jobs, thread_sensitive=False)(remaining)


__all__ = ["REASON", "DrainReport", "LiveCall", "accepting", "drain", "live_calls", "register", "reset", "unregister"]
