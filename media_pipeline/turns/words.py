"""Cues in the words: a turn that ends on "and", "um" or "因为" is not over; "yeah" is not a turn.

Two plain functions over a transcript, English and Mandarin:

- :func:`trailing_cue` — the conjunction, filler or unfinished clause a transcript ends on ("so",
  "because", "um", "I think", "the", "我觉得", "然后", "嗯"…): the speaker paused mid-thought, so
  the end-of-turn policy waits up to its patience instead of ending the turn.
- :func:`is_backchannel` — the whole utterance is listener talk ("mm-hm", "yeah", "right",
  "okay", "嗯", "对", "好的"): recorded, but it neither takes the turn nor stops the buyer.

Which rules apply is decided by the script of the text itself (a zh-CN call may hear an English
"okay"); ``language`` is only the tie-breaker for text with no letters at all. Whisper's
punctuation is not trusted as an ending (it puts a full stop after nearly everything), but a
trailing comma, dash or ellipsis is taken as "more to come", and so are its *odds* of one
(``EndingOdds``, when the engine gives them). On eSpeak sentences cut mid-clause (bench/
turn_taking.py's 44 English cuts, tiny.en) Whisper's probability of "…"/","/"-" right after the
last word had a median of 0.16 after a content word and 0.42–0.46 after a function word or
conjunction, even where it wrote a full stop, and the few below 0.1 had a full stop below 0.3;
after the 24 finished sentences it was at most 0.08, with a full stop at 0.55 or more. The bars
below sit between (one cut of 44 still passes as finished).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Protocol

# --- English -----------------------------------------------------------------------------------
EN_CONJUNCTIONS = frozenset({
    "and", "but", "or", "so", "because", "cause", "cuz", "since", "although", "though", "while",
    "if", "unless", "when", "whereas", "plus", "nor", "whether", "than",
})
EN_FILLERS = frozenset({"um", "umm", "uh", "uhh", "er", "erm", "ah", "eh", "like", "basically"})
# A clause cannot end on these function words: articles, possessives, prepositions that need an
# object, subject pronouns, "to", contracted auxiliaries ("we're", "I'll": "Yes, I'll." is not
# English) and "gonna"/"wanna". People hesitate most often right here, before the content word
# ("we should meet on … Tuesday"). Not "her" ("I told her"), "you" ("thank you"), "this"/"that"/
# "some" (pronouns too), "before"/"after" (adverbs too). A question mark is trusted ("where are
# you from?" ends on a preposition).
EN_UNFINISHED = frozenset({
    "the", "a", "an", "my", "our", "your", "their", "his", "its", "every", "whose", "very",
    "of", "for", "with", "from", "into", "onto", "upon", "about", "at", "by", "to", "toward", "towards",
    "via", "per", "during", "between", "among", "amongst", "including", "regarding", "as",
    "i", "we", "they", "he", "she",
    "i'm", "we're", "you're", "they're", "he's", "she's", "it's", "that's", "there's", "here's", "what's",
    "who's", "let's", "i've", "we've", "you've", "they've", "i'd", "we'd", "you'd", "they'd", "he'd", "she'd",
    "i'll", "we'll", "you'll", "they'll", "he'll", "she'll", "it'll", "that'll", "there'll",
    "gonna", "wanna", "gotta",
})
# "on"/"in" need an object unless they are a verb's particle ("go on", "log in", "count me in").
_OBJECTS = ("me", "you", "us", "them", "him", "her", "it")
EN_PARTICLE_VERBS = {
    "on": frozenset({"go", "goes", "going", "went", "gone", "come", "comes", "coming", "came", "move", "moving",
                     "moved", "carry", "carrying", "hold", "holding", "later", "so", "now", "turn", "turned", "log",
                     "logged", "put", "keep", "kept", "get", "got", "getting", "catch", "caught", "hang", "early",
                     "further", "sign", "signed", "switch", "switched", "try", "tried", "and", *_OBJECTS}),
    "in": frozenset({"come", "comes", "coming", "came", "log", "logged", "sign", "signed", "check", "checked",
                     "fill", "join", "joined", "opt", "plug", "plugged", "chip", "count", "all", "get", "got",
                     "settle", "settled", "move", "moved", "lock", "locked", "kick", "kicked", "cash", "break",
                     "broke", "buy", "bought", "dive", "jump", "pitch", "step", "stepped", "stay", "staying",
                     "i'm", "we're", "you're", "they're", "he's", "she's", "it's", *_OBJECTS}),
}
# An auxiliary or modal at the end leaves its verb to come ("the budget is", "our team would"),
# unless it is an elliptical answer after a pronoun ("yes, it is", "we can", "I think we should")
# or ends an embedded question ("that's where the problem is", "I know what the price was").
EN_AUXILIARIES = frozenset({
    "is", "are", "was", "were", "am", "be", "been", "have", "has", "had", "do", "does", "did", "can", "could",
    "will", "would", "shall", "should", "may", "might", "must",
})
EN_ELLIPSIS_BEFORE = frozenset({
    "i", "you", "we", "they", "he", "she", "it", "that", "this", "there", "here", "who", "which", "what", "so",
    "not", "too", "also", "really", "still", "all", "one", "ones", "certainly", "definitely", "probably",
    "already", "never", "always", "surely", "indeed", "sure", "me", "us", "them", "him", "her",
})
EN_EMBEDDED_QUESTION = frozenset({"where", "what", "how", "who", "which", "whatever", "wherever", "however", "why"})
EN_SO_COMPLETE = frozenset({  # "... I think so." is an ending; "..., so" is not
    "think", "hope", "guess", "believe", "suppose", "imagine", "expect", "said", "say", "not", "do",
    "did", "why", "seems", "seem", "so", "or", "is", "be",
})
EN_PHRASES = ("kind of", "sort of", "such as", "as well as", "in order to", "rather than", "and then",
              "and so", "so that", "the thing is")
EN_COMPLETE_PHRASES = ("and so on", "for the time being", "as well", "as usual", "as always", "as such",
                       "as soon as possible", "as far as i know")

# "a fifteen percent", "a 15%": a percentage after "a" is a determiner, its noun still to come ("…a
# 15% discount"); tiny.en writes "a 15%." with the mark in the token, so the ASR's odds cannot say it.
# Not "a hundred percent" ("I agree a hundred percent": an adverb, complete).
EN_NUMBER_WORDS = frozenset({
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty", "thirty",
    "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "half", "and", "point",
})
_A_PERCENT = re.compile(r"\ba ((?:\d[\d.,]*)|(?:[a-z]+(?:[ -][a-z]+){0,3})) ?(?:%|percent|per cent)\W*$")
A_PERCENT_CUE = "a … percent"

# --- Mandarin ----------------------------------------------------------------------------------
# Conjunctions, fillers and clause openers, and function words a sentence cannot end on:
# prepositions and coverbs (把 被 让 比 从 向 对于 关于 为了…), aspect/time words that need a verb
# (正在 已经 将), "百分之" before its number, "问题是"-style frames. Not 的 ("是的", "挺好的",
# "我们是做软件的" all end on it), 在 ("他不在"), 是/要/会/能/可以 ("是。", "我要。", "可以。"
# are whole answers) or a bare pronoun ("是我们"): each ends complete sentences too often.
ZH_CUES = (
    "我觉得", "我认为", "我想", "我是说", "就是说", "也就是", "比如说", "比如", "因为", "所以", "然后",
    "但是", "可是", "不过", "而且", "还有", "并且", "或者", "还是", "如果", "虽然", "那么", "那个",
    "这个", "就是", "的话", "以及", "以便", "另外", "首先", "其次", "嗯", "呃", "和", "跟", "与",
    "把", "被", "让", "比", "从", "向", "往", "对于", "关于", "为了", "除了", "根据", "按照", "正在",
    "已经", "将", "及", "百分之", "只要", "即使", "尽管", "假如", "要是", "无论", "一边", "其实",
    "问题是", "关键是", "主要是", "意思是", "重点是", "原因是", "因此", "于是", "接着",
)

# --- backchannels ------------------------------------------------------------------------------
EN_BACKCHANNEL_PHRASES = {
    "i see": "isee", "got it": "gotit", "all right": "alright", "that's right": "thatsright",
    "makes sense": "makessense", "of course": "ofcourse", "uh huh": "uhhuh", "mm hm": "mmhm",
    "mm hmm": "mmhmm", "sounds good": "soundsgood", "uh uh": "uhuh",
}
EN_BACKCHANNELS = frozenset({
    "mmhm", "mmhmm", "mhm", "mhmm", "hmm", "hm", "mm", "mmm", "uhhuh", "uhuh", "yeah", "yes", "yep",
    "yup", "yea", "ya", "right", "okay", "ok", "kay", "sure", "alright", "oh", "ah", "aha", "true",
    "exactly", "cool", "gotcha", "isee", "gotit", "thatsright", "makessense", "ofcourse", "soundsgood",
    "indeed", "totally", "absolutely", "nice", "great",
})
ZH_BACKCHANNELS = (
    "嗯哼", "嗯嗯", "嗯", "对的", "对对", "对", "好的", "好吧", "好", "是的", "是啊", "是", "没错", "哦", "噢",
    "喔", "啊", "明白", "了解", "知道了", "行", "可以", "当然", "确实", "懂了", "哈",
)
_HUM = re.compile(r"^[mh]*m[mh]*$")  # "mm", "mmm", "hmm", "mhm", "mmhmm": however many letters ASR writes
MAX_BACKCHANNEL_WORDS = 4  # "oh yeah, right, okay" is still listening; five words are a reply

# The ASR's odds (``EndingOdds``) that say "the speaker broke off": a "go on" mark this likely, or a
# full stop this unlikely, right after the last word.
TRAILS_OFF_MORE = 0.1
TRAILS_OFF_STOP = 0.3
# ...but only after a few words: after a whole short answer ("Yes.", "I see.", "Maybe next year.")
# Whisper's odds of a comma are as high as after a fragment (0.1-0.3), since such answers are
# so often followed by more in its training text.
TRAILS_OFF_MIN_WORDS = 4
TRAILS_OFF_MIN_HAN = 6
ASR_TRAILS_OFF = "…?"  # the cue's name when only the odds say it


class Odds(Protocol):
    """``media_pipeline.engines.asr.base.EndingOdds`` (words.py stays free of engine imports)."""

    more: float
    stop: float


def trails_off(odds: Odds | None) -> bool:
    """The ASR's own odds say the speech broke off mid-thought (False when it gave none)."""
    return odds is not None and (odds.more >= TRAILS_OFF_MORE or odds.stop < TRAILS_OFF_STOP)


