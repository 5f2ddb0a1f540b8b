"""Analytics maths, checked against values worked out by hand on small written-out calls.

The main call (``DISCOVERY``), times in ms, with the sums used below:

    0 buyer    0-2000   "Hello, this is Dana."
    1 trainee  2600-6000 "Hi Dana, this is Sam from Acme. How is your quarter going?"    (gap 600)
    2 buyer    7000-10000 "Busy. We already have a vendor for that."
    3 trainee  10800-14000 "Um, I understand. What made you choose them?"              (gap 800)
    4 buyer    14500-18000 "Price, mostly. It is too expensive to switch."
    5 trainee  17500-20000 "Fair point, you know, our pricing is per seat."   (cuts in 500 ms early)
    6 buyer    20500-21000 "Okay."
    7 trainee  21400-23000 "Can we book a demo next Tuesday?"                             (gap 400)
    8 buyer    23200-25000 "Sure, send me an invite."

Trainee time 3400+3200+2500+1600 = 10700; buyer 2000+3000+3500+500+1800 = 10800.
Trainee words 12+8+9+7 = 36; fillers "Um", "you know" = 2.
"""

from __future__ import annotations

import json

import pytest

from roleplay.analytics import benchmarks
from roleplay.analytics.fillers import count_fillers, filler_rate, filler_stats, word_count
from roleplay.analytics.metrics import (
    ObjectionSpec,
    Spoken,
    call_duration,
    compute_all,
    count_questions,
    detect_objections,
    interruption_events,
    interruptions,
    longest_monologue,
    next_step_secured,
    objections,
    patience,
    question_count,
    question_rate,
    speaking_timeline,
    talk_ratio,
    turn_counts,
    words_per_minute,
)
from roleplay.analytics.scoring import Criterion, score_rubric, validate_criteria


def T(text: str, start: int, end: int) -> Spoken:
    return Spoken("trainee", text, start, end)


def B(text: str, start: int, end: int) -> Spoken:
    return Spoken("buyer", text, start, end)


DISCOVERY = [
    B("Hello, this is Dana.", 0, 2000),
    T("Hi Dana, this is Sam from Acme. How is your quarter going?", 2600, 6000),
    B("Busy. We already have a vendor for that.", 7000, 10000),
    T("Um, I understand. What made you choose them?", 10800, 14000),
    B("Price, mostly. It is too expensive to switch.", 14500, 18000),
    T("Fair point, you know, our pricing is per seat.", 17500, 20000),
    B("Okay.", 20500, 21000),
    T("Can we book a demo next Tuesday?", 21400, 23000),
    B("Sure, send me an invite.", 23200, 25000),
]

OBJECTIONS = [
    {"key": "has_vendor", "triggers": ["Already have a VENDOR"], "handling": ["what made you choose"]},
    ObjectionSpec("price", triggers=("too expensive",), handling=("ROI", "per seat")),
    {"id": "timing", "triggers": ["not now"], "handling_keywords": ["later"]},
]

TRAINEE_ONLY = [T("What is your budget? um okay", 0, 4000), T("Hello?", 4500, 6000)]
BUYER_ONLY = [B("Is anyone there?", 0, 1500)]


# --------------------------------------------------------------------------- talk ratio


def test_it_computes_talk_ratio_from_speaking_time():
    assert talk_ratio(DISCOVERY) == pytest.approx(10700 / 21500)


def test_it_counts_overlapping_speech_for_both_speakers():
    # 1000 ms of overlap (1000-2000) counts for both: trainee 2000, buyer 1000 → 2/3.
    assert talk_ratio([T("a", 0, 2000), B("b", 1000, 2000)]) == pytest.approx(2 / 3)


def test_it_gives_no_talk_ratio_when_nobody_spoke():
    assert talk_ratio([]) is None
    assert talk_ratio([T("", 1000, 1000)]) is None  # a zero-length utterance is silence


def test_it_gives_talk_ratio_one_and_zero_for_one_sided_calls():
    assert talk_ratio(TRAINEE_ONLY) == 1.0
    assert talk_ratio(BUYER_ONLY) == 0.0


def test_it_treats_end_before_start_as_zero_time():
    assert talk_ratio([T("x", 5000, 4000), B("y", 0, 1000)]) == 0.0


# --------------------------------------------------------------------------- monologues

MONOLOGUES = [
    T("first", 0, 3000),
    T("second", 3500, 6000),      # gap 500 → merges with "first" (0-6000)
    B("mm-hm", 4000, 4500),       # backchannel during "second", not in the gap: does not split
    B("right", 6200, 6600),       # buyer speaks in the gap before "third": splits
    T("third", 6800, 9000),
    T("fourth", 9500, 12000),     # gap 500, nothing between → merges with "third" (6800-12000)
]


