"""Retention: a call's audio is kept ``RECORDING_RETENTION_DAYS``; its transcripts and scores stay.

Run by Celery beat (``roleplay.tasks.purge_recordings``) or by hand (``manage.py purge_recordings``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone

from roleplay.after_call.archive import archive_names, manifest_mark_purged
from roleplay.models import RealtimeSession
from roleplay.recording_segments import raw_recording_name

logger = logging.getLogger(__name__)


def recordings_purge(*, older_than_days: int | None = None, now: datetime | None = None) -> list[str]:
    """Delete the audio of sessions that ended more than N days ago; transcripts and analytics stay.

    Returns the ids of the sessions purged. Idempotent: a purged session has an empty ``recording``
    and is not selected again; its manifest records when the audio went.
    """
    days = settings.RECORDING_RETENTION_DAYS if older_than_days is None else older_than_days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    purged: list[str] = []
    old = RealtimeSession.objects.filter(state=RealtimeSession.State.ENDED, ended_at__lt=cutoff).exclude(recording="")
    for session in old.iterator():
        names = {session.recording.name, raw_recording_name(session.pk), archive_names(session.pk)["recording"]}
        for name in names:
            if name and default_storage.exists(name):
                default_storage.delete(name)
        manifest_mark_purged(session.pk)
        RealtimeSession.objects.filter(pk=session.pk).update(recording="")
        purged.append(session.pk)
    if purged:
        logger.info("purged %d recordings older than %d days", len(purged), days)
    return purged
