"""Rule-based rubric scoring: each criterion becomes a 0–100 score with evidence, then a weighted total.

A scenario's rubric is a list of ``Criterion``; ``score_rubric`` reads the metrics dict produced by
``metrics.compute_all`` and the utterances (to point at evidence). No model, no randomness: the same
call always gets the same score, and every number can be explained from the formulas below.

Weighted total::

    total = Σ (weight_i × score_i) / Σ weight_i     (weights ≥ 0)
    normalised_weight_i = weight_i / Σ weight

``total`` is ``None`` when there are no criteria or every weight is 0. A negative weight or an unknown
kind raises ``ValueError`` (a configuration mistake, caught by ``validate_criteria`` at save time).

Per kind (``params`` defaults in brackets; ``clamp`` keeps a score in 0..100):

* ``talk_ratio`` — params ``low`` [0.35], ``high`` [0.50], ``falloff`` [0.25]. With ``r`` the trainee's
  talk ratio and ``d`` its distance outside ``[low, high]`` (0 inside):
  ``score = clamp(100 × (1 − d / falloff))``. Nobody spoke → 0.
  Evidence: the trainee's three longest utterances.
* ``questions`` — params ``target`` [11]: ``score = min(100, 100 × questions / target)``.
  Evidence: trainee utterances containing a question.
* ``objection_handling`` — params ``if_none`` [100]: ``score = 100 × handled / raised``;
  ``if_none`` when no objection was raised. Evidence: where each objection was raised and handled.
* ``next_step`` — params ``phrases`` [use ``metrics["next_step_secured"]``]: 100 if a next step was
  secured, else 0. Evidence: utterances containing a phrase.
* ``discovery`` — params ``pitch_keywords`` [], ``target`` [3]. The pitch starts at the first trainee
  utterance containing a pitch keyword (none → no pitch, every utterance counts as before it);
  ``score = min(100, 100 × questions before the pitch / target)``. Evidence: those question utterances
  and the pitch utterance.
* ``fillers`` — params ``max_rate`` [5.0 per 100 words]: ``score = 100`` when ``rate ≤ max_rate``, else
  ``clamp(100 × (2 − rate / max_rate))`` (linear to 0 at twice the limit). Trainee said nothing → 0.
  Evidence: trainee utterances containing a filler.
* ``listening`` — params ``target_patience_ms`` [600], ``interruption_penalty`` [25]:
  ``patience_part = min(100, 100 × patience_ms / target_patience_ms)``,
  ``interruption_part = clamp(100 − interruption_penalty × trainee interruptions)``,
  ``score = (patience_part + interruption_part) / 2``; when there is no patience value (no clean
  buyer → trainee hand-off) ``score = interruption_part``. Evidence: the trainee's interrupting
  utterances.
* ``keywords`` — params ``keywords`` (required), ``speaker`` ["trainee"; ``None`` for both]:
  ``score = 100 × keywords said / keywords``. Evidence: the first utterance for each keyword said.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from roleplay.analytics.fillers import count_fillers
from roleplay.analytics.metrics import (
    TRAINEE,
    Spoken,
    count_questions,
    find_phrases,
    interruption_events,
    question_utterances,
)

KINDS: tuple[str, ...] = (
    "talk_ratio", "questions", "objection_handling", "next_step", "discovery", "fillers", "listening",
    "keywords",
)


@dataclass(frozen=True)
class Criterion:
    """One rubric line as the scenario defines it."""

    key: str
    name: str
    weight: float
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CriterionScore:
    """A scored criterion: 0–100, why, and which utterances (indices into the call) show it."""

    key: str
    name: str
    kind: str
    weight: float
    normalised_weight: float
    score: float
    reason: str
    evidence: tuple[int, ...]


@dataclass(frozen=True)
class RubricResult:
    """All criterion scores and the weighted total (``None`` when nothing could be weighted)."""

    total: float | None
    criteria: tuple[CriterionScore, ...]

    def to_dict(self) -> dict[str, object]:
        return {"total": self.total, "criteria": [asdict(c) for c in self.criteria]}


def validate_criteria(criteria: Sequence[Criterion]) -> None:
    """Raise ``ValueError`` for an unknown kind, a negative weight, a duplicate key or missing keywords."""
    seen: set[str] = set()
    for c in criteria:
        if c.kind not in KINDS:
            raise ValueError(f"criterion {c.key!r}: unknown kind {c.kind!r}; expected one of {KINDS}")
        if c.weight < 0:
            raise ValueError(f"criterion {c.key!r}: weight must be >= 0, got {c.weight}")
        if c.key in seen:
            raise ValueError(f"criterion key {c.key!r} appears twice")
        if c.kind == "keywords" and not list(c.params.get("keywords") or ()):
            raise ValueError(f"criterion {c.key!r}: kind 'keywords' needs params.keywords")
        seen.add(c.key)


def _clamp(x: float) -> float:
    return max(0.0, min(100.0, x))


def _trainee(utts: Sequence[Spoken]) -> list[int]:
    return [i for i, u in enumerate(utts) if u.speaker == TRAINEE]


# Each scorer returns (score, reason, evidence indices).
Scored = tuple[float, str, list[int]]


def _talk_ratio(p: Mapping[str, Any], m: Mapping[str, Any], utts: Sequence[Spoken]) -> Scored:
    low, high, falloff = float(p.get("low", 0.35)), float(p.get("high", 0.50)), float(p.get("falloff", 0.25))
    r = m.get("talk_ratio")
    longest = sorted(_trainee(utts), key=lambda i: -utts[i].duration_ms)[:3]
    if r is None:
        return 0.0, "Nobody spoke.", []
    d = max(low - r, 0.0, r - high)
    score = _clamp(100 * (1 - d / falloff)) if falloff > 0 else (100.0 if d == 0 else 0.0)
    where = "within" if d == 0 else ("above" if r > high else "below")
    return score, f"You spoke {r:.0%} of the time, {where} the {low:.0%}–{high:.0%} band.", sorted(longest)


def _questions(p: Mapping[str, Any], m: Mapping[str, Any], utts: Sequence[Spoken]) -> Scored:
    target = float(p.get("target", 11))
    n = int((m.get("questions") or {}).get(TRAINEE, 0))
    score = min(100.0, 100 * n / target) if target > 0 else 100.0
    return score, f"You asked {n} question(s); the target is {target:g}.", question_utterances(utts, TRAINEE)


def _objection_handling(p: Mapping[str, Any], m: Mapping[str, Any], utts: Sequence[Spoken]) -> Scored:
    obj = m.get("objections") or {}
    raised, handled = int(obj.get("raised", 0)), int(obj.get("handled", 0))
    evidence = sorted(set(obj.get("raised_at", {}).values()) | set(obj.get("handled_at", {}).values()))
    if raised == 0:
        return float(p.get("if_none", 100)), "The buyer raised no objection.", evidence
    return _clamp(100 * handled / raised), f"You handled {handled} of {raised} objection(s).", evidence


def _next_step(p: Mapping[str, Any], m: Mapping[str, Any], utts: Sequence[Spoken]) -> Scored:
    phrases = list(p.get("phrases") or ())
    evidence = find_phrases(utts, phrases) if phrases else []
    secured = bool(evidence) if phrases else bool(m.get("next_step_secured"))
    if secured:
        return 100.0, "A concrete next step was agreed.", evidence
    return 0.0, "No next step was agreed.", evidence


def _discovery(p: Mapping[str, Any], m: Mapping[str, Any], utts: Sequence[Spoken]) -> Scored:
    target = float(p.get("target", 3))
    pitches = find_phrases(utts, p.get("pitch_keywords") or (), speaker=TRAINEE)
    pitch = min(pitches, key=lambda i: (utts[i].start_ms, i)) if pitches else None
    before = [
        i for i in question_utterances(utts, TRAINEE)
        if pitch is None or (utts[i].start_ms, i) < (utts[pitch].start_ms, pitch)
    ]
    n = sum(count_questions(utts[i].text) for i in before)
    score = min(100.0, 100 * n / target) if target > 0 else 100.0
    when = "before your first pitch" if pitch is not None else "(you never pitched)"
    return score, f"You asked {n} question(s) {when}; the target is {target:g}.", before + (
        [pitch] if pitch is not None else []
    )


def _fillers(p: Mapping[str, Any], m: Mapping[str, Any], utts: Sequence[Spoken]) -> Scored:
    max_rate = float(p.get("max_rate", 5.0))
    rate = m.get("filler_rate")
    language = str(m.get("language") or "en")
    evidence = [i for i in _trainee(utts) if count_fillers(utts[i].text, language)]
    if rate is None:
        return 0.0, "You said no words.", []
    if rate <= max_rate:
        score = 100.0
    else:
        score = _clamp(100 * (2 - rate / max_rate)) if max_rate > 0 else 0.0
    return score, f"{rate:.1f} filler words per 100 words; the limit is {max_rate:g}.", evidence


def _listening(p: Mapping[str, Any], m: Mapping[str, Any], utts: Sequence[Spoken]) -> Scored:
    target = float(p.get("target_patience_ms", 600))
    penalty = float(p.get("interruption_penalty", 25))
    cut_ins = int((m.get("interruptions") or {}).get(TRAINEE, 0))
    evidence = [i for i, _ in interruption_events(utts) if utts[i].speaker == TRAINEE]
    interruption_part = _clamp(100 - penalty * cut_ins)
    pat = m.get("patience_ms")
    if pat is None:
        return interruption_part, f"You interrupted {cut_ins} time(s); no clean hand-off to time.", evidence
    patience_part = min(100.0, 100 * pat / target) if target > 0 else 100.0
    reason = f"You waited {pat / 1000:.1f} s on average before replying and interrupted {cut_ins} time(s)."
    return (patience_part + interruption_part) / 2, reason, evidence


def _keywords(p: Mapping[str, Any], m: Mapping[str, Any], utts: Sequence[Spoken]) -> Scored:
    keywords = [k for k in (p.get("keywords") or ()) if str(k).strip()]
    speaker = p.get("speaker", TRAINEE)
    if not keywords:
        return 100.0, "No keywords configured.", []
    first_hits = {k: find_phrases(utts, [k], speaker=speaker) for k in keywords}
    said = [k for k, hits in first_hits.items() if hits]
    missing = [k for k in keywords if k not in said]
    reason = f"You covered {len(said)} of {len(keywords)} key point(s)."
    if missing:
        reason += " Missing: " + ", ".join(missing) + "."
    return 100 * len(said) / len(keywords), reason, sorted({first_hits[k][0] for k in said})


_SCORERS = {
    "talk_ratio": _talk_ratio,
    "questions": _questions,
    "objection_handling": _objection_handling,
    "next_step": _next_step,
    "discovery": _discovery,
    "fillers": _fillers,
    "listening": _listening,
    "keywords": _keywords,
}


def score_rubric(
    criteria: Sequence[Criterion], metrics: Mapping[str, Any], utts: Sequence[Spoken]
) -> RubricResult:
    """Score every criterion (formulas in the module docstring) and combine them by normalised weight.

    ``metrics`` is ``metrics.compute_all(utts, …)``'s output for the same ``utts``; for objection
    evidence it may also carry ``objections.raised_at`` / ``handled_at`` (``{key: index}``).
    """
    validate_criteria(criteria)
    weight_sum = sum(c.weight for c in criteria)
    scored: list[CriterionScore] = []
    for c in criteria:
        score, reason, evidence = _SCORERS[c.kind](c.params, metrics, utts)
        scored.append(CriterionScore(
            key=c.key, name=c.name, kind=c.kind, weight=c.weight,
            normalised_weight=c.weight / weight_sum if weight_sum > 0 else 0.0,
            score=round(score, 2), reason=reason, evidence=tuple(evidence),
        ))
    total = (
        round(sum(s.normalised_weight * s.score for s in scored), 2) if weight_sum > 0 else None
    )
    return RubricResult(total=total, criteria=tuple(scored))
