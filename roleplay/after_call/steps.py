"""The after-call job's one entry point: ``session_process`` runs every step for one ended session.

It publishes its progress on the session (``processing`` / ``processing_progress`` /
``processing_detail``) so the results page can poll ``GET /api/sessions/{id}/``:

1. collect and load the recording (``recording``; segments of a call whose media worker died are
   joined first by ``roleplay.recording_segments``),
2. compress it to WebM/Opus (stereo: trainee left, buyer right — small, and every browser plays it),
3. transcribe it again offline with word timestamps (the ``roleplay.transcription`` port),
4. compute metrics and rubric scores (``roleplay.analytics_service``),
5. write the transcript (``transcripts``: JSON, text, WebVTT), the analytics JSON and the manifest
   (``archive``), then mark the session done (``job``).

Running the whole thing twice (a redelivered task after a worker died, the sweeper, a manual re-run)
leaves exactly one result: fixed storage names and keyed rows. The raw WAV is deleted only after the
session is marked done, so a crash at any point before that loses nothing. Transient failures
(``job.TRANSIENT_ERRORS``) propagate to the Celery task, which retries with exponential backoff and
finally calls ``job.processing_fail``.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from typing import Any

from django.conf import settings

from roleplay import analytics_service
from roleplay.after_call.archive import (
    archive_json,
    archive_names,
    manifest_document,
    storage_put,
    stored_recording_describe,
)
from roleplay.after_call.job import (
    Superseded,
    processing_check_current,
    processing_claim,
    processing_finish,
    processing_report,
)
from roleplay.after_call.recording import encode_opus, load_recording, recording_source, retranscribe
from roleplay.after_call.transcripts import transcript_document, transcript_text, transcript_vtt
from roleplay.audio_format import SAMPLE_RATE as RATE
from roleplay.models import RealtimeSession, SessionAnalytics
from roleplay.transcription import RecordingUnreadable

logger = logging.getLogger(__name__)


def session_process(*, session_id: str, force: bool = False) -> str:
    """Run every after-call step for one ended session; returns ``"done"`` or ``"skipped"``.

    Idempotent: fixed storage names and keyed rows. ``force`` re-runs a finished session (e.g. after
    a better archive model was configured). Transient errors propagate for the task to retry.
    Returns ``"superseded"`` when a newer recording arrived mid-run (the run it dispatched redoes it).
    """
    version = processing_claim(session_id=session_id, force=force)
    if version is None:
        return "skipped"
    try:
        return _process(session_id, version)
    except Superseded:
        logger.info("a newer recording arrived; leaving the session to the run it dispatched",
                    extra={"session_id": session_id})
        return "superseded"


def _test_pause(step: str) -> None:
    """A deliberately slow step for the worker-kill test (``POSTPROCESS_TEST_STEP_DELAY_SECONDS``); 0 in use."""
    delay = settings.POSTPROCESS_TEST_STEP_DELAY_SECONDS
    if delay > 0:
        logger.warning("test delay in step %s: %.1f s", step, delay)
        time.sleep(delay)


def _process(session_id: str, version: int) -> str:
    session = RealtimeSession.objects.select_related("scenario", "trainee").get(pk=session_id)
    names = archive_names(session_id)
    files: dict[str, dict[str, Any]] = {}

    processing_report(session_id, 3, "collecting the recording")
    from roleplay.recording_segments import recover_recording

    recover_recording(session_id=session_id)  # segments of a call whose media worker died: joined and attached
    processing_report(session_id, 5, "loading the recording")
    source = recording_source(session)
    stereo = None
    recording_note: str | None = None
    if source is not None:
        try:
            stereo = load_recording(source)
        except RecordingUnreadable as exc:
            recording_note = str(exc)
    archived: str | None = None
    if stereo is not None and len(stereo):
        if source == names["recording"]:
            files["recording"] = stored_recording_describe(names["recording"])
        else:
            processing_check_current(session_id, version)
            processing_report(session_id, 15, "compressing the recording")
            with tempfile.NamedTemporaryFile(suffix=".webm", delete=False) as tmp:
                tmp_path = tmp.name
            try:
                encode_opus(stereo, tmp_path, bitrate=settings.ARCHIVE_AUDIO_BITRATE)
                files["recording"] = storage_put(names["recording"], b"", path=tmp_path)
            finally:
                os.unlink(tmp_path)
            archived = names["recording"]
        files["recording"]["duration_ms"] = round(len(stereo) * 1000 / RATE)
        files["recording"]["channels"] = {"left": "trainee", "right": "buyer"}

    processing_report(session_id, 30, "transcribing the recording again")
    _test_pause("retranscribe")
    retranscript = retranscribe(session, stereo)
    if recording_note:
        retranscript = {"status": "failed", "reason": recording_note, "segments": []}
    processing_check_current(session_id, version)
    files["retranscript"] = storage_put(names["retranscript"], archive_json(retranscript))
    analytics_service.session_retranscript_store(session_id=session_id, retranscript=retranscript)

    processing_report(session_id, 65, "scoring the conversation")
    analytics = analytics_service.session_analytics_compute(session_id=session_id)

    processing_report(session_id, 80, "writing the transcript")
    rows = list(session.utterances.order_by("seq"))
    persona = session.scenario.persona_name
    files["transcript_json"] = storage_put(names["transcript_json"], archive_json(transcript_document(session, rows)))
    files["transcript_txt"] = storage_put(names["transcript_txt"], transcript_text(rows, persona=persona))
    files["transcript_vtt"] = storage_put(names["transcript_vtt"], transcript_vtt(rows, persona=persona))
    files["analytics"] = storage_put(names["analytics"], archive_json(_analytics_document(analytics)))

    processing_report(session_id, 95, "writing the manifest")
    storage_put(names["manifest"], archive_json(manifest_document(session, files)))

    return processing_finish(session_id=session_id, version=version, archived=archived,
                             source=source if source != names["recording"] else None)


def _analytics_document(analytics: SessionAnalytics) -> dict[str, Any]:
    return {
        "session_id": analytics.session_id,
        "metrics": analytics.metrics,
        "rubric": analytics.rubric,
        "total_score": analytics.total_score,
        "override": {
            "rubric": analytics.override_rubric, "total": analytics.override_total,
            "by": analytics.overridden_by.username if analytics.overridden_by else None,
        },
        "effective_total": analytics.effective_total,
    }
