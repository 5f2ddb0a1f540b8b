"""Reads. Every query that depends on who is asking goes through ``visible_sessions``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Max, Q, QuerySet
from django.utils import timezone

from roleplay.dialog.base import ObjectionBrief, ScenarioBrief, Turn
from roleplay.errors import NotFound, SessionNotFound
from roleplay.models import RealtimeSession, Scenario, Team, User, Utterance, split_lines, split_phrases


def scenario_list(*, include_inactive: bool = False) -> QuerySet[Scenario]:
    qs = Scenario.objects.all()
    return qs if include_inactive else qs.filter(is_active=True)


def scenario_get(*, scenario_id: int | str) -> Scenario:
    try:
        return Scenario.objects.prefetch_related("objections", "rubric").get(pk=int(scenario_id), is_active=True)
    except (Scenario.DoesNotExist, ValueError, TypeError):
        raise NotFound("No such scenario.", scenario=str(scenario_id)) from None


def team_member_ids(*, manager: User) -> set[int]:
    return set(Team.objects.filter(managers=manager).values_list("members__id", flat=True)) - {None}


def visible_sessions(*, user: User) -> QuerySet[RealtimeSession]:
    """Object-level authorisation in one place: trainee → own, manager → teams' (and own), admin → all."""
    qs = RealtimeSession.objects.select_related("trainee", "scenario")
    if user.is_admin_role:
        return qs
    if user.is_manager_role:
        return qs.filter(Q(trainee_id__in=team_member_ids(manager=user)) | Q(trainee=user))
    return qs.filter(trainee=user)


def session_list(
    *,
    user: User,
    trainee: str | None = None,
    scenario: int | None = None,
    state: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[RealtimeSession]:
    qs = visible_sessions(user=user).select_related("analytics")
    if trainee:
        qs = qs.filter(trainee__username=trainee)
    if scenario:
        qs = qs.filter(scenario_id=scenario)
    if state:
        qs = qs.filter(state=state)
    if since:
        qs = qs.filter(started_at__gte=since)
    if until:
        qs = qs.filter(started_at__lt=until)
    return qs


def session_get(*, user: User, session_id: str) -> RealtimeSession:
    """404 (not 403) for someone else's session: existence is not disclosed."""
    try:
        return visible_sessions(user=user).get(pk=session_id)
    except RealtimeSession.DoesNotExist:
        raise SessionNotFound("No such session.", session_id=session_id) from None


def session_utterances(*, session: RealtimeSession) -> QuerySet[Utterance]:
    return session.utterances.order_by("seq")


def conversation_history(*, session: RealtimeSession) -> list[Turn]:
    return [Turn(speaker=u.speaker, text=u.text) for u in session.utterances.order_by("seq")]


def scenario_brief(*, scenario: Scenario) -> ScenarioBrief:
    """The plain, Django-free view of a scenario that buyer brains work from."""
    return ScenarioBrief(
        id=str(scenario.pk),
        title=scenario.title,
        language=scenario.language,
        difficulty=scenario.difficulty,
        persona_name=scenario.persona_name,
        persona_title=scenario.persona_title,
        company=scenario.company,
        industry=scenario.industry,
        personality=scenario.personality,
        background=scenario.background,
        concerns=tuple(split_lines(scenario.concerns)),
        opening_line=scenario.opening_line,
        objections=tuple(
            ObjectionBrief(
                key=f"obj-{o.pk}",
                statement=o.statement,
                triggers=tuple(split_phrases(o.triggers)),
                handling=tuple(split_phrases(o.handling)),
            )
            for o in scenario.objections.all()
        ),
        buying_signals=tuple(split_lines(scenario.buying_signals)),
        next_step_conditions=tuple(split_lines(scenario.next_step_conditions)),
        max_turns=scenario.max_turns,
        goals=tuple(split_lines(scenario.goals)),
    )


def best_scores(*, user: User) -> dict[int, float]:
    """scenario id → the trainee's best total score so far (override wins)."""
    rows = (
        RealtimeSession.objects.filter(trainee=user, analytics__isnull=False)
        .values("scenario_id")
        .annotate(best=Max("analytics__total_score"), best_override=Max("analytics__override_total"))
    )
    return {
        r["scenario_id"]: max(v for v in (r["best"], r["best_override"]) if v is not None)
        for r in rows
        if r["best"] is not None or r["best_override"] is not None
    }


@dataclass(frozen=True)
class CallFacts:
    """What the media side needs to know of a session to run its call, read once (no ORM objects
    held by a call): the scenario's language, voice, engines, limits and turn-taking patience."""

    session_id: str
    started_at: datetime
    ended: bool
    language: str
    voice: str
    max_turns: int
    asr_engine: str
    tts_engine: str
    video_name: str
    turn_patience_ms: int | None

    @property
    def patience_ms(self) -> int:
        """The longest pause inside a trainee turn on this call: the scenario's, else ``TURN_PATIENCE_MS``."""
        return self.turn_patience_ms or settings.TURN_PATIENCE_MS

    def elapsed_ms(self) -> int:
        """Milliseconds since the session started: the call's timeline (utterances, recording)."""
        return max(0, int((timezone.now() - self.started_at).total_seconds() * 1000))


def session_call_facts(*, session_id: str) -> CallFacts:
    """Raises ``RealtimeSession.DoesNotExist`` for an unknown session."""
    session = RealtimeSession.objects.select_related("scenario").get(pk=session_id)
    scenario = session.scenario
    return CallFacts(
        session_id=session.pk,
        started_at=session.started_at,
        ended=session.state == RealtimeSession.State.ENDED,
        language=scenario.language,
        voice=scenario.voice,
        max_turns=scenario.max_turns,
        asr_engine=scenario.asr_engine,
        tts_engine=scenario.tts_engine,
        video_name=scenario.avatar_video.name if scenario.avatar_video else "",
        turn_patience_ms=scenario.turn_patience_ms,
    )