_PUNCT = re.compile(r"[^\w\s'’-]+", re.UNICODE)
_MORE_TO_COME = ("…", "...", ",", "，", "、", "-", "—", "–")


def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "")


def _chinese(text: str, language: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return language.lower().startswith(("zh", "cmn", "yue"))
    return _is_cjk(letters[-1])


def _words(text: str) -> list[str]:
    text = _PUNCT.sub(" ", text.lower().replace("’", "'"))
    return [w.strip("-'") for w in text.split() if w.strip("-'")]


def _long_enough(text: str, language: str) -> bool:
    if _chinese(text, language):
        return sum(map(_is_cjk, text)) >= TRAILS_OFF_MIN_HAN
    return len(_words(text)) >= TRAILS_OFF_MIN_WORDS


def trailing_cue(text: str, language: str = "en", odds: Odds | None = None) -> str:
    """The words ``text`` ends on that say "more to come", or "" if its ending could be a full stop.

    ``odds``: the ASR's ending odds for ``text`` (``EndingOdds``), if it gave them; they count
    (as ``ASR_TRAILS_OFF``) only where no word says it already.
    """
    stripped = text.strip()
    if not stripped:
        return ""
    cue = _word_cue(stripped, language)
    if not cue and trails_off(odds) and _long_enough(stripped, language):
        return ASR_TRAILS_OFF
    return cue


def _word_cue(stripped: str, language: str) -> str:
    ending = next((end for end in _MORE_TO_COME if stripped.endswith(end)), "")
    if ending:
        return ending
    if stripped.endswith(("?", "？")):
        return ""
    if _chinese(stripped, language):
        han = "".join(ch for ch in stripped if _is_cjk(ch))
        return next((cue for cue in ZH_CUES if han.endswith(cue)), "")
    words = _words(stripped)
    if not words:
        return ""
    if _percent_needs_noun(stripped):
        return A_PERCENT_CUE
    tail = " ".join(words[-4:])
    for phrase in EN_PHRASES:
        if tail == phrase or tail.endswith(" " + phrase):
            return phrase
    for phrase in EN_COMPLETE_PHRASES:
        if tail == phrase or tail.endswith(" " + phrase):
            return ""
    last = words[-1]
    before = words[-2] if len(words) > 1 else ""
    if last == "so" and before in EN_SO_COMPLETE:
        return ""
    if last in EN_CONJUNCTIONS or last in EN_FILLERS or last in EN_UNFINISHED:
        return last
    if last in EN_PARTICLE_VERBS and before and before not in EN_PARTICLE_VERBS[last]:
        return last
    if last in EN_AUXILIARIES and before and before not in EN_ELLIPSIS_BEFORE and before not in EN_AUXILIARIES \
            and not EN_EMBEDDED_QUESTION.intersection(words[-5:-1]):
        return last
    return ""


def _percent_needs_noun(stripped: str) -> bool:
    match = _A_PERCENT.search(stripped.lower().replace("’", "'"))
    if match is None:
        return False
    number = match.group(1)
    if number[0].isdigit():
        return number.rstrip(".,") not in ("100", "100.0")
    return all(word in EN_NUMBER_WORDS for word in re.split(r"[ -]", number))


def is_backchannel(text: str, language: str = "en") -> bool:
    """True when the whole of ``text`` is listener feedback (a few backchannel words, nothing else)."""
    stripped = text.strip()
    if not stripped:
        return False
    if _chinese(stripped, language):
        rest = "".join(ch for ch in stripped if ch.isalnum())
        count = 0
        while rest:
            match = next((b for b in ZH_BACKCHANNELS if rest.startswith(b)), None)
            if match is None:
                return False
            rest, count = rest[len(match):], count + 1
        return 0 < count <= MAX_BACKCHANNEL_WORDS * 2  # "嗯嗯对对好的" is still one nod
    joined = " ".join(_words(stripped.replace("-", " ")))
    for phrase, token in EN_BACKCHANNEL_PHRASES.items():
        joined = re.sub(rf"\b{re.escape(phrase)}\b", token, joined)
    words = joined.split()
    return 0 < len(words) <= MAX_BACKCHANNEL_WORDS and all(w in EN_BACKCHANNELS or _HUM.match(w) for w in words)
