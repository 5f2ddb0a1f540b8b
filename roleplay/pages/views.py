"""Server-rendered pages. Thin: they call selectors/queries and hand data to templates.

Authorisation is the API's: every session page goes through ``selectors.session_get`` (trainee →
own, manager → teams', admin → all) and answers 404 for anything else, never 403.
"""

from __future__ import annotations

import csv
from datetime import date
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _

from roleplay import selectors
from roleplay.errors import NotFound, SessionNotFound
from roleplay.models import RealtimeSession, SessionAnalytics
from roleplay.pages import queries
from roleplay.pages.js_strings import js_strings
from roleplay.pages.media import media_url


def _session_or_404(request: HttpRequest, session_id: str) -> RealtimeSession:
    try:
        return selectors.session_get(user=request.user, session_id=session_id)
    except SessionNotFound:
        raise Http404 from None


def _analytics(session: RealtimeSession) -> SessionAnalytics | None:
    try:
        return session.analytics
    except SessionAnalytics.DoesNotExist:
        return None


def reviewer_required(view):
    """Review lists are for managers and admins; a trainee is sent to their own history instead."""

    @wraps(view)
    @login_required
    def wrapper(request: HttpRequest, *args, **kwargs):
        if not queries.is_reviewer(request.user):
            return redirect("history")
        return view(request, *args, **kwargs)

    return wrapper


@login_required
def scenario_list(request: HttpRequest) -> HttpResponse:
    best = selectors.best_scores(user=request.user)
    scenarios = [
        {"scenario": s, "best": best.get(s.pk)} for s in selectors.scenario_list().prefetch_related("objections")
    ]
    return render(request, "roleplay/scenarios.html", {"scenarios": scenarios})


@login_required
def practice(request: HttpRequest, scenario_id: int) -> HttpResponse:
    try:
        scenario = selectors.scenario_get(scenario_id=scenario_id)
    except NotFound:
        raise Http404 from None
    transport = request.GET.get("transport", "")
    config = {
        "scenarioId": scenario.pk,
        "sessionId": request.GET.get("session") or None,
        "transport": transport if transport in ("webrtc", "chunk") else "auto",
        "language": scenario.language,
        "maxTurns": scenario.max_turns,
        "timeLimitSeconds": scenario.time_limit_seconds,
        "wsPath": "/ws/voice/",
        "socketioPath": "/socket.io/",
        "readyzUrl": reverse("readyz"),
        "resultUrl": reverse("result", kwargs={"session_id": "SESSION"}),
        "personaName": scenario.persona_name,
    }
    context = {
        "scenario": scenario,
        "avatar_image": media_url(scenario.avatar_image.name) if scenario.avatar_image else "",
        "avatar_video": media_url(scenario.avatar_video.name) if scenario.avatar_video else "",
        "config": config,
        "strings": js_strings(),
    }
    return render(request, "roleplay/practice.html", context)


def _clock(ms: int) -> str:
    seconds = max(0, int(ms)) // 1000
    return f"{seconds // 60}:{seconds % 60:02d}"


def _turn_end_note(facts: dict) -> str:
    """One line for the reviewer: how the end of this turn was decided (empty for typed turns)."""
    if not facts or not facts.get("decision"):
        return ""
    parts = [{"complete": _("ended: complete"), "patience_expired": _("ended: pause outlasted the patience"),
              "stream_end": _("ended: audio stopped"), "too_short": _("ended: too short")}.get(
                  facts["decision"], str(facts["decision"]))]
    if facts.get("probability") is not None:
        parts.append(_("p(complete) %(p).2f") % {"p": facts["probability"]})
    if facts.get("waited_ms") is not None:
        parts.append(_("after %(ms)d ms of pause") % {"ms": facts["waited_ms"]})
    if facts.get("cue"):
        parts.append(_("waited after “%(cue)s”") % {"cue": facts["cue"]})
    return " · ".join(parts)


def _transcript(session: RealtimeSession) -> list[dict[str, object]]:
    return [
        {
            "seq": u.seq,
            "speaker": u.speaker,
            "text": u.text,
            "start_ms": u.start_ms,
            "end_ms": u.end_ms,
            "typed": u.source == u.Source.TEXT,
            "interrupted": u.interrupted,
            "turn_end": _turn_end_note(u.turn_end),
            "at": _clock(u.start_ms),
        }
        for u in selectors.session_utterances(session=session)
    ]


def _comments(session: RealtimeSession) -> list[dict[str, object]]:
    return [
        {
            "author": c.author.username,
            "offset_ms": c.offset_ms,
            "at": _clock(c.offset_ms),
            "text": c.text,
            "created_at": c.created_at.isoformat(),
        }
        for c in session.comments.select_related("author").order_by("offset_ms", "id")
    ]


