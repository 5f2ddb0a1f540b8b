"""The after-call job's state on the session row: claim, lease, progress, finish, retry, fail, orphans.

``RealtimeSession.processing`` moves PENDING -> RUNNING -> DONE (or FAILED). Every write here is an
update of the session's own row, under its row lock where two runs could race, so a redelivered
task, the sweeper and a manual re-run all end in exactly one result.

A run marked RUNNING holds a lease (``processing_lease_until``, ``POSTPROCESS_LEASE_SECONDS``) that every
step renews (``processing_report``) and a retry extends by its backoff. A lease that ran out means the
worker died without Celery noticing (the embedded default's background thread dies with its process; a
broker may only redeliver after its visibility timeout): ``processing_orphans_claim`` hands such jobs,
and ended sessions whose dispatch was lost, to the sweeper (``roleplay.lifecycle``), taking a fresh
lease for each so the next sweep does not dispatch the same job again while it waits in a queue.
Claiming a RUNNING session stays allowed whatever its lease: that is what a redelivered task looks like.

The recording usually arrives *after* the session ended. The job is dispatched once, when it is
stored (``services.session_end`` leaves the dispatch to a recorder that still holds its writer lease).
Where that cannot be known (a cache outage, a recorder that had not started yet), a run remembers which
``recording_version`` it processed: attaching a newer recording dispatches the job again and the claim
lets it redo a finished session; a run overtaken by a newer recording stops (``Superseded``) without
touching the session's recording; and the raw WAV is deleted only under the session's row lock, when
no newer recording was attached or is being written (``recording_saving_since``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from roleplay.after_call.archive import archive_prefix
from roleplay.models import RealtimeSession
from roleplay.recording_segments import writer_active

logger = logging.getLogger(__name__)


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, OperationalError, InterfaceError]
    try:  # S3 connection problems are not OSErrors
        from botocore.exceptions import BotoCoreError

        errors.append(BotoCoreError)
    except ImportError:
        pass
    return tuple(errors)


# What the Celery task retries with backoff; anything else fails the job at once.
TRANSIENT_ERRORS = _transient_errors()

# A recording write announced longer ago than this never finished (the worker died mid-save).
RECORDING_SAVE_STALE = timedelta(minutes=10)

ORPHANS_PER_SWEEP = 500
# ``processing_detail`` of an ended session whose dispatch waits for its recorder (services.session_end):
# no dispatch is queued for it, so the sweeper takes it as soon as no writer holds the recording.
AWAITING_RECORDING = "waiting for the recording"


class Superseded(Exception):
    """A newer recording was attached while this run worked; the run it dispatched takes over."""


def _lease(extra_seconds: float = 0.0) -> datetime:
    return timezone.now() + timedelta(seconds=settings.POSTPROCESS_LEASE_SECONDS + extra_seconds)


def processing_report(session_id: str, percent: int, detail: str) -> None:
    """Publish a step and renew the lease: a run that still reports progress is alive."""
    RealtimeSession.objects.filter(pk=session_id).update(
        processing_progress=max(0, min(100, percent)), processing_detail=detail[:200],
        processing_lease_until=_lease(),
    )
    logger.info("post-session %s%% %s", percent, detail, extra={"session_id": session_id})


def processing_claim(*, session_id: str, force: bool = False) -> int | None:
    """Mark the session as being processed; returns the recording version to process, None if nothing to do.

    Under a row lock, so two copies of the task that start together see each other's claim: a
    finished session is skipped (unless ``force``, or a newer recording arrived since it was
    processed), a session still live is left alone. A session marked running is claimed again on
    purpose: that is what a redelivered task after a worker was killed looks like.
    """
    with transaction.atomic():
        session = RealtimeSession.objects.select_for_update().filter(pk=session_id).first()
        if session is None or session.state != RealtimeSession.State.ENDED:
            return None
        up_to_date = session.processed_recording_version >= session.recording_version
        if session.processing == RealtimeSession.Processing.DONE and up_to_date and not force:
            return None
        session.processing = RealtimeSession.Processing.RUNNING
        session.processing_progress = 1
        session.processing_detail = "starting"
        session.archive_prefix = archive_prefix(session_id)
        session.processing_lease_until = _lease()
        session.save(update_fields=["processing", "processing_progress", "processing_detail", "archive_prefix",
                                    "processing_lease_until"])
    return session.recording_version


def processing_check_current(session_id: str, version: int) -> None:
    """Stop (``Superseded``) before writing artefacts from a recording that a newer one has replaced."""
    if not RealtimeSession.objects.filter(pk=session_id, recording_version=version).exists():
        raise Superseded(session_id)


def processing_finish(*, session_id: str, version: int, archived: str | None, source: str | None) -> str:
    """Mark the run done; point the session at the archived copy and drop the raw WAV if still safe.

    Under the session's row lock, and the raw WAV is deleted before the lock is released: the
    recorder's "saving" mark and ``session_attach_recording`` take the same lock, so a newer WAV
    (stored under the same name) can never be written between this check and the delete. Returns
    ``"superseded"`` when a newer recording was attached meanwhile (its own run is queued).
    """
    stale = timezone.now() - RECORDING_SAVE_STALE
    with transaction.atomic():
        session = RealtimeSession.objects.select_for_update().get(pk=session_id)
        if session.recording_version != version:
            return "superseded"
        fields: dict[str, Any] = {
            "processing": RealtimeSession.Processing.DONE, "processing_progress": 100, "processing_detail": "done",
            "processed_recording_version": version, "processing_lease_until": None,
        }
        saving = session.recording_saving_since is not None and session.recording_saving_since > stale
        if saving:  # a newer recording is being written: leave the raw WAV and the pointer alone
            RealtimeSession.objects.filter(pk=session_id).update(**fields)
            return "done"
        if archived:
            fields["recording"] = archived
        RealtimeSession.objects.filter(pk=session_id).update(**fields)
        # Only a WAV that now has an archived copy is dropped (never one that failed to load).
        if archived and source and source != archived and not settings.ARCHIVE_KEEP_RAW_RECORDING:
            try:  # best effort: the retention sweep removes a leftover WAV later anyway
                default_storage.delete(source)
            except OSError:
                logger.warning("could not delete raw recording", extra={"session_id": session_id})
    return "done"


def processing_retrying(*, session_id: str, attempt: int, countdown: float, error: BaseException) -> None:
    """Tell the results page that a transient error is being retried (and when); the lease covers the wait."""
    RealtimeSession.objects.filter(pk=session_id).update(
        processing_detail=f"retry {attempt} in {countdown:.0f} s after {type(error).__name__}: {error}"[:200],
        processing_lease_until=_lease(countdown),
    )


def processing_fail(*, session_id: str, error: BaseException | str) -> None:
    """Give up: the results page shows ``failed`` and why. The sweeper never re-runs failed sessions."""
    detail = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    try:
        RealtimeSession.objects.filter(pk=session_id).update(
            processing=RealtimeSession.Processing.FAILED, processing_detail=detail[:200], processing_lease_until=None
        )
    except Exception:  # noqa: BLE001 - the database itself may be what failed; the log still has it
        logger.exception("could not record processing failure", extra={"session_id": session_id})
    logger.error("post-session processing failed: %s", detail, extra={"session_id": session_id})


def processing_orphans_claim(*, every_unfinished: bool = False) -> tuple[list[str], list[str]]:
    """Take over after-call jobs nobody is running; returns (never started, lease expired) session ids.

    Never started: ended more than ``POSTPROCESS_SWEEP_GRACE_SECONDS`` ago and still pending (a lost
    dispatch, a broker outage), or at once when its dispatch was left to a recorder
    (``AWAITING_RECORDING``) that no longer holds its lease (the media worker died). Lease expired:
    RUNNING past its lease (the worker died). Each one
    gets a fresh lease by a conditional update, so when two sweepers race only one dispatches it.
    ``every_unfinished`` takes every pending or running job at once, whatever its age or lease: for
    the start-up of a process that owns all after-call work (the embedded default), when whatever the
    previous process had queued or was running died with it. Failed sessions are never taken.
    """
    now = timezone.now()
    grace_cutoff = now - timedelta(seconds=settings.POSTPROCESS_SWEEP_GRACE_SECONDS)
    unclaimed = Q(processing_lease_until__isnull=True) | Q(processing_lease_until__lt=now)
    pending = Q(processing=RealtimeSession.Processing.PENDING)
    running = Q(processing=RealtimeSession.Processing.RUNNING)
    ended = RealtimeSession.objects.filter(state=RealtimeSession.State.ENDED)
    if every_unfinished:
        candidates = ended.filter(pending | running)
    else:
        awaiting = Q(processing_detail=AWAITING_RECORDING)
        candidates = ended.filter((pending & (Q(ended_at__lt=grace_cutoff) | awaiting)) | running).filter(unclaimed)
    rows = list(candidates.order_by("ended_at").values_list("pk", "processing")[:ORPHANS_PER_SWEEP])
    never_started: list[str] = []
    lease_expired: list[str] = []
    for session_id, processing in rows:
        if processing == RealtimeSession.Processing.PENDING and not every_unfinished and writer_active(session_id):
            continue  # its recorder is still writing: storing the recording dispatches the job
        taken = RealtimeSession.objects.filter(pk=session_id, processing=processing)
        if not every_unfinished:
            taken = taken.filter(unclaimed)
        if taken.update(processing_lease_until=_lease()):
            (lease_expired if processing == RealtimeSession.Processing.RUNNING else never_started).append(session_id)
    return never_started, lease_expired
