"""The scripted buyer's words, one TOML file per language in ``phrases/``, read once and checked.

The files are for translators: what the buyer says (``[lines]``), the keywords it listens for
(``[keywords]``), the names of next steps (``[steps]``), stand-ins for empty scenario fields
(``[defaults]``) and how the language is written (``[writing]``). ``en.toml`` is the reference:
every other file must have exactly its tables and keys. The engine decides *when* to say a line;
this module only makes sure every line it may ask for exists in every language and can be filled
in, so a broken translation fails when the buyer is first used (naming the file, table and key)
rather than as a KeyError in the middle of a trainee's call.

Placeholders: a line may use ``{company}``, ``{industry}``, ``{title}``, ``{name}`` and the values
the engine passes to that line (`LINE_VALUES`), each also with a capital first letter. A
placeholder English uses in every wording of a line must be in every wording of its translation:
it carries what the buyer has to say (the objection, the step). Placeholders English uses only
sometimes ({title} in one "answer_concern" wording) are flavour a translation may leave out.
"""

from __future__ import annotations

import functools
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

PHRASES_DIR = Path(__file__).with_name("phrases")
REFERENCE = "en"  # the language every other file is checked against, and the fallback language

# Kinds of next step, in the order they are checked: a turn naming several counts as the first.
STEP_KINDS: tuple[str, ...] = ("demo", "trial", "pilot", "proposal", "meeting", "call", "generic", "send")

# Values every line may use (from the scenario brief).
COMMON_VALUES: tuple[str, ...] = ("company", "industry", "title", "name")

# Every line the engine says -> the values it fills in besides COMMON_VALUES. A line "X_hard"
# (said by hard buyers instead of X) gets the same values as X.
LINE_VALUES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "greeting_easy": (),
        "greeting": (),
        "greet_short": (),
        "answer_bg": ("fact",),
        "answer_concern": ("concern",),
        "answer_concern_sentence": ("concern",),
        "answer_extra": (),
        "cautious": (),
        "raise": ("statement",),
        "raise_question": ("statement",),
        "pitch_early": ("statement",),
        "pitch_early_none": (),
        "ack": (),
        "partial_hard": ("statement",),  # only hard buyers want two handling phrases
        "sceptical": ("statement",),
        "pitch": ("concern",),
        "fallback": (),
        "off_role": (),
        "give_up": (),
        "agree": ("step",),
        "already_agreed": (),
        "defer_open": ("step", "statement"),
        "defer_raise": ("step", "statement", "statement_lc"),
        "defer_questions": ("step",),
        "defer_turns": (),
        "nudge": (),
        "goodbye_agreed": (),
        "goodbye": (),
        "end": (),
        "end_agreed": ("step",),
        "end_open": (),
        "after_end": (),
    }
)

_KEYWORD_LISTS = (
    "greeting",
    "question_openers",
    "question_markers",
    "pitch",
    "off_role",
    "closing",
    "soft_closing",
    "stopwords",
)
_TABLES = ("writing", "keywords", "steps", "defaults", "lines")
_WRITING_TEXT = ("tag", "sentence_end", "sentence_joiner", "trailing_punctuation")
_DEFAULTS = ("opening", "concern")


class PhrasebookError(ValueError):
    """A phrase file the buyer cannot use; the message names the file, table and key."""


@dataclass(frozen=True)
class Writing:
    """How a language is written, as far as the buyer's sentence-building needs to know."""

    tag: str  # language code for split_sentences ("en", "zh-CN")
    sentence_end: str  # added to a scenario sentence that has no end mark
    sentence_joiner: str  # between two sentences of a reply
    cased: bool  # has capital letters: concerns are lower-cased inside sentences
    trailing_punctuation: str  # stripped from a concern before it goes inside a sentence
    sentence_subjects: frozenset[str]  # words that make a concern a sentence ("we", "our" …)


@dataclass(frozen=True)
class Keywords:
    """What the buyer listens for in the trainee's words (see the ``[keywords]`` comments)."""

    greeting: tuple[str, ...]
    question_openers: tuple[str, ...]
    question_markers: tuple[str, ...]
    pitch: tuple[str, ...]
    off_role: tuple[str, ...]
    closing: tuple[str, ...]
    soft_closing: tuple[str, ...]
    stopwords: frozenset[str]
    next_step: Mapping[str, tuple[str, ...]]  # step kind -> phrases, kinds in STEP_KINDS order

    def next_step_phrases(self) -> tuple[str, ...]:
        return tuple(phrase for kind in STEP_KINDS for phrase in self.next_step.get(kind, ()))

    @classmethod
    def merged(cls, every: list[Keywords]) -> Keywords:
        """Every language's keywords at once: trainees mix languages ("我们可以约个 demo 吗")."""

        def join(name: str) -> tuple[str, ...]:
            return tuple(dict.fromkeys(p for k in every for p in getattr(k, name)))

        return cls(
            greeting=join("greeting"),
            question_openers=join("question_openers"),
            question_markers=join("question_markers"),
            pitch=join("pitch"),
            off_role=join("off_role"),
            closing=join("closing"),
            soft_closing=join("soft_closing"),
            stopwords=frozenset().union(*(k.stopwords for k in every)),
            next_step=MappingProxyType(
                {kind: tuple(dict.fromkeys(p for k in every for p in k.next_step[kind])) for kind in STEP_KINDS}
            ),
        )