def test_it_merges_close_same_speaker_utterances_into_one_monologue():
    assert longest_monologue(MONOLOGUES) == {"trainee": 6000, "buyer": 500}


def test_it_splits_monologues_at_the_configured_gap():
    # 400 ms: every trainee gap (500) is too long → longest single utterance "first" = 3000.
    assert longest_monologue(MONOLOGUES, max_gap_ms=400) == {"trainee": 3000, "buyer": 500}


def test_it_splits_monologues_when_the_other_side_speaks_in_between_even_with_a_large_gap():
    # Buyer gap 4500→6200 is under 2000 but the trainee speaks in it.
    assert longest_monologue(MONOLOGUES, max_gap_ms=2000)["buyer"] == 500


def test_it_merges_a_speakers_own_overlapping_utterances():
    assert longest_monologue([T("a", 0, 2000), T("b", 1500, 2500)]) == {"trainee": 2500, "buyer": 0}


def test_it_reports_zero_monologue_for_silence_and_the_silent_side():
    assert longest_monologue([]) == {"trainee": 0, "buyer": 0}
    assert longest_monologue(TRAINEE_ONLY) == {"trainee": 6000, "buyer": 0}


# --------------------------------------------------------------------------- patience


def test_it_averages_the_pause_after_the_buyer_and_skips_interruptions():
    # Hand-offs: 600, 800, (-500 interruption, left out), 400 → 1800 / 3.
    assert patience(DISCOVERY) == pytest.approx(600.0)


def test_it_measures_patience_from_the_end_of_the_whole_buyer_run():
    utts = [B("a", 0, 3000), B("b", 1000, 2000), T("c", 3500, 4000)]  # run ends at 3000, not 2000
    assert patience(utts) == pytest.approx(500.0)


def test_it_has_no_patience_without_a_buyer_to_trainee_hand_off():
    assert patience([]) is None
    assert patience(TRAINEE_ONLY) is None
    assert patience(BUYER_ONLY) is None
    assert patience([B("a", 0, 2000), T("b", 1500, 3000)]) is None  # only an interruption


# --------------------------------------------------------------------------- questions


def test_it_counts_question_marks_chinese_particles_and_unpunctuated_wh_sentences():
    assert count_questions("Is that right? Do you agree?") == 2
    assert count_questions("How about Tuesday?") == 1
    assert count_questions("what is the budget") == 1
    assert count_questions("When we launched, it worked.") == 0
    assert count_questions("However you want.") == 0
    assert count_questions("你们现在用什么系统？预算够吗") == 2
    assert count_questions("那价格呢。我们下周见面。") == 1


def test_it_counts_questions_per_speaker():
    assert question_count(DISCOVERY) == 3
    assert question_count(DISCOVERY, "buyer") == 0
    assert question_count([]) == 0


def test_it_rates_questions_per_ten_minutes_and_per_turn():
    # 3 questions in 25 s → 3 × 600000 / 25000 = 72 per 10 min; 4 trainee turns → 0.75.
    assert question_rate(DISCOVERY) == {"per_10_min": pytest.approx(72.0), "per_turn": pytest.approx(0.75)}
    assert question_rate(DISCOVERY, duration_ms=60_000)["per_10_min"] == pytest.approx(30.0)


def test_it_rates_questions_in_one_sided_and_silent_calls():
    # Two trainee utterances, one turn, two questions in 6 s.
    assert question_rate(TRAINEE_ONLY) == {"per_10_min": pytest.approx(200.0), "per_turn": 2.0}
    assert question_rate([]) == {"per_10_min": None, "per_turn": None}
    assert question_rate(BUYER_ONLY) == {"per_10_min": 0.0, "per_turn": None}


def test_it_counts_turns_as_runs_of_one_speaker():
    assert turn_counts(DISCOVERY) == {"trainee": 4, "buyer": 5}
    assert turn_counts(TRAINEE_ONLY) == {"trainee": 1, "buyer": 0}


# --------------------------------------------------------------------------- fillers


def test_it_counts_english_fillers_but_not_like_as_a_verb():
    text = "I like it. It was like, um, really basically fine, right? I'd like that. Uhh kind of."
    assert count_fillers(text, "en") == {
        "like": 1, "um": 1, "basically": 1, "right?": 1, "uh": 1, "kind of": 1,
    }
    assert word_count(text, "en") == 17


def test_it_computes_the_english_filler_rate_per_hundred_words():
    texts = [u.text for u in DISCOVERY if u.speaker == "trainee"]
    assert filler_rate(texts, "en") == pytest.approx(200 / 36)


