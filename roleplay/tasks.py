"""Celery tasks: thin wrappers that call ``roleplay.after_call``; retry policy and scheduling live here.

Reliability (see ``lingecho/settings.py`` CELERY_*): tasks are acknowledged late and rejected back to
the queue when the worker process dies, so a killed worker means the task runs again — which is safe
because ``session_process`` is idempotent. Transient errors (storage ``OSError``, database
``OperationalError``, S3 connection errors) are retried with exponential backoff up to
``POSTPROCESS_MAX_RETRIES`` times, then the session is marked ``failed`` with the reason; any other
error fails it at once (retrying a bug only delays the report).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from celery import Task, shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import connections

from lingecho.priority import lower_after_call_priority
from roleplay import after_call, lifecycle

logger = logging.getLogger(__name__)


def retry_countdown(retries: int) -> int:
    """Seconds to wait after ``retries`` earlier retries: 2, 4, 8, … capped at the configured maximum."""
    return get_exponential_backoff_interval(
        factor=2, retries=max(0, retries), maximum=settings.POSTPROCESS_RETRY_BACKOFF_MAX_SECONDS, full_jitter=False
    )


# One job at a time: the embedded server has few cores and the calls in progress come first.
_background = ThreadPoolExecutor(
    max_workers=1, thread_name_prefix="after-call", initializer=lower_after_call_priority
)


def _run_in_background(task: Task, args: tuple, kwargs: dict) -> object:
    try:
        return task.apply(args=args, kwargs=kwargs).result
    except Exception:  # noqa: BLE001 - nobody waits on this thread: log, never raise into the void
        logger.exception("after-call task crashed in the background thread")
        return None
    finally:
        connections.close_all()  # this thread's connections only


class AfterCallTask(Task):
    """In eager mode (no broker), run on a background thread instead of inside the caller.

    ``session_end`` dispatches on commit from the call's own database thread; running minutes of
    audio through Whisper there would stall every other call's database access in the embedded
    server. With a broker this changes nothing. ``POSTPROCESS_EAGER_IN_BACKGROUND=0`` restores the
    plain synchronous eager behaviour (tests use it to assert right after ending a session).
    """

    def apply_async(self, args=None, kwargs=None, **options):  # type: ignore[override]
        if self.app.conf.task_always_eager and settings.POSTPROCESS_EAGER_IN_BACKGROUND:
            future: Future = _background.submit(_run_in_background, self, tuple(args or ()), dict(kwargs or {}))
            return future
        return super().apply_async(args=args, kwargs=kwargs, **options)


@shared_task(bind=True, base=AfterCallTask, name="roleplay.tasks.process_session", acks_late=True,
             reject_on_worker_lost=True, max_retries=None)
def process_session(self, session_id: str, force: bool = False) -> str:
    """Archive, re-transcribe and score one ended session (dispatched by ``services.session_end`` on commit)."""
    try:
        return after_call.session_process(session_id=session_id, force=force)
    except after_call.TRANSIENT_ERRORS as exc:
        if self.request.retries >= settings.POSTPROCESS_MAX_RETRIES:
            after_call.processing_fail(session_id=session_id, error=exc)
            raise
        countdown = retry_countdown(self.request.retries)
        after_call.processing_retrying(
            session_id=session_id, attempt=self.request.retries + 1, countdown=countdown, error=exc
        )
        logger.warning("post-session step failed (%s); retry in %s s", type(exc).__name__, countdown,
                       extra={"session_id": session_id})
        if self.request.is_eager and threading.current_thread().name.startswith("after-call"):
            time.sleep(countdown)  # eager retries do not wait; on our own background thread we can
        raise self.retry(exc=exc, countdown=countdown) from exc
    except Exception as exc:
        after_call.processing_fail(session_id=session_id, error=exc)
        raise


@shared_task(name="roleplay.tasks.sweep_sessions", acks_late=True)
def sweep_sessions() -> dict[str, int]:
    """Celery beat's ``sweep-sessions``: end stale sessions, re-dispatch orphaned after-call jobs.

    Scaled setup only; the embedded default runs the same sweep on a thread of the server
    (``roleplay.lifecycle.ServerJobs``). Returns how many sessions each rule touched.
    """
    return lifecycle.sessions_sweep().counts()


@shared_task(name="roleplay.tasks.purge_recordings", acks_late=True)
def purge_recordings() -> int:
    """Retention: remove recordings older than ``RECORDING_RETENTION_DAYS``; transcripts stay."""
    return len(after_call.recordings_purge())


def wait_for_background_jobs(timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the after-call jobs queued so far on this process's background
    thread; True when none is left. For the server's graceful shutdown (``signaling.shutdown``).

    One thread runs the jobs in order, so a no-op queued now finishes only after every job queued
    before it. With a broker nothing is queued here and this returns at once.
    """
    marker = _background.submit(lambda: None)
    try:
        marker.result(timeout=max(0.0, timeout))
    except TimeoutError:
        marker.cancel()
        return False
    return True
