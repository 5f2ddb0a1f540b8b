"""One turn is one turn: fragments of one thought become a single trainee turn, on both transports.

Endpointing (``media_pipeline.turns``) decides when a pause ends a turn; it can still be wrong, and
the trainee can go on talking after it said "done". This module is what the turn stage does then:

- **the buyer yields**: the trainee speaks again within ``TURN_YIELD_GRACE_MS`` of the buyer's first
  audible frame (or before it): the reply is withdrawn (stopped, not persisted) and the next final
  is *joined* to the turn it answered — same ``result_id``, one persisted utterance, one
  ``max_turns`` count;
- **held thoughts** (chunk path, which has no barge-in): a final that ends on "and", "um", "因为"…
  or arrives while the trainee is already speaking again is held and joined to what follows;
- **backchannels** ("yeah", "mm-hm", "嗯") while the buyer speaks neither stop it nor take a turn.

Only the wording rules live here (language-aware joining); the transports keep their own timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings

from media_pipeline.turns.base import TurnDecision
from media_pipeline.turns.words import ASR_TRAILS_OFF, Odds, is_backchannel, trailing_cue

__all__ = ["OpenTurn", "is_backchannel", "join_text", "joined_facts", "trailing_cue", "turn_end_facts"]


def turn_end_facts(decision: TurnDecision | None) -> dict[str, Any]:
    """How one utterance's end was decided, as stored on the utterance (``Utterance.turn_end``)."""
    return decision.as_dict() if decision is not None else {}


def joined_facts(earlier: dict[str, Any], latest: dict[str, Any]) -> dict[str, Any]:
    """The end facts of a turn that took several utterances: the last decision (or the earlier one
    if the last has none), counting the utterances ``joined`` into it."""
    facts = dict(latest or earlier)
    if facts:
        facts["joined"] = earlier.get("joined", 0) + 1
    return facts


def join_text(first: str, more: str, language: str = "en") -> str:
    """``first`` continued by ``more``: a space between words, none between Chinese characters."""
    first, more = first.strip(), more.strip()
    if not first or not more:
        return first or more
    cjk = language.lower().startswith("zh") or (_is_cjk(first[-1]) and _is_cjk(more[0]))
    if first[-1] in ".。" and not first.endswith(".."):  # Whisper's full stop after a fragment
        first = first[:-1]
    return f"{first}{more}" if cjk else f"{first} {more}"


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff"


@dataclass(frozen=True)
class OpenTurn:
    """A trainee turn the buyer has not (yet) answered for good: what follows is joined to it."""

    result_id: str
    text: str
    start_ms: int
    end_ms: int
    confidence: float
    language: str = "en"
    utterance_id: int | None = None  # persisted already (WebRTC persists before replying)
    stream_start_ms: int = 0  # WebRTC's asr_result start_time/end_time (ms since asr_start)
    stream_end_ms: int = 0
    response_id: str = ""  # the reply answering it, while one is being spoken
    turn_end: dict[str, Any] = field(default_factory=dict)  # how its (last) end was decided: TurnDecision
    ending: Odds | None = None  # the ASR's ending odds for its last words (``words.trails_off``)

    def joined(self, text: str, *, end_ms: int, confidence: float, language: str,
               turn_end: dict[str, Any] | None = None) -> OpenTurn:
        """This turn with ``text`` said after it: one utterance with the first one's id and start,
        and the last one's end decision (``turn_end``), counting the utterances ``joined`` into it.

        No ending odds: the ASR heard the later part without its beginning ("…is a big problem for
        you." decoded alone as "There's a big problem for you." with odds of "…" at 0.13), so only
        its words can still say it goes on."""
        return replace(self, text=join_text(self.text, text, language), end_ms=max(self.end_ms, end_ms),
                       confidence=min(self.confidence, confidence), response_id="",
                       turn_end=joined_facts(self.turn_end, turn_end or {}), ending=None)

    @property
    def cue(self) -> str:
        """Why its words end mid-thought ("and", "um", "因为", "…", or ``ASR_TRAILS_OFF`` for the
        ASR's odds), or "" if they could end here."""
        return trailing_cue(self.text, self.language, self.ending)

    def hold_ms(self, patience_ms: int) -> int:
        """How long a pause after it the buyer waits for more before answering it anyway: the
        patience, or less when only the ASR's odds say it goes on (``TURN_TRAILS_OFF_WAIT_MS``)."""
        if self.cue == ASR_TRAILS_OFF:
            return min(patience_ms, settings.TURN_TRAILS_OFF_WAIT_MS)
        return patience_ms
