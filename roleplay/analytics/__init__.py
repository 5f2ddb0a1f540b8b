"""Conversation analytics: pure functions over timed utterances, no Django.

``metrics`` computes the numbers (talk ratio, monologues, patience, questions, fillers, pace,
interruptions, objections, next step, timeline), ``fillers`` counts filler words and words,
``benchmarks`` holds published reference points with sources, ``scoring`` turns a rubric into
0–100 scores with evidence. Callers convert model rows to ``Spoken`` and call ``compute_all`` then
``score_rubric``.
"""

from roleplay.analytics.benchmarks import BENCHMARKS, Benchmark, benchmarks_for
from roleplay.analytics.fillers import count_fillers, filler_rate, filler_stats, word_count
from roleplay.analytics.metrics import (
    BUYER,
    TRAINEE,
    ObjectionReport,
    ObjectionSpec,
    Spoken,
    call_duration,
    compute_all,
    detect_objections,
    interruptions,
    longest_monologue,
    next_step_secured,
    objections,
    patience,
    question_count,
    question_rate,
    speaking_timeline,
    talk_ratio,
    words_per_minute,
)
from roleplay.analytics.scoring import KINDS, Criterion, CriterionScore, RubricResult, score_rubric

__all__ = [
    "BENCHMARKS", "BUYER", "KINDS", "TRAINEE", "Benchmark", "Criterion", "CriterionScore", "ObjectionReport",
    "ObjectionSpec", "RubricResult", "Spoken", "benchmarks_for", "call_duration", "compute_all",
    "count_fillers", "detect_objections", "filler_rate", "filler_stats", "interruptions", "longest_monologue",
    "next_step_secured", "objections", "patience", "question_count", "question_rate", "score_rubric",
    "speaking_timeline", "talk_ratio", "word_count", "words_per_minute",
]
