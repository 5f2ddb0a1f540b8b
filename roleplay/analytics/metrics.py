"""Conversation metrics over a list of timed utterances.

Every function here is pure: it takes the utterances (and plain parameters) and returns numbers,
so the review page, the API and the rubric scorer all agree, and the maths is testable without Django.

Conventions shared by all functions:

* Speakers are ``"trainee"`` and ``"buyer"`` (``TRAINEE`` / ``BUYER``); other speakers are ignored.
* Times are milliseconds. An utterance's duration is ``max(0, end_ms - start_ms)``, so a malformed
  utterance (end before start) counts as zero time instead of negative time.
* Utterances may arrive in any order and may overlap (both people talking). Functions that need
  order sort by ``(start_ms, end_ms)`` themselves; indices returned as evidence always refer to the
  caller's list.
* "Nobody spoke" (empty list) gives ``None`` for ratios and means, ``0`` for counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from roleplay.analytics.fillers import filler_stats, word_count

TRAINEE = "trainee"
BUYER = "buyer"
SPEAKERS: tuple[str, str] = (TRAINEE, BUYER)

DEFAULT_MONOLOGUE_GAP_MS = 1000
DEFAULT_INTERRUPTION_OVERLAP_MS = 200


@dataclass(frozen=True)
class Spoken:
    """One utterance: who said what, and when (ms from the start of the call)."""

    speaker: str  # "trainee" | "buyer"
    text: str
    start_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        return max(0, self.end_ms - self.start_ms)


def _other(speaker: str) -> str:
    return BUYER if speaker == TRAINEE else TRAINEE


def _ordered(utts: Sequence[Spoken]) -> list[tuple[int, Spoken]]:
    """(original index, utterance) of the two known speakers, in time order."""
    pairs = [(i, u) for i, u in enumerate(utts) if u.speaker in SPEAKERS]
    return sorted(pairs, key=lambda p: (p[1].start_ms, p[1].end_ms, p[0]))


# --------------------------------------------------------------------------- time and turns


def call_duration(utts: Sequence[Spoken]) -> int:
    """Milliseconds from the first utterance start to the last utterance end (0 when empty)."""
    if not utts:
        return 0
    return max(0, max(u.end_ms for u in utts) - min(u.start_ms for u in utts))


def talk_time(utts: Sequence[Spoken]) -> dict[str, int]:
    """Total speaking ms per speaker: the plain sum of durations (overlap counts for both)."""
    totals = {s: 0 for s in SPEAKERS}
    for u in utts:
        if u.speaker in totals:
            totals[u.speaker] += u.duration_ms
    return totals


def talk_ratio(utts: Sequence[Spoken]) -> float | None:
    """Trainee speaking time / (trainee + buyer speaking time), in 0..1.

    Overlapping speech counts for each speaker, so two people talking over each other for 1 s add 1 s
    to both sides. ``None`` when nobody spoke; 1.0 when only the trainee spoke.
    """
    totals = talk_time(utts)
    total = totals[TRAINEE] + totals[BUYER]
    return totals[TRAINEE] / total if total > 0 else None


def turns(utts: Sequence[Spoken]) -> list[tuple[str, list[int]]]:
    """Turns in time order: maximal runs of consecutive utterances by one speaker.

    Each turn is ``(speaker, [original indices])``. A buyer utterance between two trainee utterances
    splits them into two trainee turns, even if it overlaps them.
    """
    out: list[tuple[str, list[int]]] = []
    for i, u in _ordered(utts):
        if out and out[-1][0] == u.speaker:
            out[-1][1].append(i)
        else:
            out.append((u.speaker, [i]))
    return out


def turn_counts(utts: Sequence[Spoken]) -> dict[str, int]:
    """Number of turns per speaker (see ``turns``)."""
    counts = {s: 0 for s in SPEAKERS}
    for speaker, _ in turns(utts):
        counts[speaker] += 1
    return counts


def longest_monologue(
    utts: Sequence[Spoken], *, max_gap_ms: int = DEFAULT_MONOLOGUE_GAP_MS
) -> dict[str, int]:
    """Longest stretch of uninterrupted speech per speaker, in ms.

    A speaker's utterances (in time order) are merged into one monologue when the next one starts less
    than ``max_gap_ms`` after the monologue so far ends (``next.start - current.end < max_gap_ms``,
    overlaps included) **and** the other speaker says nothing in that gap (no other-speaker utterance
    intersects the open interval ``(current.end, next.start)``). The other speaker talking *during* a
    monologue (a backchannel "mm-hm" over it) does not split it. The monologue length is
    ``merged end - merged start``. Both speakers are always keys; 0 when they never spoke.
    """
    result = {s: 0 for s in SPEAKERS}
    for speaker in SPEAKERS:
        own = sorted((u for u in utts if u.speaker == speaker), key=lambda u: (u.start_ms, u.end_ms))
        others = [u for u in utts if u.speaker == _other(speaker)]
        if not own:
            continue
        start, end = own[0].start_ms, max(own[0].start_ms, own[0].end_ms)
        best = end - start
        for u in own[1:]:
            gap_open = u.start_ms > end
            interrupted = gap_open and any(o.start_ms < u.start_ms and o.end_ms > end for o in others)
            if u.start_ms - end < max_gap_ms and not interrupted:
                end = max(end, u.end_ms)
            else:
                start, end = u.start_ms, max(u.start_ms, u.end_ms)
            best = max(best, end - start)
        result[speaker] = best
    return result


def response_gaps(utts: Sequence[Spoken]) -> list[tuple[int, int]]:
    """``(trainee utterance index, gap ms)`` for every buyer → trainee hand-off with a gap ≥ 0.

    Walking the utterances in time order, a hand-off happens where a trainee utterance directly follows
    a run of buyer utterances; the gap is ``trainee.start - latest end in that buyer run``. A negative
    gap means the trainee started before the buyer finished (an interruption) and is left out.
    """
    gaps: list[tuple[int, int]] = []
    run_speaker: str | None = None
    run_end = 0
    for i, u in _ordered(utts):
        if u.speaker == run_speaker:
            run_end = max(run_end, u.end_ms)
            continue
        if u.speaker == TRAINEE and run_speaker == BUYER and u.start_ms >= run_end:
            gaps.append((i, u.start_ms - run_end))
        run_speaker, run_end = u.speaker, u.end_ms
    return gaps


def patience(utts: Sequence[Spoken]) -> float | None:
    """Mean ms the trainee waits after the buyer stops before speaking (see ``response_gaps``).

    ``None`` when there is no buyer → trainee hand-off without an interruption.
    """
    gaps = [g for _, g in response_gaps(utts)]
    return sum(gaps) / len(gaps) if gaps else None


def interruption_events(
    utts: Sequence[Spoken], *, min_overlap_ms: int = DEFAULT_INTERRUPTION_OVERLAP_MS
) -> list[tuple[int, int]]:
    """``(interrupting index, interrupted index)`` pairs.

    Utterance ``u`` interrupts ``o`` (the other speaker) when it starts strictly inside ``o``
    (``o.start < u.start < o.end``) and the two overlap for at least ``min_overlap_ms``
    (``min(u.end, o.end) - u.start >= min_overlap_ms``). Starting at the same instant is not an
    interruption. Each utterance interrupts at most once (the earliest-starting ``o`` is reported).
    """
    ordered = _ordered(utts)
    events: list[tuple[int, int]] = []
    for i, u in ordered:
        for j, o in ordered:
            if o.speaker == u.speaker or not (o.start_ms < u.start_ms < o.end_ms):
                continue
            if min(u.end_ms, o.end_ms) - u.start_ms >= min_overlap_ms:
                events.append((i, j))
                break
    return events


def interruptions(
    utts: Sequence[Spoken], *, min_overlap_ms: int = DEFAULT_INTERRUPTION_OVERLAP_MS
) -> dict[str, int]:
    """How many times each speaker cut in on the other (see ``interruption_events``)."""
    counts = {s: 0 for s in SPEAKERS}
    for i, _ in interruption_events(utts, min_overlap_ms=min_overlap_ms):
        counts[utts[i].speaker] += 1
    return counts


def speaking_timeline(utts: Sequence[Spoken]) -> list[dict[str, object]]:
    """Speech segments for a timeline chart: ``[{speaker, start_ms, end_ms}]`` sorted by start.

    Per speaker, utterances that overlap or touch (next start ≤ current end) are merged into one
    segment; the other speaker's lane is independent, so overlapping speech shows on both lanes.
    """
    segments: list[dict[str, object]] = []
    for speaker in SPEAKERS:
        own = sorted((u for u in utts if u.speaker == speaker), key=lambda u: (u.start_ms, u.end_ms))
        current: list[int] | None = None
        for u in own:
            end = max(u.start_ms, u.end_ms)
            if current is not None and u.start_ms <= current[1]:
                current[1] = max(current[1], end)
                continue
            if current is not None:
                segments.append({"speaker": speaker, "start_ms": current[0], "end_ms": current[1]})
            current = [u.start_ms, end]
        if current is not None:
            segments.append({"speaker": speaker, "start_ms": current[0], "end_ms": current[1]})
    return sorted(segments, key=lambda s: (s["start_ms"], s["end_ms"], s["speaker"]))  # type: ignore[return-value]


# --------------------------------------------------------------------------- questions

_SENTENCE = re.compile(r"[^.!?。！？\n]+[.!?。！？]*")
_WH_START = re.compile(r"^\s*(what|why|how|when|where|who|whom|whose|which)\b", re.IGNORECASE)
_TRAILING = " \t\"'”’)）…~～"


def is_question(sentence: str) -> bool:
    """The question rule, applied to one sentence (see ``count_questions``)."""
    s = sentence.strip().rstrip(_TRAILING)
    if not s:
        return False
    if s.endswith(("?", "？")):
        return True
    if s.rstrip(".。!！").endswith(("吗", "呢")):
        return True
    return bool(_WH_START.match(s)) and not s.endswith((".", "。", "!", "！"))


def count_questions(text: str) -> int:
    """Questions in ``text``.

    The text is split into sentences at ``. ! ? 。 ！ ？`` and newlines. A sentence is a question when
    it (1) ends with ``?`` or ``？``; or (2) ends with 吗 or 呢 (before any final ``。``/``！``); or
    (3) starts with an English wh-word (what, why, how, when, where, who, whom, whose, which) and
    has no closing ``.``/``!`` — speech recognisers often drop question marks, but a wh-sentence the
    recogniser closed with a full stop ("When we launched, it worked.") is a statement. Known limits:
    yes/no questions without a question mark ("do you have a budget") are missed, and 呢 also ends
    some statements.
    """
    return sum(1 for s in _SENTENCE.findall(text) if is_question(s))


def question_utterances(utts: Sequence[Spoken], speaker: str = TRAINEE) -> list[int]:
    """Indices of ``speaker``'s utterances that contain at least one question."""
    return [i for i, u in enumerate(utts) if u.speaker == speaker and count_questions(u.text) > 0]