def _session_context(session: RealtimeSession) -> dict[str, object]:
    analytics = _analytics(session)
    metrics = analytics.metrics if analytics else None
    return {
        "session": session,
        "analytics": analytics,
        "score": analytics.effective_total if analytics else None,
        "metric_rows": queries.metric_rows(metrics),
        "facts": queries.extra_facts(metrics),
        "rubric": queries.rubric_rows(analytics),
        "transcript": _transcript(session),
        "comments": _comments(session),
        "timeline": (metrics or {}).get("timeline") or [],
        "strings": js_strings(),
    }


@login_required
def result(request: HttpRequest, session_id: str) -> HttpResponse:
    """Right after the call: progress while after-call processing runs, then score, metrics, transcript."""
    session = _session_or_404(request, session_id)
    context = _session_context(session)
    finished = (RealtimeSession.Processing.DONE, RealtimeSession.Processing.FAILED)
    context["processing_done"] = session.processing in finished
    context["poll"] = {"apiUrl": f"/api/sessions/{session.pk}/", "processing": session.processing}
    return render(request, "roleplay/result.html", context)


@login_required
def history(request: HttpRequest) -> HttpResponse:
    sessions = list(queries.trainee_history(user=request.user))
    points = [
        {"date": s.started_at.date().isoformat(), "score": round(s.score_value, 1), "scenario": s.scenario.title}
        for s in sessions
        if s.score_value is not None
    ]
    return render(
        request,
        "roleplay/history.html",
        {"sessions": list(reversed(sessions)), "points": points, "strings": js_strings()},
    )


def _parse_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _parse_int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


class _Echo:
    """A file-like that hands back what csv.writer writes, so rows can be streamed."""

    def write(self, value: str) -> str:
        return value


@reviewer_required
def review_list(request: HttpRequest) -> HttpResponse:
    params = request.GET
    sort = params.get("sort") or queries.DEFAULT_SORT
    filters = {
        "trainee": params.get("trainee", "").strip(),
        "scenario": _parse_int(params.get("scenario")),
        "since": _parse_date(params.get("since")),
        "until": _parse_date(params.get("until")),
    }
    sessions = queries.review_sessions(user=request.user, sort=sort, **filters)
    if params.get("format") == "csv":
        writer = csv.writer(_Echo())
        response = StreamingHttpResponse(
            (writer.writerow(row) for row in queries.csv_rows(sessions.iterator())), content_type="text/csv"
        )
        response["Content-Disposition"] = 'attachment; filename="lingecho-sessions.csv"'
        return response
    query = params.copy()
    query.pop("sort", None)
    query.pop("format", None)
    columns = []
    for key in ("trainee", "scenario", "date", "score"):
        current = sort.lstrip("-") == key
        descending = sort.startswith("-")
        next_sort = key if current and descending else f"-{key}"
        columns.append({"key": key, "current": current, "descending": current and descending, "next": next_sort})
    visible = selectors.visible_sessions(user=request.user)
    context = {
        "sessions": sessions[:200],
        "filters": filters,
        "sort": sort,
        "columns": {c["key"]: c for c in columns},
        "base_query": query.urlencode(),
        "trainees": sorted(set(visible.values_list("trainee__username", flat=True))),
        "scenarios": selectors.scenario_list(include_inactive=True),
        "csv_query": (query.urlencode() + "&" if query else "") + f"sort={sort}&format=csv",
    }
    return render(request, "roleplay/review_list.html", context)


@reviewer_required
def leaderboard(request: HttpRequest) -> HttpResponse:
    return render(request, "roleplay/leaderboard.html", {"boards": queries.leaderboards(user=request.user)})


def _recording_name(session: RealtimeSession) -> str:
    """The stored recording to play: the session's own, else the archived copy if the pointer is stale.

    After-call processing replaces the raw WAV with a compressed archive copy; a late writer can leave
    ``session.recording`` naming the deleted raw file, and a broken player helps nobody.
    """
    candidates = [session.recording.name if session.recording else ""]
    if session.archive_prefix:
        candidates.append(session.archive_prefix.rstrip("/") + "/recording.webm")
    for name in candidates:
        if name and default_storage.exists(name):
            return name
    return ""


@login_required
def review_detail(request: HttpRequest, session_id: str) -> HttpResponse:
    """The recording with the transcript in sync, timeline, charts, rubric and comments.

    Trainees reach the same page for their own sessions (read-only): that is where they see the
    manager's timestamped comments.
    """
    session = _session_or_404(request, session_id)
    context = _session_context(session)
    context.update(
        {
            "recording_url": media_url(name) if (name := _recording_name(session)) else "",
            "can_review": queries.is_reviewer(request.user),
            "review": {
                "commentUrl": f"/api/sessions/{session.pk}/comments/",
                "overrideUrl": f"/api/sessions/{session.pk}/score-override/",
            },
        }
    )
    return render(request, "roleplay/review_detail.html", context)


@login_required
def recording(request: HttpRequest, session_id: str) -> HttpResponseRedirect:
    """The API's ``recording`` link: authorise, then hand out a signed, expiring media URL."""
    name = _recording_name(_session_or_404(request, session_id))
    if not name:
        raise Http404
    return HttpResponseRedirect(media_url(name))
