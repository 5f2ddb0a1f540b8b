"""Writes. Every change to sessions, utterances, reviews goes through a function here.

Transports (the LingEcho consumer, the Socket.IO consumer, the REST API, the media worker) call
these and never touch the ORM for writes themselves, so a WebRTC call, a chunked call and a typed
call leave exactly the same record behind.
"""

from __future__ import annotations

import logging
import random

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from roleplay import lifecycle, recording_segments
from roleplay.after_call.job import AWAITING_RECORDING
from roleplay.errors import LiveSessionLimit, PermissionDenied, SessionEnded, SessionNotFound, SessionNotResumable
from roleplay.models import RealtimeSession, ReviewComment, Scenario, SessionAnalytics, User, Utterance

logger = logging.getLogger(__name__)

LIVE_STATES = (RealtimeSession.State.LIVE, RealtimeSession.State.DROPPED)


@transaction.atomic
def session_create(
    *, trainee: User, scenario: Scenario, transport: str, seed: int | None = None, joined: bool = True
) -> RealtimeSession:
    """A new live session, owned by this process; refused past ``MAX_LIVE_SESSIONS_PER_USER``.

    ``joined`` is False for a session created over REST that a socket will attach to later
    (``session_resume``): until then no process holds it, and unjoined for ``SESSION_RESUME_SECONDS``
    it ends as ``abandoned``. The trainee's stale sessions (``roleplay.lifecycle``) are ended first,
    so only sessions that are really live count against the limit.
    """
    lifecycle.sessions_expire(trainee=trainee)
    live = RealtimeSession.objects.select_for_update().filter(trainee=trainee, state__in=LIVE_STATES).count()
    if live >= settings.MAX_LIVE_SESSIONS_PER_USER:
        raise LiveSessionLimit(
            "Too many live sessions; end one before starting another.",
            limit=settings.MAX_LIVE_SESSIONS_PER_USER,
        )
    return RealtimeSession.objects.create(
        trainee=trainee,
        scenario=scenario,
        transport=transport,
        seed=seed if seed is not None else random.SystemRandom().randrange(1, 2**31),
        joined_at=timezone.now() if joined else None,
        owner=lifecycle.owner_id() if joined else "",
    )


def session_resume(*, user: User, session_id: str) -> RealtimeSession:
    """Attach to a live or recently dropped session of one's own (or join one created over REST).

    A session that has expired by the lifecycle rules (never joined, or gone, for longer than the
    window) is ended and refused: the end is committed before the refusal is raised, so it sticks.
    Otherwise this process becomes the session's owner.
    """
    with transaction.atomic():
        try:
            session = RealtimeSession.objects.select_for_update().get(pk=session_id)
        except RealtimeSession.DoesNotExist:
            raise SessionNotFound("No such session.", session_id=session_id) from None
        if session.trainee_id != user.pk:
            # Same answer as a missing session: never confirm that someone else's id exists.
            raise SessionNotFound("No such session.", session_id=session_id)
        if session.state == RealtimeSession.State.ENDED:
            raise SessionNotResumable("This session has ended.", session_id=session_id, reason=session.end_reason)
        now = timezone.now()
        judge_owner = session.state == RealtimeSession.State.LIVE and session.joined_at is not None
        owners = lifecycle.Owners.read({session.owner}) if judge_owner else None
        reason = lifecycle.expiry_reason(session, now=now, owners=owners)
        if reason is None:
            session.state = RealtimeSession.State.LIVE
            session.last_seen_at = now
            session.joined_at = session.joined_at or now
            session.owner = lifecycle.owner_id()
            session.save(update_fields=["state", "last_seen_at", "joined_at", "owner"])
            return session
        session_end(session=session, reason=reason)
    raise SessionNotResumable("The resume window has passed.", session_id=session_id, reason=reason)


def session_mark_dropped(*, session_id: str) -> None:
    """The socket went away without a disconnect message: keep the session resumable for a while."""
    RealtimeSession.objects.filter(pk=session_id, state=RealtimeSession.State.LIVE).update(
        state=RealtimeSession.State.DROPPED, last_seen_at=timezone.now()
    )


def session_touch(*, session_id: str) -> None:
    RealtimeSession.objects.filter(pk=session_id).update(last_seen_at=timezone.now())


def session_set_transport(*, session_id: str, transport: str, audio_metadata: dict | None = None) -> None:
    fields: dict = {"transport": transport}
    if audio_metadata is not None:
        fields["audio_metadata"] = audio_metadata
    RealtimeSession.objects.filter(pk=session_id).update(**fields)