@dataclass(frozen=True)
class Phrasebook:
    """One language's file, checked."""

    language: str  # the file's name without .toml ("en", "zh")
    writing: Writing
    keywords: Keywords
    steps: Mapping[str, str]  # step kind -> what the buyer calls it
    opening: str  # first words when the scenario has no opening line
    no_concern: str  # the concern when the scenario lists none
    lines: Mapping[str, tuple[str, ...]]  # line -> equivalent wordings

    def wordings(self, line: str, *, hard: bool) -> tuple[str, ...]:
        """The wordings of a line; a hard buyer's own wordings when the file has them."""
        if hard and f"{line}_hard" in self.lines:
            return self.lines[f"{line}_hard"]
        return self.lines[line]


@dataclass(frozen=True)
class Phrasebooks:
    """Every language's phrasebook, and the keywords of all of them for reading a turn."""

    books: Mapping[str, Phrasebook]
    keywords: Keywords  # every language's, merged

    def for_language(self, language: str) -> Phrasebook:
        """The book for a scenario language ("zh-CN" -> zh); English when there is none."""
        primary = re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]
        return self.books.get(primary) or self.books[REFERENCE]


def load_phrasebooks(directory: Path = PHRASES_DIR) -> Phrasebooks:
    """Read and check every ``*.toml`` in `directory`; raise PhrasebookError on the first problem."""
    paths = sorted(directory.glob("*.toml"))
    raw = {path.stem: _read(path) for path in paths}
    if REFERENCE not in raw:
        raise PhrasebookError(f"{directory / (REFERENCE + '.toml')}: missing (it is the reference language)")
    reference = _parse(directory / f"{REFERENCE}.toml", raw[REFERENCE], None)
    books = {REFERENCE: reference}
    for path in paths:
        if path.stem != REFERENCE:
            books[path.stem] = _parse(path, raw[path.stem], reference)
    merged = Keywords.merged([book.keywords for book in books.values()])  # English first
    return Phrasebooks(books=MappingProxyType(books), keywords=merged)


@functools.cache
def phrasebooks() -> Phrasebooks:
    """The shipped phrasebooks, read once per process."""
    return load_phrasebooks()


# --- reading and checking one file ------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PhrasebookError(f"{path}: not a valid TOML file: {exc}") from None