def question_count(utts: Sequence[Spoken], speaker: str = TRAINEE) -> int:
    """Questions asked by ``speaker`` over the call (see ``count_questions``)."""
    return sum(count_questions(u.text) for u in utts if u.speaker == speaker)


def question_rate(
    utts: Sequence[Spoken], speaker: str = TRAINEE, *, duration_ms: int | None = None
) -> dict[str, float | None]:
    """``{per_10_min, per_turn}`` for ``speaker``'s questions.

    ``per_10_min = questions / (duration_ms / 600000)`` where ``duration_ms`` defaults to
    ``call_duration``; ``per_turn = questions / speaker's turns`` (see ``turns``). ``None`` when the
    denominator is zero.
    """
    n = question_count(utts, speaker)
    duration = call_duration(utts) if duration_ms is None else duration_ms
    speaker_turns = turn_counts(utts).get(speaker, 0)
    return {
        "per_10_min": n * 600_000 / duration if duration > 0 else None,
        "per_turn": n / speaker_turns if speaker_turns else None,
    }


# --------------------------------------------------------------------------- pace


def words_per_minute(utts: Sequence[Spoken], speaker: str, *, language: str = "en") -> float | None:
    """``speaker``'s words / ``speaker``'s speaking minutes (sum of durations); ``None`` if silent.

    Words are counted by ``fillers.word_count`` (Chinese: CJK characters / 1.5).
    """
    own = [u for u in utts if u.speaker == speaker]
    ms = sum(u.duration_ms for u in own)
    if ms <= 0:
        return None
    return sum(word_count(u.text, language) for u in own) * 60_000 / ms


