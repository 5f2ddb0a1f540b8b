"""Reads that only the pages need: review-list sorting, CSV rows, leaderboards, metric rows.

Every query starts from ``selectors.visible_sessions`` so the pages can never show more than the API.
The metric rows pair a session's numbers with ``analytics.benchmarks`` (where top performers land)
in the page's language, so the template only has to print them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import F, FloatField, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import get_language
from django.utils.translation import gettext as _

from roleplay import selectors
from roleplay.analytics.benchmarks import BENCHMARKS, Benchmark
from roleplay.models import RealtimeSession, Team, User

SORTS: dict[str, tuple[str, ...]] = {
    "date": ("started_at",),
    "trainee": ("trainee__username", "-started_at"),
    "scenario": ("scenario__title", "-started_at"),
    "score": ("score_value", "-started_at"),
}
DEFAULT_SORT = "-date"


def is_reviewer(user: User) -> bool:
    """Managers and admins review others; trainees only ever see their own sessions."""
    return bool(user.is_authenticated and (user.is_admin_role or user.is_manager_role))


def _with_score(qs: QuerySet[RealtimeSession]) -> QuerySet[RealtimeSession]:
    # The manager's override wins over the computed total, exactly as SessionAnalytics.effective_total.
    return qs.select_related("analytics").annotate(
        score_value=Coalesce(F("analytics__override_total"), F("analytics__total_score"), output_field=FloatField())
    )


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def review_sessions(
    *,
    user: User,
    trainee: str = "",
    scenario: int | None = None,
    since: date | None = None,
    until: date | None = None,
    sort: str = DEFAULT_SORT,
) -> QuerySet[RealtimeSession]:
    """The review list: filtered like the API, sorted by one column (prefix ``-`` for descending)."""
    qs = _with_score(
        selectors.session_list(
            user=user,
            trainee=trainee or None,
            scenario=scenario,
            since=_day_start(since) if since else None,
            until=_day_start(until + timedelta(days=1)) if until else None,
        )
    )
    key = sort.lstrip("-")
    fields = SORTS.get(key, SORTS["date"])
    descending = sort.startswith("-") if key in SORTS else True
    first = F(fields[0]).desc(nulls_last=True) if descending else F(fields[0]).asc(nulls_last=True)
    return qs.order_by(first, *fields[1:])


def trainee_history(*, user: User) -> QuerySet[RealtimeSession]:
    """The signed-in person's own sessions, oldest first (the chart reads left to right)."""
    return _with_score(selectors.visible_sessions(user=user).filter(trainee=user)).order_by("started_at")


CSV_HEADER = ("session", "trainee", "scenario", "started_at", "duration_s", "turns", "transport", "state", "score")


def csv_rows(sessions: Iterable[RealtimeSession]) -> Iterable[tuple[object, ...]]:
    yield CSV_HEADER
    for s in sessions:
        score = getattr(s, "score_value", None)
        duration = s.duration_seconds
        yield (
            s.pk,
            s.trainee.username,
            s.scenario.title,
            s.started_at.isoformat(),
            "" if duration is None else round(duration, 1),
            s.turn_count,
            s.transport,
            s.state,
            "" if score is None else round(score, 1),
        )


@dataclass(frozen=True)
class LeaderRow:
    trainee: str
    best: float
    average: float
    sessions: int


@dataclass(frozen=True)
class Board:
    team: str
    scenario: str
    rows: tuple[LeaderRow, ...]


def _teams_for(user: User) -> QuerySet[Team]:
    if user.is_admin_role:
        return Team.objects.all()
    if user.is_manager_role:
        return Team.objects.filter(managers=user)
    return Team.objects.filter(members=user)


def leaderboards(*, user: User) -> list[Board]:
    """Per team and scenario: trainees ranked by their best scored session (override wins)."""
    team_members: dict[int, set[int]] = defaultdict(set)
    team_names: dict[int, str] = {}
    for team_id, name, member_id in _teams_for(user).values_list("id", "name", "members__id"):
        team_names[team_id] = name
        if member_id is not None:
            team_members[team_id].add(member_id)
    scores: dict[tuple[int, int], list[float]] = defaultdict(list)  # (trainee, scenario) -> scores
    names: dict[int, str] = {}
    titles: dict[int, str] = {}
    for s in _with_score(selectors.visible_sessions(user=user)).filter(score_value__isnull=False):
        scores[(s.trainee_id, s.scenario_id)].append(s.score_value)
        names[s.trainee_id] = s.trainee.username
        titles[s.scenario_id] = s.scenario.title
    boards: list[Board] = []
    for team_id in sorted(team_names, key=lambda t: team_names[t]):
        for scenario_id in sorted(titles, key=lambda sc: titles[sc]):
            rows = [
                LeaderRow(names[tr], max(v), sum(v) / len(v), len(v))
                for (tr, sc), v in scores.items()
                if sc == scenario_id and tr in team_members[team_id]
            ]
            if rows:
                rows.sort(key=lambda r: (-r.best, -r.average, r.trainee))
                boards.append(Board(team_names[team_id], titles[scenario_id], tuple(rows)))
    return boards


