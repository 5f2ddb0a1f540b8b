"""Turn a session's utterances into its ``SessionAnalytics`` row: metrics, rubric scores, weighted total.

The maths lives in ``roleplay.analytics`` (pure, unit-tested); this module only converts rows to
``Spoken``, picks the scenario's objections and rubric, and stores the result. Scores are rule-based
by default. With ``RUBRIC_JUDGE=llm`` and an ``OPENAI_API_KEY`` an OpenAI-compatible chat model judges
each criterion instead; if that call fails for any reason the rule-based scores are kept, so a model
outage never leaves a session unscored. A manager's override (``analytics_override``) lives in its
own fields and is never touched here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.db import transaction

from roleplay.analytics import Criterion, ObjectionSpec, Spoken, compute_all, score_rubric
from roleplay.analytics.benchmarks import as_dicts as benchmark_dicts
from roleplay.models import RealtimeSession, SessionAnalytics, Utterance, split_phrases

logger = logging.getLogger(__name__)


def _next_step_phrases() -> tuple[str, ...]:
    """The scripted buyer's own list of next-step proposals, so scoring and the buyer agree."""
    from roleplay.dialog.scripted.phrasebook import phrasebooks

    return phrasebooks().keywords.next_step_phrases()


def spoken_of(utterances: Sequence[Utterance]) -> list[Spoken]:
    return [Spoken(speaker=u.speaker, text=u.text, start_ms=u.start_ms, end_ms=u.end_ms) for u in utterances]


def objection_specs(session: RealtimeSession) -> list[ObjectionSpec]:
    return [
        ObjectionSpec(
            key=f"objection-{o.order or o.pk}",
            triggers=tuple(split_phrases(o.triggers)),
            handling=tuple(split_phrases(o.handling)),
        )
        for o in session.scenario.objections.all()
    ]


def rubric_criteria(session: RealtimeSession) -> list[Criterion]:
    return [
        Criterion(key=c.key, name=c.name, weight=c.weight, kind=c.kind, params=c.params or {})
        for c in session.scenario.rubric.all()
    ]


def _duration_ms(session: RealtimeSession, utts: Sequence[Spoken]) -> int | None:
    """Wall-clock length when known, but never shorter than the speech it contains."""
    seconds = session.duration_seconds
    if seconds is None:
        return None
    last = max((u.end_ms for u in utts), default=0)
    return max(int(seconds * 1000), last)


def compute_session_analytics(*, session: RealtimeSession) -> dict[str, Any]:
    """Metrics and rubric for one session as plain data (nothing stored)."""
    rows = list(session.utterances.order_by("seq"))
    utts = spoken_of(rows)
    metrics = compute_all(
        utts,
        language=session.scenario.language,
        objections=objection_specs(session),
        next_step_phrases=_next_step_phrases(),
        duration_ms=_duration_ms(session, utts),
    )
    metrics["benchmarks"] = benchmark_dicts()
    criteria = rubric_criteria(session)
    result = score_rubric(criteria, metrics, utts)
    seqs = [u.seq for u in rows]
    rubric: list[dict[str, Any]] = []
    for item in result.to_dict()["criteria"]:
        item = dict(item)
        item["evidence"] = list(item["evidence"])
        item["evidence_seq"] = [seqs[i] for i in item["evidence"] if 0 <= i < len(seqs)]
        item["judge"] = "rule"
        rubric.append(item)
    total = result.total
    judge = {"kind": "rule"}
    if settings.RUBRIC_JUDGE == "llm" and settings.OPENAI_API_KEY and rubric:
        try:
            rubric, total = llm_judge(session=session, rows=rows, rubric=rubric)
            judge = {"kind": "llm", "model": settings.RUBRIC_JUDGE_MODEL or settings.OPENAI_CHAT_MODEL}
        except Exception as exc:  # noqa: BLE001 - any model failure falls back to the rule-based scores
            logger.warning("rubric judge failed; keeping rule-based scores", extra={"session_id": session.pk})
            judge = {"kind": "rule", "llm_error": type(exc).__name__}
    metrics["judge"] = judge
    return {"metrics": metrics, "rubric": rubric, "total_score": total}