def session_end(*, session: RealtimeSession, reason: str) -> RealtimeSession:
    """End once; later calls are no-ops. After-call processing is dispatched once, after commit.

    Once: when a recorder is still writing this call (a media worker closing the peer after the
    consumer ended the session), the job is dispatched when that recording is stored
    (``session_recording_stored``) instead of now, so it runs over the whole recording the first
    time rather than twice. A writer that dies leaves the session to the sweeper once its lease
    runs out (``after_call.job.processing_orphans_claim``).

    ``reason`` is a transport's own word for why the call ended; one that is not an EndReason is
    stored as ``error`` rather than a guess at the trainee's intent.
    """
    if reason not in RealtimeSession.EndReason.values:
        reason = RealtimeSession.EndReason.ERROR
    with transaction.atomic():
        locked = RealtimeSession.objects.select_for_update().get(pk=session.pk)
        if locked.state == RealtimeSession.State.ENDED:
            return locked
        locked.state = RealtimeSession.State.ENDED
        locked.end_reason = reason
        locked.ended_at = timezone.now()
        fields = ["state", "end_reason", "ended_at"]
        if recording_segments.writer_active(locked.pk):
            locked.processing_detail = AWAITING_RECORDING  # the sweeper's cue if that recorder dies
            fields.append("processing_detail")
        else:
            transaction.on_commit(lambda: _dispatch_post_session(locked.pk))
        locked.save(update_fields=fields)
    logger.info("session ended", extra={"session_id": locked.pk, "reason": reason})
    return locked


def _dispatch_post_session(session_id: str) -> None:
    """After-call work (archive, analytics). Imported lazily: the tasks module pulls in Celery."""
    try:
        from roleplay.tasks import process_session
    except ImportError:  # the tasks module is optional until the Celery jobs exist
        return
    try:
        process_session.delay(session_id)
    except Exception:  # noqa: BLE001 - a broker outage must not fail the call's end; the sweeper retries
        logger.exception("could not dispatch after-call processing", extra={"session_id": session_id})


def session_elapsed_ms(*, session: RealtimeSession) -> int:
    return int((timezone.now() - session.started_at).total_seconds() * 1000)


def utterance_append(
    *,
    session: RealtimeSession,
    speaker: str,
    text: str,
    source: str = Utterance.Source.VOICE,
    start_ms: int | None = None,
    end_ms: int | None = None,
    confidence: float | None = None,
    language: str = "",
    interim_count: int = 0,
    interrupted: bool = False,
    latency: dict[str, float | None] | None = None,
    turn_end: dict | None = None,
) -> Utterance:
    """Persist one turn as it happens; trainee turns advance the session's turn count.

    ``seq`` is assigned under a row lock on the session so two transports writing at once (a
    typed turn while a voice turn finalises) never collide.
    """
    for attempt in range(3):
        try:
            with transaction.atomic():
                locked = RealtimeSession.objects.select_for_update().get(pk=session.pk)
                if locked.state == RealtimeSession.State.ENDED and speaker == Utterance.Speaker.TRAINEE:
                    raise SessionEnded("The session has ended.", session_id=session.pk)
                seq = (locked.utterances.aggregate(m=Max("seq"))["m"] or 0) + 1
                now_ms = session_elapsed_ms(session=locked)
                utterance = Utterance.objects.create(
                    session=locked,
                    seq=seq,
                    speaker=speaker,
                    source=source,
                    text=text,
                    language=language or locked.scenario.language,
                    start_ms=max(0, start_ms if start_ms is not None else now_ms),
                    end_ms=max(0, end_ms if end_ms is not None else now_ms),
                    confidence=confidence,
                    interim_count=interim_count,
                    interrupted=interrupted,
                    turn_end=turn_end or {},
                    **{k: v for k, v in (latency or {}).items() if k in _LATENCY_FIELDS},
                )
                update = {"last_seen_at": timezone.now()}
                if speaker == Utterance.Speaker.TRAINEE:
                    update["turn_count"] = F("turn_count") + 1
                RealtimeSession.objects.filter(pk=locked.pk).update(**update)
                return utterance
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


_LATENCY_FIELDS = {"endpointing_ms", "asr_final_ms", "brain_first_token_ms", "tts_first_audio_ms", "turn_latency_ms"}


