"""Filler words and word counts, in English and Chinese.

Pure text functions: no timing, no speakers. `metrics.py` feeds them the trainee's texts.

Rules (kept deliberately simple and documented, because a trainee will ask "why did it count that?"):

* **Language.** ``"zh"``, ``"zh-CN"``, ``"cmn"``, ``"chinese"`` … select the Chinese rules; anything
  else selects English.
* **English words** are runs of Latin letters, digits and apostrophes (``don't`` is one word).
* **Chinese words.** Chinese is not written with spaces, and a segmenter would be a heavy dependency
  for a coaching number, so a Chinese "word" is estimated as ``CJK characters / 1.5`` (the average
  length of a modern Chinese word is about 1.5 characters), plus any Latin words mixed in
  (``我们的CRM`` = 3 / 1.5 + 1 = 3 words). The result is a float.
* **English fillers** (case-insensitive, whole words): um, uh, er, ah (and their stretched spellings
  umm, uhh, erm, ahh), basically, actually, literally, "you know", "sort of", "kind of", "I mean",
  "right?" (only "right" directly followed by a question mark), and "like" — except after words that
  make it a verb or a comparison ("I like", "would like", "I'd like", "looks like", "feel like" …,
  see ``_LIKE_NOT_FILLER_AFTER``).
* **Chinese fillers**: 嗯 呃 啊 那个 就是 然后 这个 对吧 其实, counted as every non-overlapping
  occurrence in the text. Several are also ordinary words (这个产品 "this product", 然后 "then"), so
  the Chinese count is an upper bound: use it to compare sessions, not as a grammar verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ENGLISH_FILLERS: tuple[str, ...] = (
    "um", "uh", "er", "ah", "like", "you know", "basically", "actually",
    "sort of", "kind of", "i mean", "literally", "right?",
)
CHINESE_FILLERS: tuple[str, ...] = ("嗯", "呃", "啊", "那个", "就是", "然后", "这个", "对吧", "其实")

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z0-9]+)*")
_CHINESE_LANGS = ("zh", "cmn", "chinese", "yue")

# "like" is a verb or a preposition after these words, not a filler.
_LIKE_NOT_FILLER_AFTER = frozenset({
    "i", "you", "we", "they", "would", "i'd", "you'd", "we'd", "they'd", "he'd", "she'd",
    "to", "don't", "didn't", "doesn't", "do", "does", "did", "look", "looks", "looked",
    "feel", "feels", "felt", "sound", "sounds", "seem", "seems", "something", "anything",
    "nothing", "more", "much", "just",
})

# Pattern per English filler (except "like", handled token-wise). Stretched spellings map to one key.
_EN_PATTERNS: dict[str, re.Pattern[str]] = {
    "um": re.compile(r"\bum+\b", re.IGNORECASE),
    "uh": re.compile(r"\buh+\b", re.IGNORECASE),
    "er": re.compile(r"\ber+m?\b", re.IGNORECASE),
    "ah": re.compile(r"\bah+\b", re.IGNORECASE),
    "you know": re.compile(r"\byou know\b", re.IGNORECASE),
    "basically": re.compile(r"\bbasically\b", re.IGNORECASE),
    "actually": re.compile(r"\bactually\b", re.IGNORECASE),
    "sort of": re.compile(r"\bsort of\b", re.IGNORECASE),
    "kind of": re.compile(r"\bkind of\b", re.IGNORECASE),
    "i mean": re.compile(r"\bi mean\b", re.IGNORECASE),
    "literally": re.compile(r"\bliterally\b", re.IGNORECASE),
    "right?": re.compile(r"\bright\s*[?？]", re.IGNORECASE),
}


def is_chinese(language: str | None) -> bool:
    """True when ``language`` names Chinese (``zh``, ``zh-CN``, ``cmn`` …)."""
    return bool(language) and language.strip().lower().startswith(_CHINESE_LANGS)


def word_count(text: str, language: str) -> float:
    """Words in ``text`` under the rules in the module docstring (a float for Chinese)."""
    latin = len(_LATIN_WORD.findall(text))
    if is_chinese(language):
        return len(_CJK.findall(text)) / 1.5 + latin
    return float(latin)


def count_fillers(text: str, language: str) -> dict[str, int]:
    """Occurrences of each filler in ``text``; only fillers that occur are keys."""
    counts: dict[str, int] = {}
    if is_chinese(language):
        for filler in CHINESE_FILLERS:
            n = text.count(filler)  # str.count is non-overlapping; the list has no nested entries
            if n:
                counts[filler] = n
        return counts
    for filler, pattern in _EN_PATTERNS.items():
        n = len(pattern.findall(text))
        if n:
            counts[filler] = n
    tokens = [t.lower() for t in _LATIN_WORD.findall(text)]
    likes = sum(
        1 for i, tok in enumerate(tokens)
        if tok == "like" and (i == 0 or tokens[i - 1] not in _LIKE_NOT_FILLER_AFTER)
    )
    if likes:
        counts["like"] = likes
    return counts


def filler_stats(texts: Iterable[str], language: str) -> dict[str, object]:
    """Fillers and words over several texts: ``{count, words, rate_per_100_words, by_filler}``.

    ``rate_per_100_words = 100 * count / words``; ``None`` when there are no words at all.
    """
    by_filler: dict[str, int] = {}
    words = 0.0
    for text in texts:
        words += word_count(text, language)
        for filler, n in count_fillers(text, language).items():
            by_filler[filler] = by_filler.get(filler, 0) + n
    count = sum(by_filler.values())
    rate = 100.0 * count / words if words > 0 else None
    return {"count": count, "words": words, "rate_per_100_words": rate, "by_filler": by_filler}


def filler_rate(texts: Iterable[str], language: str) -> float | None:
    """Fillers per 100 words over ``texts`` (``None`` when nobody said a word)."""
    rate = filler_stats(texts, language)["rate_per_100_words"]
    return rate if rate is None else float(rate)  # type: ignore[arg-type]