def session_analytics_compute(*, session_id: str) -> SessionAnalytics:
    """Compute and store; running it again updates the same row and keeps a manager's override."""
    session = RealtimeSession.objects.select_related("scenario").get(pk=session_id)
    data = compute_session_analytics(session=session)
    with transaction.atomic():
        # update_or_create only writes the computed fields: override_* and retranscript stay as they are.
        analytics, _ = SessionAnalytics.objects.update_or_create(session=session, defaults=data)
    return analytics


def session_retranscript_store(*, session_id: str, retranscript: dict[str, Any]) -> SessionAnalytics:
    with transaction.atomic():
        analytics, _ = SessionAnalytics.objects.update_or_create(
            session_id=session_id, defaults={"retranscript": retranscript}
        )
    return analytics


# --------------------------------------------------------------------------- optional model judge

_JUDGE_PROMPT = """You score a sales-training call. The trainee is the salesperson; the buyer is an AI persona.
For each rubric criterion give a score from 0 to 100, a one-sentence reason, and the seq numbers of the
utterances that show it. The rule-based score is given as a reference; depart from it when the transcript
justifies it. Answer with JSON only: {"criteria": [{"key": str, "score": number, "reason": str,
"evidence_seq": [int]}]}."""


def _judge_messages(session: RealtimeSession, rows: Sequence[Utterance], rubric: Sequence[dict]) -> list[dict]:
    transcript = "\n".join(f"[{u.seq}] {u.speaker}: {u.text}" for u in rows)
    criteria = [
        {"key": c["key"], "name": c["name"], "kind": c["kind"], "rule_score": c["score"], "rule_reason": c["reason"]}
        for c in rubric
    ]
    scenario = session.scenario
    user = (
        f"Scenario: {scenario.title}. Trainee goals: {'; '.join(scenario.goal_list) or 'none given'}.\n"
        f"Rubric: {json.dumps(criteria, ensure_ascii=False)}\n\nTranscript:\n{transcript}"
    )
    return [{"role": "system", "content": _JUDGE_PROMPT}, {"role": "user", "content": user}]


def llm_judge(
    *, session: RealtimeSession, rows: Sequence[Utterance], rubric: list[dict]
) -> tuple[list[dict], float | None]:
    """Ask an OpenAI-compatible chat endpoint to score each criterion; keep the weights and the evidence shape.

    Criteria the model leaves out keep their rule-based score. Raises on HTTP or parse errors (the
    caller falls back to the rule-based result).
    """
    import httpx

    response = httpx.post(
        settings.OPENAI_BASE_URL.rstrip("/") + "/chat/completions",
        headers={"Authorization": f"Bearer {settings.OPENAI_API_KEY}"},
        json={
            "model": settings.RUBRIC_JUDGE_MODEL or settings.OPENAI_CHAT_MODEL,
            "messages": _judge_messages(session, rows, rubric),
            "temperature": 0,
            "response_format": {"type": "json_object"},
        },
        timeout=settings.ENGINE_TIMEOUT_SECONDS * 3,
    )
    response.raise_for_status()
    content = response.json()["choices"][0]["message"]["content"]
    judged = {str(c["key"]): c for c in json.loads(content).get("criteria", [])}
    seq_to_index = {u.seq: i for i, u in enumerate(rows)}
    out: list[dict] = []
    for item in rubric:
        item = dict(item)
        verdict = judged.get(item["key"])
        if verdict is not None:
            item["rule_score"] = item["score"]
            item["score"] = round(min(100.0, max(0.0, float(verdict["score"]))), 2)
            item["reason"] = str(verdict.get("reason", ""))[:500]
            seqs = [int(s) for s in verdict.get("evidence_seq", []) if int(s) in seq_to_index]
            item["evidence_seq"] = seqs
            item["evidence"] = [seq_to_index[s] for s in seqs]
            item["judge"] = "llm"
        out.append(item)
    weight_sum = sum(c["weight"] for c in out)
    total = round(sum(c["normalised_weight"] * c["score"] for c in out), 2) if weight_sum > 0 else None
    return out, total