def utterance_update(*, utterance_id: int, **fields: object) -> None:
    """Late facts about a turn: what was actually played (text, when, how), latency figures."""
    allowed = _LATENCY_FIELDS | {"text", "start_ms", "end_ms", "interrupted", "source", "turn_end"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    Utterance.objects.filter(pk=utterance_id).update(**fields)


def utterance_withdraw(*, session_id: str, utterance_id: int) -> None:
    """A buyer reply that yielded to the trainee before it was heard is not part of the conversation.

    Only a buyer utterance is ever removed (a trainee's words are never lost this way); its ``seq``
    stays a gap, which orders the transcript exactly as before.
    """
    Utterance.objects.filter(pk=utterance_id, session_id=session_id, speaker=Utterance.Speaker.BUYER).delete()


def comment_create(*, author: User, session: RealtimeSession, offset_ms: int, text: str) -> ReviewComment:
    if not (author.is_admin_role or author.is_manager_role):
        raise PermissionDenied("Only managers can comment on sessions.")
    return ReviewComment.objects.create(session=session, author=author, offset_ms=max(0, offset_ms), text=text.strip())


@transaction.atomic
def analytics_override(
    *, manager: User, session: RealtimeSession, scores: dict[str, float], total: float | None
) -> SessionAnalytics:
    """A manager's judgement wins but never overwrites the computed scores: both are kept."""
    if not (manager.is_admin_role or manager.is_manager_role):
        raise PermissionDenied("Only managers can override scores.")
    analytics, _ = SessionAnalytics.objects.get_or_create(session=session)
    analytics.override_rubric = {str(k): float(v) for k, v in scores.items()}
    analytics.override_total = total
    analytics.overridden_by = manager
    analytics.save(update_fields=["override_rubric", "override_total", "overridden_by", "computed_at"])
    return analytics


def session_recording_saving(*, session_id: str) -> None:
    """A recording of this session is about to be written: after-call processing must not delete it.

    Called by ``CallRecorder.save`` before it replaces the stored WAV (same name every time).
    Without this mark, a processing run that loaded the previous recording could delete the file
    being written. Processing checks the mark under the session's row lock, which this update takes too.
    """
    RealtimeSession.objects.filter(pk=session_id).update(recording_saving_since=timezone.now())


def session_recording_save_failed(*, session_id: str) -> None:
    """The write announced by ``session_recording_saving`` did not happen: lift the mark."""
    RealtimeSession.objects.filter(pk=session_id).update(recording_saving_since=None)


def session_recording_stored(*, session_id: str) -> None:
    """A complete recording is in storage: a newer version, and for an ended session, process it (again).

    The recording is stored after the session ends (the media worker saves it once the peer is
    closed; the chunk fallback after ``session_end``), so after-call processing may already have
    run or be running without it. The bumped ``recording_version`` makes a finished run redo its
    work and a running one stop without touching the recording; the dispatch happens after commit.
    """
    with transaction.atomic():
        session = RealtimeSession.objects.select_for_update().filter(pk=session_id).first()
        if session is None:
            return
        session.recording_version += 1
        session.recording_saving_since = None
        session.save(update_fields=["recording_version", "recording_saving_since"])
        if session.state == RealtimeSession.State.ENDED:
            transaction.on_commit(lambda: _dispatch_post_session(session.pk))


def session_attach_recording(*, session_id: str, name: str, audio_metadata: dict) -> bool:
    """The media worker stored the call's recording under ``name``: point the session at it.

    ``audio_metadata`` is merged into what is already there (the transport may have written codec
    facts), so neither side overwrites the other. A name that is not in storage is never attached
    (returns False): after-call processing may already have archived that WAV and deleted it, and
    the session then keeps pointing at the archived copy. Processing itself was dispatched when the
    recording was stored (``session_recording_stored``).
    """
    from django.core.files.storage import default_storage

    with transaction.atomic():
        session = RealtimeSession.objects.select_for_update().get(pk=session_id)
        session.audio_metadata = {**(session.audio_metadata or {}), **audio_metadata}
        fields = ["audio_metadata"]
        # Checked under the row lock: processing deletes the raw WAV under the same lock.
        attached = default_storage.exists(name)
        if attached:
            session.recording.name = name
            fields.append("recording")
        else:
            logger.info("recording not attached: %s is not in storage (already archived?)", name,
                        extra={"session_id": session_id})
        session.save(update_fields=fields)
    return attached
