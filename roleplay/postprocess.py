"""After the call: turn an ended session into a durable, reviewable record.

One service, ``session_process``, runs the steps in order and publishes its progress on the session
(``processing`` / ``processing_progress`` / ``processing_detail``) so the results page can poll
``GET /api/sessions/{id}/``:

1. load the recording (the raw stereo WAV from ``media_pipeline.recording``; on a re-run after the WAV
   was dropped, the archived Opus copy),
2. transcode it to WebM/Opus (stereo: trainee left, buyer right — small, and every browser plays it),
3. transcribe it again offline with word timestamps (the ``roleplay.transcription`` port, which the
   media pipeline implements),
4. compute metrics and rubric scores (``roleplay.analytics_service``),
5. write the transcript (JSON, text, WebVTT), the analytics JSON and a manifest.

Everything goes through Django's default storage under ``sessions/<id>/archive/`` with fixed names,
and every database write is an update of a row keyed by the session, so running the whole thing
twice (a redelivered task after a worker died, the sweeper, a manual re-run) leaves exactly one
result. The raw WAV is deleted only after the session is marked done, so a crash at any point
before that loses nothing.

The recording usually arrives *after* the session ended (the media worker stores it once the peer
is closed, while ``session_end`` has already dispatched this job). So a run remembers which
``recording_version`` it processed: attaching a newer recording dispatches the job again and the
claim lets it redo a finished session; a run overtaken by a newer recording stops without touching
the session's recording; and the raw WAV is deleted only under the session's row lock, when no
newer recording was attached or is being written (``recording_saving_since``).

Transient failures (storage ``OSError``, database ``OperationalError``) propagate to the Celery task,
which retries with exponential backoff and finally calls ``processing_fail``.

A run marked RUNNING holds a lease (``processing_lease_until``, ``POSTPROCESS_LEASE_SECONDS``) that every
step renews and a retry extends by its backoff. A lease that ran out means the worker died without
Celery noticing (the embedded default's background thread dies with its process; a broker may only
redeliver after its visibility timeout): ``processing_orphans_claim`` hands such jobs, and ended
sessions whose dispatch was lost, to the sweeper (``roleplay.lifecycle``), taking a fresh lease for
each so the next sweep does not dispatch the same job again while it waits in a queue. Claiming a
RUNNING session stays allowed whatever its lease: that is what a redelivered task looks like.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from roleplay import analytics_service
from roleplay.audio_format import SAMPLE_RATE as RATE
from roleplay.models import RealtimeSession, SessionAnalytics, Utterance
from roleplay.recording_segments import raw_recording_name
from roleplay.transcription import RecordingUnreadable, RetranscribeOptions, get_retranscriber

logger = logging.getLogger(__name__)

ARCHIVE_VERSION = 1


def _transient_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, OperationalError, InterfaceError]
    try:  # S3 connection problems are not OSErrors
        from botocore.exceptions import BotoCoreError

        errors.append(BotoCoreError)
    except ImportError:
        pass
    return tuple(errors)


TRANSIENT_ERRORS = _transient_errors()


def archive_prefix(session_id: str) -> str:
    return f"sessions/{session_id}/archive/"


def archive_names(session_id: str) -> dict[str, str]:
    """Every artefact's fixed storage name: fixed names are what make a re-run overwrite, not add."""
    p = archive_prefix(session_id)
    return {
        "recording": p + "recording.webm",
        "transcript_json": p + "transcript.json",
        "transcript_txt": p + "transcript.txt",
        "transcript_vtt": p + "transcript.vtt",
        "retranscript": p + "retranscript.json",
        "analytics": p + "analytics.json",
        "manifest": p + "manifest.json",
    }


CONTENT_TYPES = {
    ".webm": "audio/webm",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".vtt": "text/vtt; charset=utf-8",
}


# --------------------------------------------------------------------------- progress and status


def _lease(extra_seconds: float = 0.0) -> datetime:
    return timezone.now() + timedelta(seconds=settings.POSTPROCESS_LEASE_SECONDS + extra_seconds)


def _progress(session_id: str, percent: int, detail: str) -> None:
    """Publish a step and renew the lease: a run that still reports progress is alive."""
    RealtimeSession.objects.filter(pk=session_id).update(
        processing_progress=max(0, min(100, percent)), processing_detail=detail[:200],
        processing_lease_until=_lease(),
    )
    logger.info("post-session %s%% %s", percent, detail, extra={"session_id": session_id})


# A recording write announced longer ago than this never finished (the worker died mid-save).
RECORDING_SAVE_STALE = timedelta(minutes=10)


class Superseded(Exception):
    """A newer recording was attached while this run worked; the run it dispatched takes over."""


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


def _check_current(session_id: str, version: int) -> None:
    """Stop before writing artefacts from a recording that a newer one has replaced."""
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


ORPHANS_PER_SWEEP = 500


