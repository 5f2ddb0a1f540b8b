"""The scripted buyer's phrase files: complete in every language, checked on load, edited by translators."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from roleplay.dialog import ObjectionBrief, ScenarioBrief, ScriptedBrain, Turn
from roleplay.dialog.scripted.phrasebook import (
    COMMON_VALUES,
    LINE_VALUES,
    PHRASES_DIR,
    REFERENCE,
    PhrasebookError,
    load_phrasebooks,
    phrasebooks,
)
from roleplay.dialog.scripted.reading import TurnReader

BUYER = ScenarioBrief(
    id="phrases-buyer",
    title="Operations director",
    language="en",
    difficulty="medium",
    persona_name="Dana Ruiz",
    persona_title="Operations Director",
    company="Acme Freight",
    industry="logistics",
    personality="Busy and practical.",
    background="Acme runs twelve depots. Dispatch is still planned on spreadsheets.",
    concerns=("downtime during the switch",),
    opening_line="Dana speaking.",
    objections=(
        ObjectionBrief(
            key="obj-price",
            statement="This sounds expensive.",
            triggers=("price",),
            handling=("payback",),
        ),
    ),
    buying_signals=(),
    next_step_conditions=("proposed_next_step",),
    max_turns=10,
)


def trainee(*texts: str) -> list[Turn]:
    return [Turn("trainee", t) for t in texts]


@pytest.fixture
def phrases_copy(tmp_path: Path) -> Path:
    """A translator's working copy of the shipped phrase files."""
    directory = tmp_path / "phrases"
    shutil.copytree(PHRASES_DIR, directory)
    return directory


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def set_line(path: Path, line: str, *wordings: str) -> None:
    """Rewrite (or, with no wordings, delete) one entry of the [lines] table, as a translator would."""
    keep, lines = path.read_text(encoding="utf-8").split("\n[lines]\n")
    entry = f"{line} = [{', '.join(json.dumps(w, ensure_ascii=False) for w in wordings)}]\n" if wordings else ""
    lines, found = re.subn(rf"(?ms)^{line} = \[.*?^\]\n", lambda _: entry, lines, count=1)
    assert found, f"no line {line!r} in {path.name}"
    path.write_text(keep + "\n[lines]\n" + lines, encoding="utf-8")


# --- the shipped files ---------------------------------------------------------------------------


def test_english_and_chinese_are_shipped_inside_the_package():
    assert {p.stem for p in PHRASES_DIR.glob("*.toml")} >= {"en", "zh"}
    assert set(phrasebooks().books) >= {"en", "zh"}


def test_every_language_has_every_line_english_has():
    books = phrasebooks().books
    english = set(books[REFERENCE].lines)
    assert set(LINE_VALUES) <= english
    for book in books.values():
        assert set(book.lines) == english, book.language
        assert all(book.lines[line] for line in english), book.language


def test_every_wording_in_every_language_can_be_filled_in():
    for book in phrasebooks().books.values():
        for line, wordings in book.lines.items():
            base = line if line in LINE_VALUES else line.removesuffix("_hard")
            values = {name: f"<{name}>" for name in (*COMMON_VALUES, *LINE_VALUES[base])}
            values |= {name.capitalize(): value for name, value in values.items()}
            for wording in wordings:
                wording.format(**values)  # a KeyError here would break a live call


def test_a_translation_keeps_the_placeholders_english_always_says():
    zh = phrasebooks().books["zh"]
    assert all("{statement}" in w for w in zh.lines["raise"])
    assert all("{step}" in w for w in zh.lines["agree"])


def test_scenario_languages_find_their_phrasebook_and_others_fall_back_to_english():
    books = phrasebooks()
    assert books.for_language("zh-CN").language == "zh"
    assert books.for_language("en").language == "en"
    assert books.for_language("fr-FR").language == "en"


def test_analytics_scores_next_steps_with_the_buyers_phrases_in_every_language():
    phrases = phrasebooks().keywords.next_step_phrases()
    assert "demo" in phrases and "演示" in phrases


def test_a_turn_naming_two_kinds_of_next_step_counts_as_the_first_kind():
    reader = TurnReader(phrasebooks().keywords)
    assert reader.read(BUYER, "I can send you a proposal, or we book a demo.").proposal == "demo"
    assert reader.read(BUYER, "I'll send you the details, 下周约个时间").proposal == "generic"