def test_it_counts_chinese_fillers_and_estimates_words_from_characters():
    text = "嗯，这个价格其实还可以吧。"  # 11 CJK characters; fillers 嗯, 这个, 其实
    assert count_fillers(text, "zh") == {"嗯": 1, "这个": 1, "其实": 1}
    assert word_count(text, "zh-CN") == pytest.approx(11 / 1.5)
    assert filler_rate([text], "zh") == pytest.approx(450 / 11)  # 3 × 100 / (11 / 1.5)


def test_it_counts_repeated_chinese_fillers_and_latin_words_in_chinese_text():
    assert count_fillers("然后然后，那个，就是，对吧？啊呃", "cmn") == {
        "呃": 1, "啊": 1, "那个": 1, "就是": 1, "然后": 2, "对吧": 1,
    }
    assert word_count("我们的CRM很好", "zh") == pytest.approx(5 / 1.5 + 1)


def test_it_has_no_filler_rate_without_words():
    assert filler_rate([], "en") is None
    assert filler_rate(["", "。"], "zh") is None
    assert filler_stats([], "en") == {"count": 0, "words": 0.0, "rate_per_100_words": None, "by_filler": {}}


# --------------------------------------------------------------------------- pace


def test_it_computes_words_per_minute_over_speaking_time():
    assert words_per_minute(DISCOVERY, "trainee") == pytest.approx(36 * 60000 / 10700)
    assert words_per_minute([T("我们的产品很好", 0, 2000)], "trainee", language="zh") == pytest.approx(140.0)


def test_it_has_no_pace_for_a_silent_speaker():
    assert words_per_minute([], "trainee") is None
    assert words_per_minute(TRAINEE_ONLY, "buyer") is None


# --------------------------------------------------------------------------- interruptions


def test_it_counts_who_cut_in():
    assert interruptions(DISCOVERY) == {"trainee": 1, "buyer": 0}
    assert interruption_events(DISCOVERY) == [(5, 4)]


def test_it_ignores_overlaps_shorter_than_the_threshold():
    utts = [B("long answer", 0, 5000), T("so", 4900, 6000)]  # 100 ms of overlap
    assert interruptions(utts) == {"trainee": 0, "buyer": 0}
    assert interruptions(utts, min_overlap_ms=50) == {"trainee": 1, "buyer": 0}


def test_it_does_not_call_starting_together_an_interruption():
    assert interruptions([B("a", 0, 2000), T("b", 0, 1000)]) == {"trainee": 0, "buyer": 0}


def test_it_counts_a_buyer_cutting_in_on_the_trainee():
    utts = [T("let me explain our whole platform", 0, 8000), B("sorry, but", 3000, 4000)]
    assert interruptions(utts) == {"trainee": 0, "buyer": 1}


def test_it_finds_no_interruptions_in_silence_or_one_sided_calls():
    assert interruptions([]) == {"trainee": 0, "buyer": 0}
    assert interruptions(TRAINEE_ONLY) == {"trainee": 0, "buyer": 0}


# --------------------------------------------------------------------------- objections and next step


def test_it_detects_raised_and_handled_objections_by_phrase():
    report = detect_objections(DISCOVERY, OBJECTIONS)
    assert report.raised == ("has_vendor", "price")
    assert report.handled == ("has_vendor", "price")
    assert report.raised_at == {"has_vendor": 2, "price": 4}
    assert report.handled_at == {"has_vendor": 3, "price": 5}


def test_it_only_counts_handling_that_comes_after_the_objection():
    utts = [T("Our ROI is great.", 0, 1000), B("Too expensive.", 1500, 2500), T("Okay.", 3000, 3500)]
    report = detect_objections(utts, [ObjectionSpec("price", ("too expensive",), ("roi",))])
    assert (report.raised, report.handled) == (("price",), ())


def test_it_ignores_trainee_lines_as_objection_triggers():
    report = detect_objections([T("Is it too expensive?", 0, 1000)], OBJECTIONS)
    assert report.raised == ()


def test_it_passes_objection_counts_through_with_a_ratio():
    assert objections(4, 3) == {"raised": 4, "handled": 3, "handled_ratio": 0.75}
    assert objections(0, 0) == {"raised": 0, "handled": 0, "handled_ratio": None}
    assert objections(2, 5) == {"raised": 2, "handled": 2, "handled_ratio": 1.0}


