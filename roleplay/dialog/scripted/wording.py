"""Choosing and filling in the buyer's wordings, and fitting scenario text into them.

Which wording of a line is said depends only on (seed, scenario, turn, line), so a replayed
history gives the same words; the seed only picks between equivalent wordings.
"""

from __future__ import annotations

import random

from roleplay.dialog.base import ObjectionBrief, ScenarioBrief
from roleplay.dialog.scripted.phrasebook import Phrasebook, Writing

_END_MARKS = ".!?。！？"


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def lower_first(text: str) -> str:
    """Lower-case a sentence's first letter for use inside a sentence, unless it is "I" or an acronym."""
    first = text.split(" ", 1)[0]
    if first == "I" or first.startswith("I'") or (len(first) > 1 and first[1:2].isupper()):
        return text
    return text[:1].lower() + text[1:]


def terminated(text: str, writing: Writing) -> str:
    """The text with an end mark, so a scenario's sentence can stand in a reply."""
    if not text or text[-1] in _END_MARKS or text.endswith(writing.sentence_end):
        return text
    return text + writing.sentence_end


def is_sentence(text: str, writing: Writing) -> bool:
    """A concern written as a sentence ("We overspent last year.") rather than a phrase."""
    words = text.split()
    return text[-1:] in ".!?" or (len(words) > 3 and words[0].lower() in writing.sentence_subjects)


class Voice:
    """The buyer's words for one trainee turn: deterministic per (seed, scenario, turn, line)."""

    def __init__(self, brief: ScenarioBrief, book: Phrasebook, seed: int, turn: int) -> None:
        self.brief = brief
        self.book = book
        self.writing = book.writing
        self.hard = brief.difficulty.lower() == "hard"
        self.easy = brief.difficulty.lower() == "easy"
        self.seed = seed
        self.turn = turn

    def rng(self, slot: str) -> random.Random:
        return random.Random(f"{self.seed}|{self.brief.id}|{self.turn}|{slot}")

    def say(self, line: str, **values: str) -> str:
        # The random stream is named after the line actually said ("ack_hard" for a hard buyer).
        slot = f"{line}_hard" if self.hard and f"{line}_hard" in self.book.lines else line
        template = self.rng(slot).choice(self.book.wordings(line, hard=self.hard))
        values = {
            "company": self.brief.company,
            "industry": self.brief.industry,
            "title": self.brief.persona_title,
            "name": self.brief.persona_name,
            **values,
        }
        for key, value in list(values.items()):
            values[key[:1].upper() + key[1:]] = capitalise(value)
        return template.format(**values)

    def extra(self, line: str, **values: str) -> str | None:
        """Volunteered extras: always for easy buyers, sometimes for medium, never for hard."""
        if self.hard:
            return None
        if self.easy or self.rng(f"extra-{line}").random() < 0.5:
            return self.say(line, **values)
        return None

    def step(self, kind: str | None) -> str:
        return self.book.steps[kind or "generic"]

    def statement(self, objection: ObjectionBrief) -> str:
        return terminated(objection.statement.strip(), self.writing)

    def sentence(self, text: str) -> str:
        return terminated(text, self.writing)
