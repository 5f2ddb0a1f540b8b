"""One scripted call, replayed from the start: the buyer's state machine.

`Conversation` replays every trainee turn of the history from the start, so the reply and the
state depend only on (brief, history, seed): a reconnect or another worker gets exactly the
same reply. Buyer turns in the history are not read (whatever the buyer said is implied by the
trainee turns before it). `Conversation.step` is the whole decision for one trainee turn; what
the words mean is `reading`, how the buyer words its reply is `wording`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from roleplay.dialog.base import TRAINEE, BrainState, ObjectionBrief, ScenarioBrief, Turn, split_sentences
from roleplay.dialog.scripted.conditions import COUNTED, parse_conditions
from roleplay.dialog.scripted.phrasebook import Phrasebook, Phrasebooks
from roleplay.dialog.scripted.reading import TurnReader, tokens
from roleplay.dialog.scripted.wording import Voice, is_sentence, lower_first

# Off-role attempts a buyer tolerates before hanging up.
OFF_ROLE_PATIENCE = {"easy": 4, "medium": 3, "hard": 2}


@dataclass(frozen=True)
class _Fact:
    kind: str  # "bg" or "concern"
    text: str


def _facts(brief: ScenarioBrief, book: Phrasebook) -> list[_Fact]:
    """Background sentences and concerns, in the order a buyer would bring them up."""
    background = [s.strip() for s in split_sentences(brief.background, book.writing.tag) if s.strip()]
    concerns = [c.strip() for c in brief.concerns if c.strip()]
    ordered = background[:1] + concerns + background[1:]
    return [_Fact("bg" if t in background else "concern", t) for t in ordered]


@dataclass
class _Memory:
    raised: list[str] = field(default_factory=list)
    handled: list[str] = field(default_factory=list)
    open: str | None = None
    progress: set[str] = field(default_factory=set)  # handling phrases heard for the open objection
    questions: int = 0
    off_role: int = 0
    turns: int = 0
    agreed: str | None = None  # kind of the agreed next step
    ended: bool = False
    nudged: bool = False
    used_facts: list[int] = field(default_factory=list)
    signals: list[str] = field(default_factory=list)  # buying signals already said


class Conversation:
    """Replays the trainee turns of a history; `step` is one trainee turn."""

    def __init__(self, brief: ScenarioBrief, seed: int, phrases: Phrasebooks, reader: TurnReader) -> None:
        self.brief = brief
        self.seed = seed
        self.book = phrases.for_language(brief.language)
        self.reader = reader
        self.stopwords = phrases.keywords.stopwords
        self.memory = _Memory()
        self.objections = {o.key: o for o in brief.objections}
        self.conditions = parse_conditions(brief.next_step_conditions, strict=False)
        self.facts = _facts(brief, self.book)
        self.hard = brief.difficulty.lower() == "hard"
        self.patience = OFF_ROLE_PATIENCE.get(brief.difficulty.lower(), 3)

    # -- conditions --

    def missing(self, *, proposing: bool) -> list[str]:
        """What stands between the buyer and a next step, most important first."""
        m = self.memory
        missing = []
        if m.open is not None:
            missing.append("no_open_objection")
        counts = {c.name: c.count for c in self.conditions if c.name in COUNTED}
        # Order matters: the buyer names the first gap. Not knowing the buyer comes before
        # objections, because a buyer asked for a demo in the first minute says "you don't know us".
        if m.questions < counts.get("asked_questions", 0):
            missing.append("asked_questions")
        if "objections_handled" in counts:
            need = min(counts["objections_handled"] + (1 if self.hard else 0), len(self.brief.objections))
            if len(m.handled) < need:
                missing.append("objections_handled")
        if m.turns < counts.get("min_turns", 0):
            missing.append("min_turns")
        if not proposing:
            missing.append("proposed_next_step")
        return list(dict.fromkeys(missing))

    # -- building blocks --

    def unraised(self) -> list[ObjectionBrief]:
        return [o for o in self.brief.objections if o.key not in self.memory.raised]

    def raise_objection(self, objection: ObjectionBrief) -> None:
        self.memory.raised.append(objection.key)
        self.memory.open = objection.key
        self.memory.progress = set()

    def pick_fact(self, text: str) -> _Fact | None:
        """The fact that best matches the question; ties go to the next one not yet told."""
        if not self.facts:
            return None
        used = self.memory.used_facts
        if len(used) >= len(self.facts):
            used.clear()
        candidates = [i for i in range(len(self.facts)) if i not in used]
        asked = tokens(text, self.stopwords)
        best = max(
            candidates,
            key=lambda i: (len(asked & tokens(self.facts[i].text, self.stopwords)), -candidates.index(i)),
        )
        used.append(best)
        return self.facts[best]

    def answer(self, voice: Voice, text: str) -> list[str]:
        fact = self.pick_fact(text)
        if fact is None:
            return [voice.say("fallback")]
        writing = voice.writing
        if fact.kind == "bg":
            parts = [voice.say("answer_bg", fact=voice.sentence(fact.text))]
        elif not writing.cased or not is_sentence(fact.text, writing):
            concern = fact.text.rstrip(writing.trailing_punctuation)
            parts = [voice.say("answer_concern", concern=lower_first(concern) if writing.cased else concern)]
        else:  # only a cased language tells sentences from phrases
            parts = [voice.say("answer_concern_sentence", concern=lower_first(voice.sentence(fact.text)))]
        extra = voice.extra("answer_extra")
        return parts + ([extra] if extra else [])

    def signal(self, voice: Voice) -> str | None:
        """A buying signal the buyer has not said yet (a real buyer does not repeat them)."""
        signals = [s.strip() for s in self.brief.buying_signals if s.strip()]
        fresh = [s for s in signals if s not in self.memory.signals]
        if not fresh:
            return None
        chosen = fresh[voice.rng("signal").randrange(len(fresh))]
        self.memory.signals.append(chosen)
        return voice.sentence(chosen)

    def concern(self, voice: Voice) -> str:
        concerns = [c.strip().rstrip(".。") for c in self.brief.concerns if c.strip()]
        if not concerns:
            return self.book.no_concern
        chosen = concerns[self.memory.turns % len(concerns)]
        return lower_first(chosen) if voice.writing.cased else chosen

    def ending(self, voice: Voice) -> list[str]:
        self.memory.ended = True
        if self.memory.agreed:
            tail = voice.say("end_agreed", step=voice.step(self.memory.agreed))
        else:
            tail = voice.say("end_open")
        return [voice.say("end"), tail]

    # -- one trainee turn --

    def step(self, text: str) -> list[str]:
        m = self.memory
        m.turns += 1
        voice = Voice(self.brief, self.book, self.seed, m.turns)
        final = self.brief.max_turns > 0 and m.turns >= self.brief.max_turns
        if m.ended:
            return [voice.say("after_end")]
        r = self.reader.read(self.brief, text)

        if r.off_role:
            m.off_role += 1
            if final:
                return self.ending(voice)
            if m.off_role >= self.patience:
                m.ended = True
                return [voice.say("give_up")]
            return [voice.say("off_role")]
        if r.discovery_question:
            m.questions += 1
        if r.closing:
            m.ended = True
            return [voice.say("goodbye_agreed" if m.agreed else "goodbye")]

        parts: list[str] = []
        signalled = False
        heard_handling = False
        # 1. Did the trainee answer the open objection?
        if m.open is not None:
            objection = self.objections[m.open]
            hits = r.handling.get(m.open, frozenset())
            heard_handling = bool(hits)
            m.progress |= hits
            need = 2 if self.hard and len(objection.handling) > 1 else 1
            if len(m.progress) >= need:
                m.handled.append(m.open)
                m.open = None
                parts.append(voice.say("ack"))
                everything_handled = len(m.handled) == len(self.brief.objections)
                warming = everything_handled or (not self.hard and voice.rng("sig").random() < 0.6)
                signal = self.signal(voice) if warming and not final else None
                if signal:
                    parts.append(signal)
                    signalled = True
            elif hits and not final and not r.proposal:
                return [voice.say("partial_hard", statement=voice.statement(objection))]

        # 2. A proposed next step: agree only when the conditions hold.
        if r.proposal:
            if m.agreed:
                parts.append(voice.say("already_agreed"))
            else:
                missing = self.missing(proposing=True)
                step = voice.step(r.proposal)
                if not missing:
                    m.agreed = r.proposal
                    parts.append(voice.say("agree", step=step))
                elif not final:
                    parts.append(self.defer(voice, missing[0], step))
            return parts + (self.ending(voice) if final else [])
        if final:
            return parts + self.ending(voice)

        # 3. Raise an objection: a trigger, or a pitch before any discovery.
        if m.open is None:
            triggered = [self.objections[k] for k in r.triggered if k not in m.raised]
            if triggered:
                self.raise_objection(triggered[0])
                slot = "raise_question" if r.discovery_question else "raise"
                return parts + [voice.say(slot, statement=voice.statement(triggered[0]))]
            if r.pitch and m.questions == 0:
                if self.unraised():
                    objection = self.unraised()[0]
                    self.raise_objection(objection)
                    return parts + [voice.say("pitch_early", statement=voice.statement(objection))]
                return parts + [voice.say("pitch_early_none")]

        # 4. An objection is still open and was not answered: stay sceptical.
        if m.open is not None and not heard_handling:
            objection = self.objections[m.open]
            if r.discovery_question:
                return self.answer(voice, text)[:1] + [voice.say("cautious")]
            return [voice.say("sceptical", statement=voice.statement(objection))]

        # 5. Otherwise talk: answer, react to the pitch, greet.
        if r.discovery_question:
            if r.greeting and m.turns == 1:
                parts.append(voice.say("greet_short"))
            parts += self.answer(voice, text)
        elif r.pitch:
            parts.append(voice.say("pitch", concern=self.concern(voice)))
        elif not parts and r.greeting:
            parts.append(voice.say("greeting_easy" if voice.easy else "greeting"))
        elif not parts:
            parts.append(voice.say("fallback"))

        # 6. Warming up: hint that a next step would be welcome, once.
        warmed_up = m.questions >= 1 and m.turns >= 2
        if warmed_up and not m.agreed and not m.nudged and self.missing(proposing=False) == ["proposed_next_step"]:
            m.nudged = True
            if not signalled:
                parts.append(self.signal(voice) or voice.say("nudge"))
        return parts

    def defer(self, voice: Voice, missing: str, step: str) -> str:
        m = self.memory
        if missing == "no_open_objection" and m.open is not None:
            return voice.say("defer_open", step=step, statement=voice.statement(self.objections[m.open]))
        if missing == "objections_handled" and self.unraised():
            objection = self.unraised()[0]
            self.raise_objection(objection)
            statement = voice.statement(objection)
            return voice.say("defer_raise", step=step, statement=statement, statement_lc=lower_first(statement))
        if missing == "asked_questions":
            return voice.say("defer_questions", step=step)
        return voice.say("defer_turns")

    def state(self) -> BrainState:
        m = self.memory
        return BrainState(
            raised=list(m.raised),
            handled=list(m.handled),
            next_step_agreed=m.agreed is not None,
            ended=m.ended,
            off_role_attempts=m.off_role,
            questions_asked=m.questions,
            open_objection=m.open,
            trainee_turns=m.turns,
            extra={"agreed_step": m.agreed} if m.agreed else {},
        )


def replay(
    brief: ScenarioBrief, history: Sequence[Turn], seed: int, phrases: Phrasebooks, reader: TurnReader
) -> tuple[Conversation, list[str] | None]:
    """The conversation after every trainee turn of `history`, and the reply to the last one
    (None when the trainee has not spoken yet)."""
    conversation = Conversation(brief, seed, phrases, reader)
    reply: list[str] | None = None
    for turn in history:
        if turn.speaker == TRAINEE:
            reply = conversation.step(turn.text)
    return conversation, reply
