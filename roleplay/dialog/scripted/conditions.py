"""The next-step condition language of a scenario (``ScenarioBrief.next_step_conditions``).

All listed conditions must hold before the buyer agrees to a next step:

- ``objections_handled:N`` — at least N objections handled. A hard buyer needs N+1. N is
  capped at the number of objections in the brief, so a scenario can never be unwinnable.
- ``asked_questions:N`` — the trainee asked at least N discovery questions.
- ``proposed_next_step`` — the trainee's current turn proposes a next step (meeting, demo,
  call, trial, pilot, proposal, …). The buyer only ever agrees to a proposal, so this
  condition is implied even when not listed.
- ``no_open_objection`` — no objection is left open. Also always implied: a buyer with an
  unanswered worry does not book a meeting.
- ``min_turns:N`` — at least N trainee turns so far.

Unknown conditions are rejected by `parse_conditions` (use it to validate a scenario when it
is saved); at call time the brain skips them rather than break a live call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Condition:
    name: str
    count: int = 0


COUNTED = frozenset({"objections_handled", "asked_questions", "min_turns"})
FLAGS = frozenset({"proposed_next_step", "no_open_objection"})


def parse_condition(text: str) -> Condition:
    """Parse one condition (``name`` or ``name:N``); raise ValueError on anything else."""
    name, _, number = text.strip().partition(":")
    name = name.strip().lower()
    if name in FLAGS and not number:
        return Condition(name)
    if name in COUNTED and number.strip().isdigit():
        return Condition(name, int(number))
    raise ValueError(f"unknown next-step condition {text!r}")


def parse_conditions(texts: Sequence[str], *, strict: bool = True) -> tuple[Condition, ...]:
    """Parse a brief's conditions; with strict=False, skip invalid ones (used during a live call)."""
    parsed = []
    for text in texts:
        try:
            parsed.append(parse_condition(text))
        except ValueError:
            if strict:
                raise
    return tuple(parsed)
