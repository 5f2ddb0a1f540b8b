"""End-of-turn benchmark: does a pause end the trainee's turn when it should, and only then?

Run: ``.venv/bin/python bench/turn_taking.py [--pauses 0.4,0.8,1.2] [--speeds 1.0,1.15] [--rows silence,smart]``

A labelled set is built at run time with eSpeak NG, in English and Mandarin (no audio in the repo):

- **cut** — a sentence spoken whole, then cut at a mid-clause word boundary with a 0.4–1.2 s pause
  inserted before the rest (must NOT end in the pause). The cut is made in the whole sentence's
  audio, so the first half keeps its mid-sentence intonation, as when a person pauses to think,
  and it is placed by eSpeak's own word events (``tests.audio_fixtures.spoken``), so it falls
  between the two words named (an energy minimum nearby was often the comma's pause one word earlier).
- **cut-fn** — the same, cut right after a function word, before the content word ("meet on |
  Tuesday", "我们的 | 系统"), where people hesitate most; including endings the word rules leave
  alone on purpose (zh 的, 在, 给).
- **trail** — the same, cut right after a filler or conjunction ("so, um", "and", "because",
  "我觉得", "然后"…) (must NOT end in the pause).
- **complete** — a whole sentence followed by 3 s of silence (must end; the delay is measured
  from the last voiced sample to the decision, plus the model's inference time, which the
  decision waits for in a live call).
- **backchannel** — "yeah", "mm-hm", "嗯", "对"…: the words classifier (``is_backchannel``) on
  their text and, for English, on what the ASR (tiny.en) hears in eSpeak's rendering.

Every case runs through the real listening stage (real Silero VAD, real Smart Turn, 32 ms
batches like WebRTC) offline, once per row:

- ``silence``: today's behaviour, a fixed ``ENDPOINT_SILENCE_MS`` (400 ms) pause ends the turn;
- ``smart``: Smart Turn asked at ``TURN_ASK_SILENCE_MS``, patience ``TURN_PATIENCE_MS``, audio only;
- ``smart+words``: the same, told the words up to the pause as the speculative final would
  (``attach_words``: tiny.en's transcript for English, arriving after its decode time; the script
  for Mandarin): the trailing-word cue on top of the model;
- ``smart+words+reask``: the tiered policy (``turns.policy``): an unsure "incomplete" is asked
  again at ``TURN_REASK_SILENCE_MS`` against ``TURN_REASK_THRESHOLD`` (the endpointer's default;
  the other smart rows ask once per pause).

Printed per row: false cut-off rate (cut + trail cases ended inside the pause), missed-end rate
(complete sentences the detector called incomplete, ended only by the patience), end-of-turn
delay p50/p95 after complete sentences (with the inference the decision waited for, as timed in
this run), model inference p50/p95 (wall time: on a busy machine it grows with the load, which
is printed), and the delay in stream time alone (what it would be with a free inference). eSpeak's speech is synthetic:
its prosody is flatter than a person's and the model may judge it differently from real speech.
Then the failures per language and kind, and how tiny.en punctuates what precedes each pause.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lingecho.settings")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.test import override_settings  # noqa: E402

from media_pipeline.engine_pool import Engines  # noqa: E402
from media_pipeline.engines import get_vad_model  # noqa: E402
from media_pipeline.executor import BoundedExecutor  # noqa: E402
from media_pipeline.listening import Listening  # noqa: E402
from media_pipeline.turns.policy import DEFAULT_REASK_SILENCE_MS, DEFAULT_REASK_THRESHOLD  # noqa: E402
from media_pipeline.turns.smart_turn import SmartTurnDetector  # noqa: E402
from media_pipeline.turns.words import is_backchannel, trailing_cue  # noqa: E402
from tests.audio_fixtures import cut_point, silence, speak, spoken, voiced_span, word_after  # noqa: E402

RATE = 16000
BATCH = 512
LEAD_MS = 500
TAIL_MS = 3000

# (whole sentence, the words before a mid-clause cut)
EN_CUT = [
    ("I think we should meet on Tuesday to discuss the contract.", "I think we should meet on"),
    ("Our software cuts invoice processing time in half.", "Our software cuts invoice"),
    ("Most of our customers see a return within three months.", "Most of our customers see"),
    ("Could you tell me who else is involved in the decision?", "Could you tell me who else"),
    ("We can offer a fifteen percent discount for a two year deal.", "We can offer a fifteen percent"),
    ("The pilot would start with your finance team next month.", "The pilot would start with"),
    ("I understand that the budget is tight this quarter.", "I understand that the budget"),
    ("Let me send you a short summary after this call.", "Let me send you a short"),
]
# Cut right after a function word, before the content word: where people hesitate most often ("we
# should meet on … Tuesday"). Both languages include endings the word rules deliberately do not
# treat as open (zh 的, 在, 给: each also ends complete sentences).
EN_CUT_FN = [
    ("We could deliver the first version by the end of March.", "We could deliver the first version by the"),
    ("I'd like to show you our new reporting dashboard.", "I'd like to show you our"),
    ("The main problem is the cost of onboarding.", "The main problem is"),
    ("We work with a lot of hospitals in the region.", "We work with a lot of"),
    ("Our customers usually save about twenty hours a week.", "Our customers usually save about"),
    ("You would need to talk to your IT department first.", "You would need to talk to your"),
    ("We're planning to roll it out in the autumn.", "We're planning to"),
    ("It depends on how many users you have.", "It depends on"),
]
ZH_CUT_FN = [
    ("我们的系统可以帮您节省很多时间。", "我们的"),
    ("我想跟您聊一下我们的新产品。", "我想跟"),
    ("这个方案主要是为了降低成本。", "这个方案主要是为了"),
    ("我们在上海和北京都有办公室。", "我们在"),
    ("您可以把合同发给我们的法务。", "您可以把"),
    ("最大的问题是我们的预算不够。", "最大的问题是"),
    ("我们已经和三家医院签了合同。", "我们已经和"),
    ("这个功能是专门给销售团队用的。", "这个功能是专门给"),
]
EN_TRAIL = [
    ("We could start next month, and then expand to the other teams.", "We could start next month, and"),
    ("The price is fair, but the contract is far too long.", "The price is fair, but"),
    ("So, um, what does your process look like today?", "So, um"),
    ("I called you because your team asked about automation.", "I called you because"),
    ("It would be, like, a really big change for the team.", "It would be, like"),
    ("We tried another tool, uh, last year.", "We tried another tool, uh"),
]
EN_COMPLETE = [s for s, _ in EN_CUT] + [
    "What would it take to get a pilot started?",
    "Thanks for your time today.",
    "That sounds good to me.",
    "We already have a vendor for that.",
]
ZH_CUT = [
    ("我们下周二见面讨论一下合同吧。", "我们下周二"),
    ("我们的软件可以把处理时间缩短一半。", "我们的软件可以"),
    ("大部分客户三个月内就能收回成本。", "大部分客户"),
    ("您能告诉我还有谁参与这个决定吗？", "您能告诉我"),
    ("我们可以提供百分之十五的折扣。", "我们可以提供"),
    ("试点项目下个月从财务部开始。", "试点项目下个月"),
]
ZH_TRAIL = [
    ("我觉得，这个价格有点高。", "我觉得"),
    ("因为我们的预算有限，所以要慢慢来。", "因为"),
    ("然后我们再看看效果怎么样。", "然后"),
    ("价格可以，但是合同期太长了。", "价格可以，但是"),
    ("嗯，那个，我们再考虑一下。", "嗯，那个"),
]
ZH_COMPLETE = [s for s, _ in ZH_CUT] + ["谢谢您今天抽出时间。", "这个听起来不错。", "我们已经有供应商了。"]
BACKCHANNELS = [("yeah", "en"), ("mm-hm", "en"), ("uh-huh", "en"), ("right", "en"), ("okay", "en"),
                ("嗯", "zh"), ("对", "zh"), ("好的", "zh"), ("是的", "zh")]
NOT_BACKCHANNELS = [("Yeah, but the price is too high.", "en"), ("Okay, send me the contract.", "en"),
                    ("Right now we use spreadsheets.", "en"), ("对，但是价格太高了。", "zh"),
                    ("好的，我们下周再谈。", "zh")]


@dataclass
class Case:
    kind: str  # cut | cut-fn | trail | complete
    language: str
    text: str
    audio: np.ndarray
    pause: tuple[int, int] | None = None  # [start, end) of the inserted pause (stream samples)
    speech_end: int = 0  # last voiced sample of a complete sentence (stream samples)
    words: str = ""  # what was said before the pause (smart+words)
    odds: object = None  # the ASR's ending odds for ``words`` (Transcript.ending), when it gave them
    speed: float = 1.0
    words_at: int = 0  # stream sample at which ``words`` reach the listening stage (the ASR's time)


@dataclass
class Row:
    name: str
    false_cuts: int = 0
    cut_cases: int = 0
    missed: int = 0
    complete_cases: int = 0
    delays_ms: list[float] = field(default_factory=list)
    waits_ms: list[float] = field(default_factory=list)  # the same, in stream time only (no inference)
    inference_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    early: tuple[int, int] = (0, 0)  # model runs started early at a pause, and of those used at the ask
    groups: dict[str, list[int]] = field(default_factory=dict)  # "en cut" -> [failed, cases]
    talked_over: int = 0  # false cut-offs whose final does not end on a cue: the buyer would reply
    held_complete: int = 0  # complete sentences whose final ends on a cue: held for the patience


def build(pauses: list[float], speeds: list[float]) -> list[Case]:
    cases: list[Case] = []
    n = 0
    for speed in speeds:
        for language, cuts, fn_cuts, trails, completes in (("en", EN_CUT, EN_CUT_FN, EN_TRAIL, EN_COMPLETE),
                                                           ("zh", ZH_CUT, ZH_CUT_FN, ZH_TRAIL, ZH_COMPLETE)):
            for kind, items in (("cut", cuts), ("cut-fn", fn_cuts), ("trail", trails)):
                for whole_text, prefix_text in items:
                    whole, words = spoken(whole_text, language, speed)
                    at = cut_point(whole, words, word_after(whole_text, prefix_text))
                    pause_s = pauses[n % len(pauses)]
                    n += 1
                    gap = silence(int(pause_s * 1000))
                    lead = silence(LEAD_MS)
                    audio = np.concatenate([lead, whole[:at], gap, whole[at:], silence(TAIL_MS)])
                    start = lead.size + at
                    cases.append(Case(kind, language, f"{prefix_text} | ({pause_s:.1f}s)", audio,
                                      (start, start + gap.size), words=prefix_text, speed=speed))
            for text in completes:
                spoken_audio, _ = spoken(text, language, speed)
                lead = silence(LEAD_MS)
                cases.append(Case("complete", language, text,
                                  np.concatenate([lead, spoken_audio, silence(TAIL_MS)]),
                                  speech_end=lead.size + voiced_span(spoken_audio)[1], words=text, speed=speed))
    return cases


WORDS_AFTER_MS = 64  # the speculative final starts when the VAD hears the pause: ~2 windows after the last sound


def attach_words(cases: list[Case], arrive_ms: float | None = None) -> str:
    """What the ASR says was spoken up to each pause, and how long it took: the speculative final
    that ``hear_words`` gets while the endpointer waits. English: tiny.en on the audio up to the
    pause (it drops trailing "uh"/"but" and puts a full stop after fragments, as a live call would
    see). Mandarin: no Mandarin model is installed offline, so the script's own words, arriving
    after the English decodes' median time. ``arrive_ms``: words reach the stage this long after the
    pause instead (0: at once, as when an interim already covers the speech up to the pause)."""
    from media_pipeline.engine_pool import asr_options
    from media_pipeline.engines import get_asr_engine

    try:
        asr = get_asr_engine("faster_whisper", **asr_options())  # as a live call decodes: the 10 s window
    except Exception as exc:  # noqa: BLE001 - then every case gets its script text
        asr = None
        note = f"ASR unavailable ({exc}): script text for every case"
    took = []
    for case in cases:
        end = case.pause[0] if case.pause is not None else case.speech_end
        if asr is None or case.language != "en":
            continue
        clip = case.audio[max(0, LEAD_MS * RATE // 1000 - RATE * 3 // 10) : end + RATE // 10].astype(np.float32)
        started = time.perf_counter()
        transcript = asr.transcribe(clip, language="en")
        case.words, case.odds = transcript.text.strip(), transcript.ending
        took.append((time.perf_counter() - started) * 1000)
    decode_ms = float(np.median(took)) if took else 150.0
    after = WORDS_AFTER_MS + decode_ms if arrive_ms is None else arrive_ms
    for case in cases:
        case.words_at = (case.pause[0] if case.pause is not None else case.speech_end) + int(after * RATE / 1000)
    if asr is not None:
        note = (f"words: tiny.en for English (decode p50 {decode_ms:.0f} ms), the script for Mandarin; "
                f"they reach the listening stage {after:.0f} ms after the pause begins")
    return note


def run_case(listening: Listening, case: Case, *, with_words: bool) -> list:
    """Feed ``case`` in 32 ms batches, as fast as it goes, except while a model run started early at a
    pause is in flight: then the wall clock is held to the stream's (a batch is not fed before the
    time it would arrive in a live call), so the run gets the head start it has in a call. Fed
    flat out, a machine whose inference takes longer than the scorer's short wait (``Listening.
    _early_verdict``) would answer "pending" at the ask point and add a retry to every delay."""
    events = []
    early, began = None, 0.0
    for i in range(0, case.audio.size, BATCH):
        batch = case.audio[i : i + BATCH]
        running = listening._early  # noqa: SLF001 - the bench paces the stream to the model run in flight
        if running is not None:
            if running is not early:
                early, began = running, time.perf_counter()
            ahead = (i + batch.size - running[2]) / RATE - (time.perf_counter() - began)
            if ahead > 0 and not running[1].done():
                concurrent.futures.wait([running[1]], timeout=ahead)
        if with_words and case.words and i >= case.words_at:
            listening.hear_words(case.words, case.pause[0] if case.pause is not None else case.speech_end,
                                 case.language, case.odds)
        listening.append(batch)
        events += listening.score(batch)
        listening.trim(listening.detector.endpointer.speech_start)
    return events + listening.finish()


def run_row(name: str, engines: Engines, cases: list[Case]) -> Row:
    row = Row(name)
    with_words = "+words" in name
    for case in cases:
        # The rows without "+reask" ask once per pause (TURN_REASK_SILENCE_MS=0); "+reask" rows ask
        # an unsure pause again, as the endpointer does by default (media_pipeline/turns/policy.py).
        with override_settings(**({} if name.endswith("+reask") else {"TURN_REASK_SILENCE_MS": 0})):
            listening = Listening(engines, end_silence_ms=400)
        events = run_case(listening, case, with_words=with_words)
        row.early = (row.early[0] + listening.early_started, row.early[1] + listening.early_used)
        ends = [e for e in events if e.kind == "speech_end"]
        asked = [e.verdict for e in events if e.verdict is not None and e.verdict.inference_ms]
        row.inference_ms += [v.inference_ms for v in asked]
        group = f"{case.language} {case.kind}"
        tally = row.groups.setdefault(group, [0, 0])
        tally[1] += 1
        if case.pause is not None:
            row.cut_cases += 1
            start, stop = case.pause
            cut = [e for e in ends if start - BATCH <= e.end_sample <= stop + BATCH // 2]
            if cut:
                row.false_cuts += 1
                tally[0] += 1
                held = trailing_cue(case.words, case.language, case.odds) if case.words else ""
                row.talked_over += not held
                row.failures.append(f"cut   {case.language} {case.text} [{case.words}]: ended {cut[0].reason}"
                                    + (f", final held on {held!r}" if held else ", buyer replies"))
            continue
        if case.words and trailing_cue(case.words, case.language, case.odds):
            row.held_complete += 1
            row.failures.append(f"held  {case.language} {case.text} [{case.words}]: the final ends on a cue")
        row.complete_cases += 1
        end = next((e for e in ends if e.end_sample >= case.speech_end - RATE // 2), None)
        if end is None:
            row.missed += 1
            tally[0] += 1
            row.failures.append(f"never {case.language} {case.text}")
            continue
        if end.reason != "complete":
            row.missed += 1
            tally[0] += 1
            p = getattr(end.verdict, "probability", None)
            row.failures.append(f"late  {case.language} {case.text} [{case.words}]: {end.reason} p={p}")
        row.waits_ms.append((end.detected_at - case.speech_end) * 1000 / RATE)
        decided = end.detected_at
        if end.verdict is not None and end.verdict.inference_ms:
            # Live, the decision waits for the inference: begun at the ask point, or early at the pause.
            started = end.verdict.started_at if end.verdict.started_at >= 0 else end.detected_at
            decided = max(decided, started + end.verdict.inference_ms * RATE / 1000)
        row.delays_ms.append((decided - case.speech_end) * 1000 / RATE)
    return row


def punctuation_check(cases: list[Case]) -> str:
    """How the ASR punctuates what was said before each pause: is a full stop evidence of an end?"""
    counts: dict[str, dict[str, int]] = {}
    for case in cases:
        if case.language != "en" or not case.words:
            continue
        text = case.words.rstrip()
        mark = "..." if text.endswith(("...", "…")) else text[-1] if text[-1] in ".?!," else "none"
        tally = counts.setdefault("complete" if case.kind == "complete" else "cut/trail", {})
        tally[mark] = tally.get(mark, 0) + 1
    return "tiny.en's last mark before the pause: " + "; ".join(
        f"{kind}: " + ", ".join(f"{mark!r} {n}" for mark, n in sorted(tally.items())) for kind, tally in counts.items())


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


def backchannel_check() -> list[str]:
    lines = []
    right = 0
    items = [(t, lang, True) for t, lang in BACKCHANNELS] + [(t, lang, False) for t, lang in NOT_BACKCHANNELS]
    for text, lang, expected in items:
        right += is_backchannel(text, lang) == expected
    lines.append(f"backchannel classifier on text: {right}/{len(items)} right")
    try:
        from media_pipeline.engines import get_asr_engine

        asr = get_asr_engine("faster_whisper")
    except Exception as exc:  # noqa: BLE001 - the ASR half is a bonus
        return [*lines, f"(ASR check skipped: {exc})"]
    heard = []
    for text, lang in [*BACKCHANNELS, *NOT_BACKCHANNELS]:
        if lang != "en":
            continue  # the offline model is tiny.en
        said = asr.transcribe(np.concatenate([silence(300), speak(text), silence(300)]), language="en").text.strip()
        heard.append(f"{text!r} -> {said!r}: {'backchannel' if is_backchannel(said, 'en') else 'words'}")
    return [*lines, "English through tiny.en:", *("  " + h for h in heard)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pauses", default="0.4,0.6,0.8,1.0,1.2")
    parser.add_argument("--speeds", default="1.0,1.15")
    parser.add_argument("--rows", default="silence,smart,smart+words,smart+words+reask")
    parser.add_argument("--ask-ms", type=int, default=None)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--patience-ms", type=int, default=None)
    parser.add_argument("--reask-ms", type=int, default=None, help="TURN_REASK_SILENCE_MS (0: ask once)")
    parser.add_argument("--reask-threshold", type=float, default=None)
    parser.add_argument("--words-ms", type=float, default=None,
                        help="words arrive this long into the pause (default: VAD lag + tiny.en's decode time)")
    parser.add_argument("--failures", action="store_true", help="list every case that missed")
    parser.add_argument("--no-early", action="store_true", help="ask the model only at the ask point")
    args = parser.parse_args()
    from django.conf import settings

    overrides = {k: v for k, v in (("TURN_ASK_SILENCE_MS", args.ask_ms), ("TURN_COMPLETE_THRESHOLD", args.threshold),
                                   ("TURN_PATIENCE_MS", args.patience_ms), ("TURN_REASK_SILENCE_MS", args.reask_ms),
                                   ("TURN_REASK_THRESHOLD", args.reask_threshold)) if v is not None}
    cases = build([float(p) for p in args.pauses.split(",")], [float(s) for s in args.speeds.split(",")])
    words_note = attach_words(cases, args.words_ms)
    vad = get_vad_model()
    smart = SmartTurnDetector()
    smart.predict(np.zeros(RATE, dtype=np.float32))
    alone = []
    for _ in range(10):  # the model's own cost, one call at a time (the rows run it alongside the VAD)
        alone.append(smart.predict(cases[0].audio).inference_ms)
    turn_pool = BoundedExecutor("turn", max_workers=1, max_queue=2, block=False)
    kinds = {f"{lang} {k}": sum(c.kind == k and c.language == lang for c in cases)
             for lang in ("en", "zh") for k in ("cut", "cut-fn", "trail", "complete")}
    with override_settings(**overrides):
        print(f"cases: {kinds} (en+zh, speeds {args.speeds}, pauses {args.pauses} s); "
              f"ENDPOINT_SILENCE_MS=400, TURN_ASK_SILENCE_MS={settings.TURN_ASK_SILENCE_MS}, "
              f"TURN_COMPLETE_THRESHOLD={settings.TURN_COMPLETE_THRESHOLD}, "
              f"TURN_PATIENCE_MS={settings.TURN_PATIENCE_MS}, "
              f"TURN_REASK_SILENCE_MS={getattr(settings, 'TURN_REASK_SILENCE_MS', DEFAULT_REASK_SILENCE_MS)} "
              f"(+reask rows), TURN_REASK_THRESHOLD="
              f"{getattr(settings, 'TURN_REASK_THRESHOLD', DEFAULT_REASK_THRESHOLD)}")
        if words_note:
            print(words_note)
        print(f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; Smart Turn alone: "
              f"p50 {pct(alone, 50):.0f} ms, min {min(alone):.0f} ms per inference")
        print(f"{'row':<18} {'false cut-offs':>15} {'talked over':>12} {'missed ends':>12} {'delay p50':>10} "
              f"{'delay p95':>10} {'infer p50':>10} {'infer p95':>10} {'stream p50':>10} {'stream p95':>10}")
        rows = []
        for name in args.rows.split(","):
            engines = Engines(asr=None, tts=None, vad=vad, asr_pool=None, vad_pool=None, tts_pool=None,  # type: ignore[arg-type]
                              decode_pool=None, turn=None if name == "silence" else smart,  # type: ignore[arg-type]
                              turn_pool=None if args.no_early else turn_pool)
            row = run_row(name, engines, cases)
            rows.append(row)
            print(f"{row.name:<18} {row.false_cuts:>4}/{row.cut_cases:<3} "
                  f"{100 * row.false_cuts / row.cut_cases:5.1f}% {100 * row.talked_over / row.cut_cases:10.1f}%"
                  f" {100 * row.missed / row.complete_cases:10.1f}%"
                  f" {pct(row.delays_ms, 50):8.0f}ms {pct(row.delays_ms, 95):8.0f}ms"
                  f" {pct(row.inference_ms, 50):8.0f}ms {pct(row.inference_ms, 95):8.0f}ms"
                  f" {pct(row.waits_ms, 50):8.0f}ms {pct(row.waits_ms, 95):8.0f}ms")
    print(f"talked over: of the false cut-offs, those whose final (the words up to the pause) ends on no cue, so "
          f"the turn stage does not hold it and the buyer replies; complete sentences whose final ends on a cue "
          f"(held for the patience): {rows[-1].held_complete if rows else 0}/{rows[-1].complete_cases if rows else 0}")
    groups = list(rows[0].groups) if rows else []
    print("failed per group (cut/trail: ended inside the pause; complete: not ended at an ask):")
    print(f"{'row':<18} " + " ".join(f"{g:>13}" for g in groups))
    for row in rows:
        print(f"{row.name:<18} " + " ".join(f"{row.groups[g][0]:>6}/{row.groups[g][1]:<6}" for g in groups))
    if words_note:
        print(punctuation_check(cases))
    for row in rows:
        if row.early[0]:
            print(f"[{row.name}] model runs started early at a pause: {row.early[0]}, "
                  f"used at the ask point: {row.early[1]} (the rest: speech resumed first)")
    if args.failures:
        for row in rows:
            for failure in row.failures:
                print(f"  [{row.name}] {failure}")
    for line in backchannel_check():
        print(line)
    if rows and rows[-1].delays_ms:
        mean = statistics.mean(rows[-1].inference_ms or [0])
        print(f"(delay = last voiced sample -> decision in stream time + the inference it waited for; "
              f"{len(rows[-1].delays_ms)} complete sentences; {mean:.0f} ms mean inference)")


if __name__ == "__main__":
    main()
