"""The buyer brain interface: what the voice pipeline talks to when the trainee has spoken.

Everything here is plain Python (no Django) so a brain can be tested, benchmarked and swapped
without a database: the domain service turns a Scenario model into a `ScenarioBrief` and the
stored utterances into `Turn`s, then asks a brain for the next buyer reply.

A brain is stateless by contract: the reply and the `BrainState` are recomputed from
(brief, history, seed) on every call, so a reconnect, a second media worker or a replay of a
session gives the same answer without any shared memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

TRAINEE = "trainee"
BUYER = "buyer"


@dataclass(frozen=True)
class ObjectionBrief:
    """One objection the buyer may raise, and what it takes to answer it."""

    key: str  # stable id, e.g. "obj-1"
    statement: str  # what the buyer says
    triggers: tuple[str, ...]  # keywords/phrases in the trainee's words that provoke it
    handling: tuple[str, ...]  # keywords/phrases that count as handling it


@dataclass(frozen=True)
class ScenarioBrief:
    """Everything a brain may know about the scenario (built from the Scenario model)."""

    id: str
    title: str
    language: str  # "en" or "zh-CN"
    difficulty: str  # easy / medium / hard
    persona_name: str
    persona_title: str
    company: str
    industry: str
    personality: str
    background: str
    concerns: tuple[str, ...]
    opening_line: str
    objections: tuple[ObjectionBrief, ...]
    buying_signals: tuple[str, ...]  # what the buyer may say when warming up
    next_step_conditions: tuple[
        str, ...
    ]  # e.g. ("objections_handled:2", "asked_questions:2", "proposed_next_step")
    max_turns: int
    goals: tuple[str, ...] = ()  # trainee goals; an LLM brain must never see them


@dataclass(frozen=True)
class Turn:
    speaker: str  # "trainee" | "buyer"
    text: str


@dataclass
class BrainState:
    """Where the conversation stands, derived from the history each time.

    Reported so analytics and the UI can show progress (objections raised/handled, whether a
    next step was agreed) without re-reading the transcript.
    """

    raised: list[str]  # objection keys, in the order they were raised
    handled: list[str]  # objection keys, in the order they were handled
    next_step_agreed: bool
    ended: bool  # the buyer has closed the call (max turns, goodbye, or lost patience)
    off_role_attempts: int
    questions_asked: int  # discovery questions by the trainee
    open_objection: str | None = None  # the raised-but-unhandled objection, if any
    trainee_turns: int = 0
    extra: dict[str, object] = field(default_factory=dict)  # brain-specific details, for debugging


class BrainError(RuntimeError):
    """A cloud buyer brain failed (the scripted brain takes over; no protocol error of its own)."""


@runtime_checkable
class BuyerBrain(Protocol):
    name: str

    def stream_reply(
        self, brief: ScenarioBrief, history: Sequence[Turn], *, seed: int = 0
    ) -> AsyncIterator[str]:
        """Yield the buyer's reply to the last trainee turn in chunks (sentences or parts).

        `history` ends with the trainee's latest turn, or is empty (then: the opening line).
        Chunks are yielded as soon as they exist so TTS can start on the first one.
        """
        ...

    def state(self, brief: ScenarioBrief, history: Sequence[Turn]) -> BrainState: ...


# --- sentence chunking (shared by every brain; an LLM brain feeds it token deltas) ---------------

_CJK_STOPS = "。！？"
_LATIN_STOPS = ".!?"
_CLOSERS = "\"')]}”’」』）"
# "e.g. this" must not end a sentence; a decimal ("1.5") never does because no space follows.
_ABBREVIATIONS = ("e.g", "i.e", "mr", "mrs", "ms", "dr", "vs", "approx")


def _is_cjk_language(language: str) -> bool:
    return language.lower().startswith(("zh", "ja", "ko"))


def _scan(text: str, *, final: bool) -> tuple[list[str], str]:
    """Cut `text` into complete sentences; return (sentences, unfinished rest).

    A Latin stop only ends a sentence when whitespace follows (or the text is final), so a
    streamed "3." is not cut before we know whether "5 million" comes next.
    """
    sentences: list[str] = []
    start = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in _CJK_STOPS or ch in _LATIN_STOPS:
            j = i + 1
            while j < n and (text[j] in _CJK_STOPS or text[j] in _LATIN_STOPS or text[j] in _CLOSERS):
                j += 1
            if ch in _CJK_STOPS:
                cut = True
            elif j < n:
                cut = text[j].isspace()
            else:
                cut = final
            if cut and ch == ".":
                word = text[start:i].rsplit(None, 1)[-1].lower() if text[start:i].split() else ""
                if word.rstrip(".") in _ABBREVIATIONS:
                    cut = False
            if cut:
                piece = text[start:j].strip()
                if piece:
                    sentences.append(piece)
                start = j
            i = j
            continue
        i += 1
    return sentences, text[start:]


def _finish(piece: str, language: str) -> str:
    return piece if _is_cjk_language(language) else piece + " "


def split_sentences(text: str, language: str = "en") -> list[str]:
    """Split a whole reply into speakable chunks, each ending with its punctuation.

    English chunks carry a trailing space so that joining them gives readable text again;
    Chinese chunks do not (Chinese has no spaces between sentences).
    """
    sentences, rest = _scan(text, final=True)
    if rest.strip():
        sentences.append(rest.strip())
    return [_finish(s, language) for s in sentences]


class SentenceChunker:
    """Turn a stream of text deltas (LLM tokens) into sentence chunks as early as possible."""

    def __init__(self, language: str = "en") -> None:
        self.language = language
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        sentences, self._buffer = _scan(self._buffer, final=False)
        return [_finish(s, self.language) for s in sentences]

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer, ""
        return split_sentences(rest, self.language)
