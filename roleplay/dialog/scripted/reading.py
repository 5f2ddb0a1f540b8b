"""Reading a trainee's turn: what it does, as far as a buyer can tell from the words alone.

The keywords come from every language's phrasebook at once: trainees mix languages
("我们可以约个 demo 吗"), and speech recognition does not always answer in the scenario's
language.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from roleplay.dialog.base import ScenarioBrief, split_sentences
from roleplay.dialog.scripted.phrasebook import STEP_KINDS, Keywords


def normalise(text: str) -> str:
    text = text.lower().replace("’", "'").replace("‘", "'")
    text = re.sub(r"\byou're\b", "you are", text)
    text = re.sub(r"\bi'm\b", "i am", text)
    return re.sub(r"\s+", " ", text).strip()


@functools.lru_cache(maxsize=4096)
def _pattern(phrase: str) -> re.Pattern[str]:
    """Latin phrases match at a word start (so "ai" is not found in "said", but "price" is
    found in "pricing"); Chinese phrases match anywhere."""
    phrase = normalise(phrase)
    body = re.escape(phrase)
    if phrase[:1].isascii() and phrase[:1].isalnum():
        body = r"(?<![a-z0-9])" + body
    if len(phrase) <= 3 and phrase.isascii() and phrase.isalpha():
        body += r"(?![a-z])"  # short words ("hi", "bye", "poc") must be whole words
    return re.compile(body)


def has(text: str, phrase: str) -> bool:
    return _pattern(phrase).search(text) is not None


def has_any(text: str, phrases: Iterable[str]) -> bool:
    return any(has(text, p) for p in phrases if p.strip())


def tokens(text: str, stopwords: frozenset[str]) -> set[str]:
    """Content words (Latin) and character bigrams (Chinese), for matching a question to a fact."""
    norm = normalise(text)
    words = {w.rstrip("s") for w in re.findall(r"[a-z][a-z'-]{3,}", norm) if w not in stopwords}
    for run in re.findall(r"[\u4e00-\u9fff]+", norm):
        words.update(run[i : i + 2] for i in range(len(run) - 1))
    return words


@dataclass(frozen=True)
class Reading:
    """What a trainee turn does, as far as a buyer can tell from the words."""

    greeting: bool
    discovery_question: bool
    pitch: bool
    proposal: str | None  # the kind of next step proposed ("demo", "meeting", …), or None
    off_role: bool
    closing: bool
    triggered: tuple[str, ...]  # keys of objections whose triggers appear
    handling: dict[str, frozenset[str]]  # objection key -> handling phrases found


class TurnReader:
    """Reads trainee turns with one set of keywords (built once per brain)."""

    def __init__(self, keywords: Keywords) -> None:
        self.keywords = keywords
        self._openers = tuple(dict.fromkeys(normalise(o) for o in keywords.question_openers))
        self._markers = tuple(dict.fromkeys(normalise(m) for m in keywords.question_markers))
        self._next_step = keywords.next_step_phrases()
        # A greeting standing on its own ("hi, how are you?"), not "how are you handling returns".
        greetings = "|".join(re.escape(p) for p in sorted(keywords.greeting, key=len, reverse=True))
        self._small_talk = re.compile(
            r"(?<![a-z0-9])(?:" + (greetings or "(?!)") + r")(?=\s*(?:[,.!?，。！？]|$|today|doing))"
        )

    def read(self, brief: ScenarioBrief, text: str) -> Reading:
        kw = self.keywords
        norm = normalise(text)
        # Splitting only: the "zh" rule adds no spaces, whatever language the trainee speaks.
        sentences = [s.strip() for s in split_sentences(norm, "zh") if s.strip()] or [norm]
        proposal = next((kind for kind in STEP_KINDS if has_any(norm, kw.next_step[kind])), None)
        off_role = has_any(norm, kw.off_role)
        question = any(self.is_question(s) for s in sentences if not has_any(s, self._next_step))
        pitch = has_any(norm, kw.pitch)
        closing = has_any(norm, kw.closing) or (has_any(norm, kw.soft_closing) and not (question or pitch or proposal))
        return Reading(
            greeting=has_any(norm, kw.greeting),
            discovery_question=question and not off_role,
            pitch=pitch,
            proposal=proposal,
            off_role=off_role,
            closing=closing and not (question or proposal),
            triggered=tuple(o.key for o in brief.objections if has_any(norm, o.triggers)),
            handling={o.key: frozenset(h for h in o.handling if h.strip() and has(norm, h)) for o in brief.objections},
        )

    def is_question(self, sentence: str) -> bool:
        """A question by punctuation, by its opening words (ASR often drops the '?'), or by a
        question particle — looked at clause by clause once small talk ("hi margaret, how are
        you?") is removed, so a greeting is not taken for discovery."""
        for clause in re.split(r"[,，;；:：]", sentence):
            rest = self._small_talk.sub(" ", clause).strip(" .。!！?？")
            if len(re.findall(r"[a-z0-9']+|[\u4e00-\u9fff]", rest)) < 2:
                continue
            if "?" in clause or "？" in clause or any(marker in rest for marker in self._markers):
                return True
            if any(re.match(re.escape(opener) + r"(?![a-z])", rest) for opener in self._openers):
                return True
        return False