# --------------------------------------------------------------------------- phrases and objections


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def contains_phrase(text: str, phrase: str) -> bool:
    """Keyword semantics used everywhere: case-insensitive containment, whitespace runs collapsed.

    An empty phrase matches nothing.
    """
    p = _norm(phrase)
    return bool(p) and p in _norm(text)


def find_phrases(utts: Sequence[Spoken], phrases: Iterable[str], *, speaker: str | None = None) -> list[int]:
    """Indices of utterances (by ``speaker``, or anyone when ``None``) containing any of ``phrases``."""
    wanted = [p for p in phrases if _norm(p)]
    return [
        i for i, u in enumerate(utts)
        if (speaker is None or u.speaker == speaker) and any(contains_phrase(u.text, p) for p in wanted)
    ]


def next_step_secured(utts: Sequence[Spoken], phrases: Iterable[str], *, speaker: str | None = None) -> bool:
    """True when any utterance (by ``speaker``, default either side) contains a next-step phrase."""
    return bool(find_phrases(utts, phrases, speaker=speaker))


@dataclass(frozen=True)
class ObjectionSpec:
    """A scenario objection: buyer phrases that raise it, trainee phrases that count as handling it."""

    key: str
    triggers: tuple[str, ...]
    handling: tuple[str, ...]

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> ObjectionSpec:
        """Build from scenario JSON.

        Keys: ``key`` (or ``id``/``name``), ``triggers``, ``handling`` (or ``handling_keywords``).
        """
        key = data.get("key") or data.get("id") or data.get("name") or ""
        handling = data.get("handling") or data.get("handling_keywords") or ()
        return cls(str(key), tuple(data.get("triggers") or ()), tuple(handling))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ObjectionReport:
    """Which objections were raised and handled, with the utterance indices that show it."""

    raised: tuple[str, ...] = ()
    handled: tuple[str, ...] = ()
    raised_at: dict[str, int] = field(default_factory=dict)
    handled_at: dict[str, int] = field(default_factory=dict)