def test_it_detects_a_secured_next_step_case_insensitively():
    assert next_step_secured(DISCOVERY, ["BOOK A DEMO"])
    assert next_step_secured(DISCOVERY, ["send me an invite"], speaker="buyer")
    assert not next_step_secured(DISCOVERY, ["send me an invite"], speaker="trainee")
    assert not next_step_secured(DISCOVERY, ["sign the contract", ""])
    assert not next_step_secured([], ["book a demo"])
    assert next_step_secured([T("我们下周二 约个演示 吧", 0, 1000)], ["约个演示"])


# --------------------------------------------------------------------------- timeline


def test_it_merges_contiguous_same_speaker_segments_and_sorts_the_timeline():
    utts = [
        B("c", 2500, 4000),
        T("a", 0, 1000),
        T("b", 1000, 2000),   # touches "a" → merged 0-2000
        T("d", 3000, 3500),   # overlaps the buyer, own lane
        B("e", 3800, 4200),   # overlaps "c" → merged 2500-4200
    ]
    assert speaking_timeline(utts) == [
        {"speaker": "trainee", "start_ms": 0, "end_ms": 2000},
        {"speaker": "buyer", "start_ms": 2500, "end_ms": 4200},
        {"speaker": "trainee", "start_ms": 3000, "end_ms": 3500},
    ]


def test_it_gives_an_empty_timeline_for_silence():
    assert speaking_timeline([]) == []
    assert call_duration([]) == 0


# --------------------------------------------------------------------------- compute_all


def test_it_computes_everything_as_json():
    m = compute_all(DISCOVERY, language="en", objections=OBJECTIONS, next_step_phrases=["book a demo"])
    json.dumps(m)  # serialisable
    assert m["duration_ms"] == 25000
    assert m["talk_time_ms"] == {"trainee": 10700, "buyer": 10800}
    assert m["talk_ratio"] == pytest.approx(10700 / 21500)
    assert m["longest_monologue_ms"] == {"trainee": 3400, "buyer": 3500}
    assert m["patience_ms"] == pytest.approx(600.0)
    assert m["questions"] == {"trainee": 3, "buyer": 0}
    assert m["question_rate"]["per_10_min"] == pytest.approx(72.0)
    assert m["filler_rate"] == pytest.approx(200 / 36)
    assert m["fillers"]["by_filler"] == {"um": 1, "you know": 1}
    assert m["interruptions"] == {"trainee": 1, "buyer": 0}
    assert m["objections"]["raised"] == 2 and m["objections"]["handled"] == 2
    assert m["next_step_secured"] is True
    assert len(m["timeline"]) == 9


def test_it_prefers_passed_objection_counts_and_session_duration():
    m = compute_all(DISCOVERY, language="en", objection_counts=(3, 1), duration_ms=60_000)
    assert m["objections"]["raised"] == 3 and m["objections"]["handled_ratio"] == pytest.approx(1 / 3)
    assert m["question_rate"]["per_10_min"] == pytest.approx(30.0)


def test_it_computes_everything_for_a_silent_call():
    m = compute_all([], language="zh")
    json.dumps(m)
    assert m["duration_ms"] == 0 and m["talk_ratio"] is None and m["patience_ms"] is None
    assert m["filler_rate"] is None and m["timeline"] == [] and m["next_step_secured"] is False
    assert m["words_per_minute"] == {"trainee": None, "buyer": None}


# --------------------------------------------------------------------------- benchmarks


def test_every_benchmark_has_a_source_and_both_languages():
    assert benchmarks.BENCHMARKS
    for b in benchmarks.BENCHMARKS:
        assert b.source and b.url.startswith("https://")
        assert b.explain_en and b.explain_zh and b.label_zh
    assert benchmarks.benchmarks_for("talk_ratio")[0].value == 0.43
    json.dumps(benchmarks.as_dicts())


# --------------------------------------------------------------------------- scoring