# --------------------------------------------------------------------------- metric rows


def _lookup(metrics: Mapping[str, object], dotted: str) -> object:
    value: object = metrics
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    if isinstance(value, Mapping):
        # Per-speaker metrics ({"trainee": …, "buyer": …}) are benchmarked on the trainee's side.
        value = value.get("trainee")
    return value


def _fmt(value: float, unit: str) -> str:
    if unit == "fraction of speaking time":
        return f"{value * 100:.0f}%"
    if unit == "ms":
        return _("%(s).1f s") % {"s": value / 1000}
    if unit == "words per minute":
        return _("%(n).0f words/min") % {"n": value}
    if unit == "per 100 words":
        return _("%(n).1f per 100 words") % {"n": value}
    return f"{value:g}"


def _target(b: Benchmark) -> str:
    if b.low is not None and b.high is not None:
        return _("Top performers: %(low)s–%(high)s") % {"low": _fmt(b.low, b.unit), "high": _fmt(b.high, b.unit)}
    if b.low is not None:
        return _("Top performers: at least %(low)s") % {"low": _fmt(b.low, b.unit)}
    if b.value is not None and b.high is not None:
        return _("Top performers: about %(v)s, not above %(high)s") % {
            "v": _fmt(b.value, b.unit),
            "high": _fmt(b.high, b.unit),
        }
    if b.high is not None:
        return _("Top performers: at most %(high)s") % {"high": _fmt(b.high, b.unit)}
    return _("No target: top performers and others do not differ here")


def _chinese() -> bool:
    return (get_language() or "en").lower().startswith("zh")


def metric_rows(metrics: Mapping[str, object] | None) -> list[dict[str, object]]:
    """One row per benchmarked metric: label, the trainee's value, explanation, and the top performers' range."""
    if not metrics:
        return []
    zh = _chinese()
    rows: list[dict[str, object]] = []
    for b in BENCHMARKS:
        raw = _lookup(metrics, b.metric)
        value = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
        within = None
        if value is not None and (b.low is not None or b.high is not None):
            within = (b.low is None or value >= b.low) and (b.high is None or value <= b.high)
        rows.append(
            {
                "key": b.metric,
                "label": b.label_zh if zh else b.label_en,
                "value": value,
                "display": _fmt(value, b.unit) if value is not None else _("not measured"),
                "explain": b.explain_zh if zh else b.explain_en,
                "target": _target(b),
                "low": b.low,
                "high": b.high,
                "typical": b.value,
                "unit": b.unit,
                "within": within,
                "source": b.source,
                "url": b.url,
                "scale": _scale(value, b),
            }
        )
    return rows


def _scale(value: float | None, b: Benchmark) -> dict[str, float] | None:
    """Percent positions on one axis for the gauge: the trainee's value and the top performers' range."""
    if value is None:
        return None
    anchors = [x for x in (value, b.low, b.high, b.value) if x is not None]
    top = max(anchors) * 1.25 or 1.0
    pct = lambda x: round(100 * x / top, 1)  # noqa: E731
    return {
        "value": pct(value),
        "low": pct(b.low) if b.low is not None else 0.0,
        "high": pct(b.high) if b.high is not None else 100.0,
        "typical": pct(b.value) if b.value is not None else -1.0,
        "has_range": b.low is not None or b.high is not None,
    }


def extra_facts(metrics: Mapping[str, object] | None) -> list[tuple[str, str]]:
    """Counts with no published benchmark, shown as plain facts."""
    if not metrics:
        return []
    facts: list[tuple[str, str]] = []
    objections = metrics.get("objections")
    if isinstance(objections, Mapping):
        facts.append(
            (_("Objections handled"), f"{objections.get('handled', 0)} / {objections.get('raised', 0)}")
        )
    if "next_step_secured" in metrics:
        facts.append((_("Next step secured"), _("yes") if metrics["next_step_secured"] else _("no")))
    interruptions = metrics.get("interruptions")
    if isinstance(interruptions, Mapping):
        facts.append((_("Times you cut the buyer off"), str(interruptions.get("trainee", 0))))
    duration = metrics.get("duration_ms")
    if isinstance(duration, int | float):
        length = _("%(m)d min %(s)02d s") % {"m": duration // 60000, "s": duration // 1000 % 60}
        facts.append((_("Call length"), length))
    return facts


def rubric_rows(analytics: object | None) -> list[dict[str, object]]:
    """The rubric as computed, with any manager override next to the computed score."""
    if analytics is None:
        return []
    override = getattr(analytics, "override_rubric", None) or {}
    rows = []
    for c in getattr(analytics, "rubric", None) or []:
        if not isinstance(c, Mapping):
            continue
        key = str(c.get("key", ""))
        rows.append(
            {
                "key": key,
                "name": c.get("name", key),
                "score": c.get("score"),
                "override": override.get(key),
                "reason": c.get("reason", ""),
                "weight": c.get("normalised_weight", c.get("weight")),
            }
        )
    return rows
