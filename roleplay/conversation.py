"""One conversation turn, the same for every transport.

A typed ``text_message``, a final ASR result on the WebRTC path and a transcribed chunk on the
Socket.IO path all end up here: the trainee's turn is persisted, the buyer brain streams its
reply, and the reply is persisted with what was actually spoken (barge-in can cut it short).
Database work runs in ``database_sync_to_async``; the brain streams on the event loop (the
scripted brain is microseconds of work, cloud brains are network I/O).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from channels.db import database_sync_to_async

from roleplay import selectors, services
from roleplay.dialog import BrainState, BuyerBrain, ScenarioBrief, Turn
from roleplay.dialog.choice import select_brain
from roleplay.errors import SessionEnded
from roleplay.models import RealtimeSession, Utterance


@dataclass
class ConversationContext:
    session_id: str
    brief: ScenarioBrief
    history: list[Turn]
    seed: int
    turn_count: int
    max_turns: int
    brain_engine: str = ""


def _brain_for(context: ConversationContext) -> BuyerBrain:
    """The scenario's brain override, else settings.BRAIN_ENGINE; a cloud brain comes wrapped so a
    failing endpoint falls back to the scripted buyer mid-call instead of leaving the trainee waiting."""
    return select_brain(context.brain_engine or None)


@database_sync_to_async
def load_context(session_id: str) -> ConversationContext:
    session = RealtimeSession.objects.select_related("scenario").get(pk=session_id)
    return ConversationContext(
        session_id=session.pk,
        brief=selectors.scenario_brief(scenario=session.scenario),
        history=selectors.conversation_history(session=session),
        seed=session.seed,
        turn_count=session.turn_count,
        max_turns=session.scenario.max_turns,
        brain_engine=session.scenario.brain_engine,
    )


@database_sync_to_async
def record_trainee_turn(
    *,
    session_id: str,
    text: str,
    source: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    confidence: float | None = None,
    interim_count: int = 0,
    latency: dict[str, float | None] | None = None,
    turn_end: dict | None = None,
) -> Utterance:
    session = RealtimeSession.objects.select_related("scenario").get(pk=session_id)
    if session.state == RealtimeSession.State.ENDED:
        raise SessionEnded("The session has ended.", session_id=session_id)
    return services.utterance_append(
        session=session,
        speaker=Utterance.Speaker.TRAINEE,
        text=text,
        source=source,
        start_ms=start_ms,
        end_ms=end_ms,
        confidence=confidence,
        interim_count=interim_count,
        latency=latency,
        turn_end=turn_end,
    )


@dataclass
class BuyerReply:
    """A buyer reply being produced. Iterate for chunks, then ``persist`` what was spoken."""

    context: ConversationContext
    brain: BuyerBrain
    chunks: list[str] = field(default_factory=list)
    first_chunk_ms: float | None = None
    started: float = field(default_factory=time.perf_counter)

    async def stream(self) -> AsyncIterator[str]:
        async for chunk in self.brain.stream_reply(self.context.brief, self.context.history, seed=self.context.seed):
            if not chunk:
                continue
            if self.first_chunk_ms is None:
                self.first_chunk_ms = (time.perf_counter() - self.started) * 1000
            self.chunks.append(chunk)
            yield chunk

    @property
    def text(self) -> str:
        return "".join(self.chunks).strip()

    def state_after(self) -> BrainState:
        history = [*self.context.history, Turn(speaker="buyer", text=self.text)]
        return self.brain.state(self.context.brief, history)

    @property
    def ends_conversation(self) -> bool:
        """Max turns reached, or the buyer has closed the call."""
        return self.context.turn_count >= self.context.max_turns or self.state_after().ended

    @property
    def end_reason(self) -> str:
        """Why the conversation ends after this reply (meaningful when ``ends_conversation``):
        the scenario's turn limit, else the buyer closed the call. One answer for every transport."""
        ctx = self.context
        reached = bool(ctx.max_turns) and ctx.turn_count >= ctx.max_turns
        return RealtimeSession.EndReason.MAX_TURNS if reached else RealtimeSession.EndReason.BUYER_ENDED

    async def persist(
        self,
        *,
        spoken_text: str | None = None,
        interrupted: bool = False,
        source: str = Utterance.Source.TEXT,
        start_ms: int | None = None,
        end_ms: int | None = None,
        latency: dict[str, float | None] | None = None,
    ) -> Utterance:
        merged = {"brain_first_token_ms": self.first_chunk_ms, **(latency or {})}
        return await _persist_buyer(
            session_id=self.context.session_id,
            text=(spoken_text if spoken_text is not None else self.text).strip(),
            interrupted=interrupted,
            source=source,
            start_ms=start_ms,
            end_ms=end_ms,
            latency=merged,
        )


@database_sync_to_async
def _persist_buyer(**kwargs) -> Utterance:
    session = RealtimeSession.objects.select_related("scenario").get(pk=kwargs.pop("session_id"))
    return services.utterance_append(session=session, speaker=Utterance.Speaker.BUYER, **kwargs)


async def begin_buyer_reply(session_id: str) -> BuyerReply:
    """Start the buyer's reply to the conversation so far (empty history → the opening line)."""
    context = await load_context(session_id)
    return BuyerReply(context=context, brain=_brain_for(context))


async def buyer_text_reply(session_id: str, *, source: str = Utterance.Source.TEXT) -> tuple[BuyerReply, Utterance]:
    """Convenience for text-only transports: produce the whole reply and persist it."""
    reply = await begin_buyer_reply(session_id)
    async for _ in reply.stream():
        pass
    utterance = await reply.persist(source=source)
    return reply, utterance


async def needs_opening_line(session_id: str) -> bool:
    context = await load_context(session_id)
    return not context.history


@database_sync_to_async
def end_session(session_id: str, reason: str) -> RealtimeSession:
    session = RealtimeSession.objects.get(pk=session_id)
    return services.session_end(session=session, reason=reason)
