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
trailing comma, dash or ellipsis is taken as "more to come".
"""

from __future__ import annotations

import re
import unicodedata

# --- English -----------------------------------------------------------------------------------
EN_CONJUNCTIONS = frozenset({
    "and", "but", "or", "so", "because", "cause", "cuz", "since", "although", "though", "while",
    "if", "unless", "when", "whereas", "plus", "nor", "whether", "than",
})
EN_FILLERS = frozenset({"um", "umm", "uh", "uhh", "er", "erm", "ah", "eh", "like", "basically"})
# A clause cannot end here: articles, prepositions, possessives, subject pronouns. Not auxiliaries
# or "so"/"then"/"though"/"while" in general: "yes, we can", "I think so", "see you then", "for a
# while" are complete. A question mark is trusted ("where are you from?" ends on a preposition).
EN_UNFINISHED = frozenset({
    "the", "a", "an", "of", "for", "with", "from", "into", "about", "at", "by", "my", "our",
    "your", "their", "his", "i", "we're", "i'm", "it's", "that's", "whose", "very",
})
EN_SO_COMPLETE = frozenset({  # "... I think so." is an ending; "..., so" is not
    "think", "hope", "guess", "believe", "suppose", "imagine", "expect", "said", "say", "not", "do",
    "did", "why", "seems", "seem", "so", "or", "is", "be",
})
EN_PHRASES = ("kind of", "sort of", "such as", "as well as", "in order to", "rather than", "and then",
              "and so", "so that", "the thing is")

# --- Mandarin ----------------------------------------------------------------------------------
ZH_CUES = (
    "我觉得", "我认为", "我想", "我是说", "就是说", "也就是", "比如说", "比如", "因为", "所以", "然后",
    "但是", "可是", "不过", "而且", "还有", "并且", "或者", "还是", "如果", "虽然", "那么", "那个",
    "这个", "就是", "的话", "以及", "以便", "另外", "首先", "其次", "嗯", "呃", "和", "跟", "与",
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


def trailing_cue(text: str, language: str = "en") -> str:
    """The words ``text`` ends on that say "more to come", or "" if its ending could be a full stop."""
    stripped = text.strip()
    if not stripped:
        return ""
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
    tail = " ".join(words[-4:])
    for phrase in EN_PHRASES:
        if tail == phrase or tail.endswith(" " + phrase):
            return phrase
    last = words[-1]
    if last == "so" and len(words) > 1 and words[-2] in EN_SO_COMPLETE:
        return ""
    if last in EN_CONJUNCTIONS or last in EN_FILLERS or last in EN_UNFINISHED:
        return last
    return ""


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
