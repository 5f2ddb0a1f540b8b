"""Published reference points for the conversation metrics, with where each number comes from.

Only numbers we could trace to a named study are here; each carries its source so the review page
can show it next to the trainee's value. These are observations about real B2B sales calls, not
laws: a practice call with an AI buyer is shorter and simpler, so use them as direction, not pass
marks. ``metric`` is the key in ``metrics.compute_all``'s output it relates to.

Deliberately left out: a target for the *rep's* longest monologue (we could not trace a figure to its
study) and a filler-word target (the one large study we found says fillers did not matter — recorded
below as a reference point with no target).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Benchmark:
    """One reference point. ``low``/``high`` bound the recommended range; either may be ``None``."""

    metric: str
    label_en: str
    label_zh: str
    value: float | None
    low: float | None
    high: float | None
    unit: str
    source: str
    url: str
    explain_en: str
    explain_zh: str


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        metric="talk_ratio",
        label_en="Talk ratio",
        label_zh="说话占比",
        value=0.43,
        low=None,
        high=0.65,
        unit="fraction of speaking time",
        source="Gong Labs, analysis of 25,537 B2B sales calls (2016, revisited 2025): the highest-converting "
        "talk-to-listen ratio was 43:57; reps talking more than 65% of the time converted worse.",
        url="https://www.gong.io/resources/labs/talk-to-listen-conversion-ratio/",
        explain_en="The share of the call's speaking time that was you. Around 43% means the buyer did most "
        "of the talking — which is where you learn their needs. Above 65% you are presenting, not selling.",
        explain_zh="通话中你说话时间所占的比例。约 43% 表示大部分时间是客户在说——这正是你了解需求的机会。"
        "超过 65% 就变成了单向宣讲，而不是销售对话。",
    ),
    Benchmark(
        metric="questions",
        label_en="Questions per discovery call",
        label_zh="每次需求探询通话的提问数",
        value=None,
        low=11,
        high=14,
        unit="questions per call",
        source="Gong Labs, discovery-call research on 519,000 B2B discovery calls (Chris Orlob, 2017): "
        "success peaked at 11-14 target questions per call, with diminishing returns above that.",
        url="https://www.slideshare.net/slideshow/navigating-sales-conversations-from-first-call-to-closed-deal/105791822",
        explain_en="How many questions you asked. Good discovery asks enough to understand the buyer's "
        "situation (about 11-14 in a full discovery call) but spreads them out so it feels like a "
        "conversation, not an interrogation.",
        explain_zh="你提出的问题数量。好的需求探询会问足够多的问题来了解客户情况"
        "（完整的探询通话约 11-14 个），并把问题分散在整个对话中，让客户感觉是交流而不是审问。",
    ),
    Benchmark(
        metric="longest_monologue_ms.buyer",
        label_en="Buyer's longest uninterrupted stretch",
        label_zh="客户最长连续发言",
        value=None,
        low=50_000,
        high=None,
        unit="ms",
        source="Gong, 'The Science of Winning Sales Conversations' (257,967 B2B sales calls): when the "
        "customer spoke for up to about 4 minutes straight the win rate rose; when their longest "
        "uninterrupted stretch was only about 50 s, close rates were below average.",
        url="https://lemonly.com/work/winning-sales-conversations-infographic",
        explain_en="The longest time the buyer talked without you cutting in. Long buyer stories are a good "
        "sign: you asked something that mattered to them and let them answer.",
        explain_zh="客户在不被你打断的情况下连续说话的最长时间。客户愿意长时间讲述是好迹象："
        "说明你问到了他们在意的问题，并且耐心听完。",
    ),
    Benchmark(
        metric="patience_ms",
        label_en="Pause before responding after an objection",
        label_zh="听到异议后的停顿",
        value=None,
        low=1_000,
        high=None,
        unit="ms",
        source="Gong Labs, 67,149 sales meetings: after a buyer objection, top performers paused about five "
        "times longer before replying than average reps (reported as roughly 1.5 s vs 0.3 s).",
        url="https://breakintotechsales.com/power-of-the-pause",
        explain_en="How long you wait after the buyer stops before you speak. A short pause (about a second) "
        "shows you heard them, gives them room to add more, and keeps you calm after an objection.",
        explain_zh="客户说完后你开口前等待的时间。短暂停顿（约一秒）表明你在认真听，给客户补充的空间，"
        "也能让你在面对异议时保持冷静。",
    ),
    Benchmark(
        metric="words_per_minute.trainee",
        label_en="Speaking pace",
        label_zh="语速",
        value=173,
        low=None,
        high=188,
        unit="words per minute",
        source="Gong Labs, 67,149 sales meetings: average pace about 173 words per minute, rising to about "
        "188 when reps were hit with an objection they could not handle.",
        url="https://cuepitch.com/blog/sound-of-panic-sales-objections",
        explain_en="How fast you speak. Speeding up under pressure is a tell the buyer hears; keep your pace "
        "steady, especially after an objection. (Chinese pace is estimated from characters / 1.5.)",
        explain_zh="你的说话速度。压力下语速加快是客户能察觉的信号；尤其在面对异议时要保持语速平稳。"
        "（中文语速按字数 / 1.5 估算词数。）",
    ),
    Benchmark(
        metric="filler_rate",
        label_en="Filler words",
        label_zh="口头禅 / 填充词",
        value=None,
        low=None,
        high=None,
        unit="per 100 words",
        source="Gong Labs, nearly half a million B2B sales calls: filler words ('so', 'you know', …) "
        "showed no statistically significant link to win rates or to rep performance tier.",
        url="https://www.business2community.com/sales-management/filler-words-sales-new-data-reveals-impact-01844935",
        explain_en="Words like 'um', 'you know', 'basically' per 100 words. The data says a few fillers "
        "do not lose deals; watch this only if it distracts from what you are saying.",
        explain_zh="每 100 个词中“嗯”“那个”“就是”等填充词的数量。数据显示少量填充词并不影响成交；"
        "只有当它们干扰表达时才需要注意。",
    ),
)


def benchmarks_for(metric: str) -> tuple[Benchmark, ...]:
    """Reference points for one metric key (e.g. ``"talk_ratio"``)."""
    return tuple(b for b in BENCHMARKS if b.metric == metric)


def as_dicts() -> list[dict[str, object]]:
    """All benchmarks as JSON-serialisable dicts, for the API and the review page."""
    return [asdict(b) for b in BENCHMARKS]
