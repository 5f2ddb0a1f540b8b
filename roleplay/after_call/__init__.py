"""After the call: turn an ended session into a durable, reviewable record.

Callers (``roleplay.tasks``, ``roleplay.lifecycle``, ``manage.py purge_recordings``) import the job from
here; the rooms behind it:

- ``steps``       — ``session_process``: the steps in order (load, compress, re-transcribe, score, write)
- ``job``         — the job's state on the session row: claim, lease, progress, finish, retry, fail, orphans
- ``recording``   — find, load, compress and re-transcribe the call's audio
- ``transcripts`` — the conversation as JSON, plain text and WebVTT
- ``archive``     — fixed storage names, the one writer, the manifest
- ``retention``   — ``recordings_purge``: audio goes after ``RECORDING_RETENTION_DAYS``, text stays
"""

from roleplay.after_call.job import (
    TRANSIENT_ERRORS,
    processing_fail,
    processing_orphans_claim,
    processing_retrying,
)
from roleplay.after_call.retention import recordings_purge
from roleplay.after_call.steps import session_process

__all__ = [
    "TRANSIENT_ERRORS",
    "processing_fail",
    "processing_orphans_claim",
    "processing_retrying",
    "recordings_purge",
    "session_process",
]