def detect_objections(
    utts: Sequence[Spoken], specs: Iterable[ObjectionSpec | Mapping[str, object]]
) -> ObjectionReport:
    """Objections raised by the buyer and handled by the trainee.

    An objection is *raised* at the first buyer utterance containing any of its triggers, and
    *handled* at the first trainee utterance after that one (in time order) containing any of its
    handling phrases. Phrase matching is ``contains_phrase``. Each objection counts at most once.
    """
    ordered = _ordered(utts)
    raised_at: dict[str, int] = {}
    handled_at: dict[str, int] = {}
    for spec in specs:
        s = spec if isinstance(spec, ObjectionSpec) else ObjectionSpec.from_mapping(spec)
        pos = next(
            (k for k, (_, u) in enumerate(ordered)
             if u.speaker == BUYER and any(contains_phrase(u.text, t) for t in s.triggers)),
            None,
        )
        if pos is None:
            continue
        raised_at[s.key] = ordered[pos][0]
        for i, u in ordered[pos + 1:]:
            if u.speaker == TRAINEE and any(contains_phrase(u.text, h) for h in s.handling):
                handled_at[s.key] = i
                break
    return ObjectionReport(tuple(raised_at), tuple(handled_at), raised_at, handled_at)


def objections(raised: int, handled: int) -> dict[str, float | int | None]:
    """Counts passthrough (e.g. from the dialog engine): ``{raised, handled, handled_ratio}``.

    ``handled_ratio = handled / raised``, ``None`` when nothing was raised; ``handled`` is clamped to
    ``0..raised`` so a miscount cannot give a ratio above 1.
    """
    return _objection_counts(raised, handled)


def _objection_counts(raised: int, handled: int) -> dict[str, float | int | None]:
    # Separate name because compute_all's ``objections`` keyword shadows the public function.
    raised = max(0, int(raised))
    handled = min(max(0, int(handled)), raised)
    return {"raised": raised, "handled": handled, "handled_ratio": handled / raised if raised else None}


# --------------------------------------------------------------------------- everything at once


def compute_all(
    utts: Sequence[Spoken],
    *,
    language: str,
    objections: Iterable[ObjectionSpec | Mapping[str, object]] = (),
    objection_counts: tuple[int, int] | None = None,
    next_step_phrases: Iterable[str] = (),
    duration_ms: int | None = None,
    monologue_gap_ms: int = DEFAULT_MONOLOGUE_GAP_MS,
    interruption_overlap_ms: int = DEFAULT_INTERRUPTION_OVERLAP_MS,
) -> dict[str, object]:
    """All metrics as one JSON-serialisable dict (the shape the API and the scorer read).

    ``objection_counts=(raised, handled)`` (from the dialog engine) wins over detection from
    ``objections`` specs; ``duration_ms`` (the session's wall-clock length) wins over the span of the
    utterances. Fillers are counted on the trainee's words only.
    """
    utts = list(utts)
    duration = call_duration(utts) if duration_ms is None else max(0, duration_ms)
    report = detect_objections(utts, objections)
    counts = objection_counts if objection_counts is not None else (len(report.raised), len(report.handled))
    objection_summary: dict[str, object] = dict(_objection_counts(*counts))
    objection_summary.update(
        raised_keys=list(report.raised), handled_keys=list(report.handled),
        raised_at=dict(report.raised_at), handled_at=dict(report.handled_at),
    )
    fillers = filler_stats((u.text for u in utts if u.speaker == TRAINEE), language)
    return {
        "language": language,
        "duration_ms": duration,
        "talk_time_ms": talk_time(utts),
        "talk_ratio": talk_ratio(utts),
        "turns": turn_counts(utts),
        "longest_monologue_ms": longest_monologue(utts, max_gap_ms=monologue_gap_ms),
        "patience_ms": patience(utts),
        "questions": {s: question_count(utts, s) for s in SPEAKERS},
        "question_rate": question_rate(utts, TRAINEE, duration_ms=duration),
        "fillers": fillers,
        "filler_rate": fillers["rate_per_100_words"],
        "words_per_minute": {s: words_per_minute(utts, s, language=language) for s in SPEAKERS},
        "interruptions": interruptions(utts, min_overlap_ms=interruption_overlap_ms),
        "objections": objection_summary,
        "next_step_secured": next_step_secured(utts, next_step_phrases),
        "timeline": speaking_timeline(utts),
    }