def processing_orphans_claim(*, every_unfinished: bool = False) -> tuple[list[str], list[str]]:
    """Take over after-call jobs nobody is running; returns (never started, lease expired) session ids.

    Never started: ended more than ``POSTPROCESS_SWEEP_GRACE_SECONDS`` ago and still pending (a lost
    dispatch, a broker outage). Lease expired: RUNNING past its lease (the worker died). Each one
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
        candidates = ended.filter((pending & Q(ended_at__lt=grace_cutoff)) | running).filter(unclaimed)
    rows = list(candidates.order_by("ended_at").values_list("pk", "processing")[:ORPHANS_PER_SWEEP])
    never_started: list[str] = []
    lease_expired: list[str] = []
    for session_id, processing in rows:
        taken = RealtimeSession.objects.filter(pk=session_id, processing=processing)
        if not every_unfinished:
            taken = taken.filter(unclaimed)
        if taken.update(processing_lease_until=_lease()):
            (lease_expired if processing == RealtimeSession.Processing.RUNNING else never_started).append(session_id)
    return never_started, lease_expired


# --------------------------------------------------------------------------- storage


def storage_put(name: str, content: bytes | str, *, path: str | None = None) -> dict[str, Any]:
    """Write one artefact under its fixed name, replacing any earlier version; returns its manifest entry.

    Local storage would otherwise save a second copy under a suffixed name; if a concurrent run
    wins the race for the name anyway, our copy (identical content) is removed again.
    """
    storage = default_storage
    content_type = CONTENT_TYPES.get(os.path.splitext(name)[1], "application/octet-stream")
    if storage.exists(name):
        storage.delete(name)
    if path is not None:
        digest, size = _file_digest(path)
        with open(path, "rb") as handle:
            upload = File(handle, name=os.path.basename(name))
            upload.content_type = content_type  # S3 would guess video/webm from the name
            saved = storage.save(name, upload)
    else:
        data = content.encode("utf-8") if isinstance(content, str) else content
        digest, size = hashlib.sha256(data).hexdigest(), len(data)
        upload = ContentFile(data, name=os.path.basename(name))
        upload.content_type = content_type
        saved = storage.save(name, upload)
    if saved != name:
        storage.delete(saved)
    return {"name": name, "bytes": size, "sha256": digest, "content_type": content_type}


def _file_digest(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def _json(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True, default=str)


def recording_source(session: RealtimeSession) -> str | None:
    """The best stored recording: the raw WAV if it is still there, else the archived copy."""
    candidates = [session.recording.name if session.recording else "", raw_recording_name(session.pk),
                  archive_names(session.pk)["recording"]]
    for name in candidates:
        if name and default_storage.exists(name):
            return name
    return None


def load_recording(name: str) -> np.ndarray:
    with default_storage.open(name, "rb") as handle:
        data = handle.read()  # S3 file objects seek poorly; a call recording fits in memory
    return get_retranscriber().load_stereo(io.BytesIO(data))


def encode_opus(stereo: np.ndarray, path: str, *, bitrate: int) -> None:
    """16 kHz int16 stereo -> WebM/Opus at 48 kHz (Opus's native rate), both channels kept."""
    import av

    with av.open(path, "w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48000, layout="stereo")
        stream.bit_rate = bitrate
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="stereo", rate=48000)
        for start in range(0, len(stereo), RATE * 10):
            block = np.ascontiguousarray(stereo[start:start + RATE * 10], dtype=np.int16)
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate = RATE
            for resampled in resampler.resample(frame):
                out.mux(stream.encode(resampled))
        for resampled in resampler.resample(None):
            out.mux(stream.encode(resampled))
        out.mux(stream.encode(None))


# --------------------------------------------------------------------------- transcript formats


def _utterance_dict(u: Utterance) -> dict[str, Any]:
    return {
        "seq": u.seq, "speaker": u.speaker, "source": u.source, "text": u.text, "language": u.language,
        "start_ms": u.start_ms, "end_ms": u.end_ms, "confidence": u.confidence, "interrupted": u.interrupted,
    }


def _clock(ms: int, *, vtt: bool) -> str:
    ms = max(0, int(ms))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{milli:03d}" if vtt else f"{h * 60 + m:02d}:{s:02d}"


_LABEL = {Utterance.Speaker.TRAINEE: "Trainee", Utterance.Speaker.BUYER: "Buyer"}


def transcript_text(rows: list[Utterance], *, persona: str) -> str:
    lines = []
    for u in rows:
        label = persona if u.speaker == Utterance.Speaker.BUYER and persona else _LABEL.get(u.speaker, u.speaker)
        lines.append(f"[{_clock(u.start_ms, vtt=False)}] {label}: {u.text}")
    return "\n".join(lines) + ("\n" if lines else "")


def transcript_vtt(rows: list[Utterance], *, persona: str) -> str:
    """WebVTT with one cue per utterance and the speaker as a voice span (``<v Trainee>``).

    A cue must end after it starts; typed turns have no duration, so they get one second.
    """
    out = ["WEBVTT", ""]
    for u in rows:
        end = u.end_ms if u.end_ms > u.start_ms else u.start_ms + 1000
        label = persona if u.speaker == Utterance.Speaker.BUYER and persona else _LABEL.get(u.speaker, u.speaker)
        text = u.text.replace("-->", "->").replace("\n", " ")
        out += [str(u.seq), f"{_clock(u.start_ms, vtt=True)} --> {_clock(end, vtt=True)}", f"<v {label}>{text}", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- the chain


def _test_pause(step: str) -> None:
    """A deliberately slow step for the worker-kill test (``POSTPROCESS_TEST_STEP_DELAY_SECONDS``); 0 in use."""
    delay = settings.POSTPROCESS_TEST_STEP_DELAY_SECONDS
    if delay > 0:
        logger.warning("test delay in step %s: %.1f s", step, delay)
        time.sleep(delay)


def _retranscribe(session: RealtimeSession, stereo: np.ndarray | None) -> dict[str, Any]:
    if stereo is None or not len(stereo):
        return {"status": "skipped", "reason": "no recording", "segments": []}
    options = RetranscribeOptions(
        model_path=settings.ARCHIVE_ASR_MODEL_PATH or settings.ASR_MODEL_PATH,
        language=session.scenario.language,
        beam_size=settings.ARCHIVE_ASR_BEAM_SIZE,
        cpu_threads=settings.ARCHIVE_ASR_CPU_THREADS,
    )
    try:
        return get_retranscriber().retranscribe(stereo, options)
    except RecordingUnreadable as exc:
        return {"status": "failed", "reason": str(exc), "segments": []}


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


def _process(session_id: str, version: int) -> str:
    session = RealtimeSession.objects.select_related("scenario", "trainee").get(pk=session_id)
    names = archive_names(session_id)
    files: dict[str, dict[str, Any]] = {}

    _progress(session_id, 3, "collecting the recording")
    from roleplay.recording_segments import recover_recording

    recover_recording(session_id=session_id)  # segments of a call whose media worker died: joined and attached
    _progress(session_id, 5, "loading the recording")
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
            files["recording"] = _describe_stored(names["recording"])
        else:
            _check_current(session_id, version)
            _progress(session_id, 15, "compressing the recording")
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

    _progress(session_id, 30, "transcribing the recording again")
    _test_pause("retranscribe")
    retranscript = _retranscribe(session, stereo)
    if recording_note:
        retranscript = {"status": "failed", "reason": recording_note, "segments": []}
    _check_current(session_id, version)
    files["retranscript"] = storage_put(names["retranscript"], _json(retranscript))
    analytics_service.session_retranscript_store(session_id=session_id, retranscript=retranscript)

    _progress(session_id, 65, "scoring the conversation")
    analytics = analytics_service.session_analytics_compute(session_id=session_id)

    _progress(session_id, 80, "writing the transcript")
    rows = list(session.utterances.order_by("seq"))
    persona = session.scenario.persona_name
    transcript = {
        "session_id": session_id, "scenario": session.scenario.slug, "language": session.scenario.language,
        "channels": {"left": "trainee", "right": "buyer"}, "utterances": [_utterance_dict(u) for u in rows],
    }
    files["transcript_json"] = storage_put(names["transcript_json"], _json(transcript))
    files["transcript_txt"] = storage_put(names["transcript_txt"], transcript_text(rows, persona=persona))
    files["transcript_vtt"] = storage_put(names["transcript_vtt"], transcript_vtt(rows, persona=persona))
    files["analytics"] = storage_put(names["analytics"], _json(_analytics_document(analytics)))

    _progress(session_id, 95, "writing the manifest")
    storage_put(names["manifest"], _json(_manifest(session, files)))

    return processing_finish(session_id=session_id, version=version, archived=archived,
                             source=source if source != names["recording"] else None)


def _describe_stored(name: str) -> dict[str, Any]:
    with default_storage.open(name, "rb") as handle:
        data = handle.read()
    return {"name": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "content_type": CONTENT_TYPES[".webm"]}


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


def _manifest(session: RealtimeSession, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": ARCHIVE_VERSION,
        "session_id": session.pk,
        "scenario": {"id": session.scenario_id, "slug": session.scenario.slug, "title": session.scenario.title},
        "trainee": session.trainee.username,
        "transport": session.transport,
        "started_at": session.started_at.isoformat(),
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        "end_reason": session.end_reason,
        "duration_seconds": session.duration_seconds,
        "turn_count": session.turn_count,
        "generated_at": timezone.now().isoformat(),
        "recording_purged_at": None,
        "files": files,
    }


# --------------------------------------------------------------------------- retention


def recordings_purge(*, older_than_days: int | None = None, now=None) -> list[str]:
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
        _manifest_mark_purged(session.pk)
        RealtimeSession.objects.filter(pk=session.pk).update(recording="")
        purged.append(session.pk)
    if purged:
        logger.info("purged %d recordings older than %d days", len(purged), days)
    return purged


def _manifest_mark_purged(session_id: str) -> None:
    name = archive_names(session_id)["manifest"]
    if not default_storage.exists(name):
        return
    with default_storage.open(name, "rb") as handle:
        manifest = json.loads(handle.read().decode("utf-8"))
    manifest["recording_purged_at"] = timezone.now().isoformat()
    manifest.get("files", {}).pop("recording", None)
    storage_put(name, _json(manifest))