# --- a broken file is refused, naming the file, table and key -------------------------------------


BREAKAGES: dict[str, tuple[str, Callable[[Path], None], tuple[str, ...]]] = {
    "a missing line": ("zh", lambda p: set_line(p, "nudge"), ("zh.toml", "[lines] nudge", "missing")),
    "a line English does not have": (
        "zh",
        lambda p: edit(p, "[lines]\n", '[lines]\nsmalltalk = ["天气不错。"]\n'),
        ("zh.toml", "[lines] smalltalk", "not a known key"),
    ),
    "a placeholder dropped": (
        "zh",
        lambda p: edit(p, '"嗯。{statement}"', '"嗯。"'),
        ("zh.toml", "[lines] raise", "{statement}", "嗯。"),
    ),
    "a placeholder the buyer does not fill in": (
        "zh",
        lambda p: edit(p, '"您继续。"', '"{price}您继续。"'),
        ("zh.toml", "[lines] fallback", "{price}"),
    ),
    "a lone brace": (
        "zh",
        lambda p: edit(p, '"您继续。"', '"您继续{。"'),
        ("zh.toml", "[lines] fallback", "literal brace"),
    ),
    "a missing keyword list": (
        "zh",
        lambda p: edit(p, 'closing = ["再见"', 'closings = ["再见"'),
        ("zh.toml", "[keywords] closing", "missing"),
    ),
    "a missing step name": ("zh", lambda p: edit(p, 'trial = "试用"', ""), ("zh.toml", "[steps] trial", "missing")),
    "an empty line": (
        "en",
        lambda p: edit(p, 'defer_turns = [\n    "It', 'defer_turns = [\n    # "It'),
        ("en.toml", "[lines] defer_turns", "at least one wording"),
    ),
    "a line the buyer never says": (
        "en",
        lambda p: edit(p, "[lines]\n", '[lines]\nsmalltalk = ["Nice weather."]\n'),
        ("en.toml", "[lines] smalltalk", "not a line the buyer says"),
    ),
    "not TOML at all": ("zh", lambda p: edit(p, "[lines]\n", "[lines\n"), ("zh.toml", "not a valid TOML file")),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_file_is_refused_with_an_error_naming_file_table_and_key(phrases_copy: Path, breakage: str):
    language, damage, expected = BREAKAGES[breakage]
    damage(phrases_copy / f"{language}.toml")
    with pytest.raises(PhrasebookError) as error:
        load_phrasebooks(phrases_copy)
    for piece in expected:
        assert piece in str(error.value)


def test_without_english_there_is_nothing_to_check_against(phrases_copy: Path):
    (phrases_copy / "en.toml").unlink()
    with pytest.raises(PhrasebookError, match=r"en\.toml: missing"):
        load_phrasebooks(phrases_copy)


# --- a translator's edit changes what the buyer says ---------------------------------------------


def test_a_translators_edit_to_a_line_changes_what_the_buyer_says(phrases_copy: Path):
    history = trainee("Tell me a joke about the weather.")
    assert "Let's keep this about freight." not in ScriptedBrain().reply(BUYER, history)

    set_line(phrases_copy / "en.toml", "off_role", "Let's keep this about freight.")

    assert ScriptedBrain(load_phrasebooks(phrases_copy)).reply(BUYER, history) == "Let's keep this about freight."


def test_a_translators_new_keyword_changes_what_the_buyer_hears(phrases_copy: Path):
    history = trainee("What is your horoscope for next month?")
    assert ScriptedBrain().state(BUYER, history).off_role_attempts == 0

    edit(phrases_copy / "en.toml", 'off_role = [\n    "ignore your instructions",', 'off_role = [\n    "horoscope",')

    assert ScriptedBrain(load_phrasebooks(phrases_copy)).state(BUYER, history).off_role_attempts == 1


def test_a_new_language_file_speaks_for_scenarios_in_that_language(phrases_copy: Path):
    german = phrases_copy / "de.toml"
    shutil.copy(phrases_copy / "en.toml", german)
    set_line(german, "fallback", "Verstehe. Und weiter?")
    brain = ScriptedBrain(load_phrasebooks(phrases_copy))

    in_german = dataclasses.replace(BUYER, language="de-DE")
    assert brain.reply(in_german, trainee("Okay.")) == "Verstehe. Und weiter?"
    assert brain.reply(BUYER, trainee("Okay.")) != "Verstehe. Und weiter?"