def test_it_scores_a_rubric_with_hand_computed_weighted_total():
    m = compute_all(DISCOVERY, language="en", objections=OBJECTIONS)
    criteria = [
        Criterion("talk", "Talk ratio", 2, "talk_ratio"),                      # 0.498 in 0.35-0.50 → 100
        Criterion("q", "Questions", 1, "questions", {"target": 4}),             # 3/4 → 75
        Criterion("obj", "Objections", 1, "objection_handling"),                # 2/2 → 100
        Criterion("next", "Next step", 1, "next_step", {"phrases": ["book a demo"]}),  # → 100
        Criterion("fill", "Fillers", 1, "fillers", {"max_rate": 4}),            # 100×(2−5.556/4) = 61.11
        Criterion("listen", "Listening", 2, "listening"),                       # (100 + 75) / 2 = 87.5
        Criterion("disc", "Discovery", 1, "discovery", {"pitch_keywords": ["our pricing"], "target": 2}),
        Criterion("kw", "Key points", 1, "keywords", {"keywords": ["demo", "budget", "Tuesday"]}),  # 66.67
    ]
    result = score_rubric(criteria, m, DISCOVERY)
    by_key = {c.key: c for c in result.criteria}
    assert by_key["talk"].score == 100
    assert by_key["q"].score == 75 and by_key["q"].evidence == (1, 3, 7)
    assert by_key["obj"].score == 100 and by_key["obj"].evidence == (2, 3, 4, 5)
    assert by_key["next"].score == 100 and by_key["next"].evidence == (7,)
    assert by_key["fill"].score == pytest.approx(61.11) and by_key["fill"].evidence == (3, 5)
    assert by_key["listen"].score == 87.5 and by_key["listen"].evidence == (5,)
    assert by_key["disc"].score == 100 and by_key["disc"].evidence == (1, 3, 5)
    assert by_key["kw"].score == pytest.approx(66.67) and "budget" in by_key["kw"].reason
    assert by_key["talk"].normalised_weight == pytest.approx(0.2)
    # (2×100 + 75 + 100 + 100 + 61.11 + 2×87.5 + 100 + 66.67) / 10 = 877.78 / 10
    assert result.total == pytest.approx(87.78, abs=0.005)
    json.dumps(result.to_dict())


def test_it_normalises_weights_for_a_two_line_rubric():
    m = compute_all(DISCOVERY, language="en")
    criteria = [
        Criterion("q", "Questions", 3, "questions", {"target": 4}),                   # 75
        Criterion("close", "Close", 1, "next_step", {"phrases": ["sign the contract"]}),  # 0
    ]
    result = score_rubric(criteria, m, DISCOVERY)
    assert result.total == pytest.approx(56.25)  # (3×75 + 1×0) / 4
    assert [c.normalised_weight for c in result.criteria] == [0.75, 0.25]


def test_it_scores_talk_ratio_outside_the_band_linearly():
    m = compute_all(DISCOVERY, language="en")
    c = Criterion("talk", "Talk", 1, "talk_ratio", {"low": 0.35, "high": 0.45, "falloff": 0.25})
    # d = 10700/21500 − 0.45; score = 100 × (1 − 4d) = 100 × 17400 / 21500
    assert score_rubric([c], m, DISCOVERY).criteria[0].score == pytest.approx(80.93, abs=0.005)
    one_sided = compute_all(TRAINEE_ONLY, language="en")
    assert score_rubric([c], one_sided, TRAINEE_ONLY).criteria[0].score == 0


def test_it_scores_a_silent_call_without_crashing():
    m = compute_all([], language="en")
    criteria = [Criterion(k, k, 1, k, {"keywords": ["x"]} if k == "keywords" else {}) for k in (
        "talk_ratio", "questions", "objection_handling", "next_step", "discovery", "fillers", "listening",
        "keywords",
    )]
    result = score_rubric(criteria, m, [])
    scores = {c.key: c.score for c in result.criteria}
    # No objection raised → 100 (if_none); no interruptions and no hand-off → listening 100.
    assert scores == {
        "talk_ratio": 0, "questions": 0, "objection_handling": 100, "next_step": 0, "discovery": 0,
        "fillers": 0, "listening": 100, "keywords": 0,
    }
    assert result.total == pytest.approx(25.0)


def test_it_counts_all_questions_as_discovery_when_the_trainee_never_pitched():
    m = compute_all(DISCOVERY, language="en")
    c = Criterion("disc", "Discovery", 1, "discovery", {"pitch_keywords": ["our platform"], "target": 6})
    scored = score_rubric([c], m, DISCOVERY).criteria[0]
    assert scored.score == pytest.approx(50.0) and scored.evidence == (1, 3, 7)


def test_it_has_no_total_without_weight():
    assert score_rubric([], {}, []).total is None
    m = compute_all(DISCOVERY, language="en")
    assert score_rubric([Criterion("q", "Q", 0, "questions")], m, DISCOVERY).total is None


def test_it_rejects_bad_rubric_configuration():
    with pytest.raises(ValueError, match="unknown kind"):
        validate_criteria([Criterion("x", "X", 1, "charisma")])
    with pytest.raises(ValueError, match="weight"):
        validate_criteria([Criterion("x", "X", -1, "questions")])
    with pytest.raises(ValueError, match="twice"):
        validate_criteria([Criterion("x", "X", 1, "questions"), Criterion("x", "Y", 1, "next_step")])
    with pytest.raises(ValueError, match="keywords"):
        validate_criteria([Criterion("x", "X", 1, "keywords")])