class _Checker:
    """Turns a problem into an error naming the file, table and key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> PhrasebookError:
        return PhrasebookError(f"{self.path}: {where}: {problem}")

    def table(self, data: Mapping[str, Any], name: str, keys: tuple[str, ...] | None) -> Mapping[str, Any]:
        value = data.get(name)
        if not isinstance(value, dict):
            raise self.fail(f"[{name}]", "table missing")
        if keys is not None:
            self.same_keys(f"[{name}]", value, keys)
        return value

    def same_keys(self, where: str, value: Mapping[str, Any], keys: tuple[str, ...] | list[str]) -> None:
        missing = [k for k in keys if k not in value]
        extra = [k for k in value if k not in keys]
        if missing:
            raise self.fail(f"{where} {missing[0]}", "missing" + _also(missing))
        if extra:
            raise self.fail(f"{where} {extra[0]}", "not a known key" + _also(extra))

    def text(self, where: str, value: Any, *, empty: bool = False) -> str:
        if not isinstance(value, str) or (not empty and not value.strip()):
            raise self.fail(where, "must be a non-empty string" if not empty else "must be a string")
        return value

    def texts(self, where: str, value: Any, *, empty: bool) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(where, "must be a list of non-empty strings")
        if not value and not empty:
            raise self.fail(where, "needs at least one wording")
        return tuple(value)


def _also(keys: list[str]) -> str:
    return f" (also: {', '.join(keys[1:])})" if len(keys) > 1 else ""


def _parse(path: Path, data: dict[str, Any], reference: Phrasebook | None) -> Phrasebook:
    check = _Checker(path)
    for name in data:
        if name not in _TABLES:
            raise check.fail(f"[{name}]", f"not a known table (the tables are: {', '.join(_TABLES)})")

    writing = check.table(data, "writing", (*_WRITING_TEXT, "cased", "sentence_subjects"))
    text = {k: check.text(f"[writing] {k}", writing[k], empty=k != "tag") for k in _WRITING_TEXT}
    if not isinstance(writing["cased"], bool):
        raise check.fail("[writing] cased", "must be true or false")
    subjects = check.texts("[writing] sentence_subjects", writing["sentence_subjects"], empty=True)

    keywords = check.table(data, "keywords", (*_KEYWORD_LISTS, "next_step"))
    lists = {k: check.texts(f"[keywords] {k}", keywords[k], empty=True) for k in _KEYWORD_LISTS}
    next_step = check.table(keywords, "next_step", STEP_KINDS)
    next_step = {k: check.texts(f"[keywords.next_step] {k}", next_step[k], empty=True) for k in STEP_KINDS}

    steps = check.table(data, "steps", STEP_KINDS)
    defaults = check.table(data, "defaults", _DEFAULTS)

    names = tuple(reference.lines) if reference else _reference_line_names(check, data)
    lines = check.table(data, "lines", names)
    wordings = {name: check.texts(f"[lines] {name}", lines[name], empty=False) for name in names}
    for name, options in wordings.items():
        _check_placeholders(check, name, options, reference.lines[name] if reference else None)

    return Phrasebook(
        language=path.stem,
        writing=Writing(
            tag=text["tag"],
            sentence_end=text["sentence_end"],
            sentence_joiner=text["sentence_joiner"],
            cased=writing["cased"],
            trailing_punctuation=text["trailing_punctuation"],
            sentence_subjects=frozenset(s.lower() for s in subjects),
        ),
        keywords=Keywords(
            **{k: v for k, v in lists.items() if k != "stopwords"},
            stopwords=frozenset(word.lower() for word in lists["stopwords"]),
            next_step=MappingProxyType(next_step),
        ),
        steps=MappingProxyType({k: check.text(f"[steps] {k}", steps[k]) for k in STEP_KINDS}),
        opening=check.text("[defaults] opening", defaults["opening"]),
        no_concern=check.text("[defaults] concern", defaults["concern"]),
        lines=MappingProxyType(wordings),
    )


def _reference_line_names(check: _Checker, data: dict[str, Any]) -> tuple[str, ...]:
    """The reference file's line names: every line the engine says, plus optional "_hard" lines."""
    lines = check.table(data, "lines", None)
    for name in LINE_VALUES:
        if name not in lines:
            raise check.fail(f"[lines] {name}", "missing")
    for name in lines:
        if _base(name) not in LINE_VALUES:
            raise check.fail(f"[lines] {name}", "not a line the buyer says")
    return tuple(lines)


def _base(line: str) -> str:
    return line if line in LINE_VALUES else line.removesuffix("_hard")


def _placeholders(check: _Checker, where: str, wording: str) -> set[str]:
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(wording) if name is not None]
    except ValueError as exc:  # a lone "{" or "}"
        raise check.fail(where, f"{exc} in {wording!r} (write {{{{ or }}}} for a literal brace)") from None
    for name, spec, conv in fields:
        if not name.isidentifier() or spec or conv:
            raise check.fail(where, f"placeholder {{{name}}} in {wording!r} must be a plain {{name}}")
    return {name for name, _, _ in fields}


def _meaning(placeholder: str) -> str:
    """{Concern} and {statement_lc} say the same thing as {concern} and {statement}."""
    return (placeholder[:1].lower() + placeholder[1:]).removesuffix("_lc")


def _check_placeholders(check: _Checker, line: str, wordings: tuple[str, ...], english: tuple[str, ...] | None) -> None:
    where = f"[lines] {line}"
    given = (*COMMON_VALUES, *LINE_VALUES[_base(line)])
    allowed = set(given) | {v[:1].upper() + v[1:] for v in given}
    found = [_placeholders(check, where, w) for w in wordings]
    for wording, names in zip(wordings, found, strict=True):
        unknown = sorted(names - allowed)
        if unknown:
            raise check.fail(
                where, f"unknown placeholder {{{unknown[0]}}} in {wording!r} (this line has: {', '.join(given)})"
            )
    if english is None:
        return
    required = set.intersection(*({_meaning(n) for n in _placeholders(check, where, w)} for w in english))
    for wording, names in zip(wordings, found, strict=True):
        lost = sorted(required - {_meaning(n) for n in names})
        if lost:
            raise check.fail(where, f"{{{lost[0]}}} is missing from {wording!r} (every English wording has it)")
