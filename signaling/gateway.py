"""The consumer's only door to the domain: ``database_sync_to_async`` helpers over roleplay
services/selectors that raise ``ProtocolError`` with the wire code (and close code) already chosen.

Keeping this out of the consumer means the consumer never touches the ORM and every domain
error has exactly one protocol translation.
"""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.sync import sync_to_async

from media_pipeline.heartbeat import live_workers
from roleplay import conversation, selectors, services
from roleplay.errors import LiveSessionLimit, NotFound, SessionEnded, SessionNotFound, SessionNotResumable
from roleplay.models import RealtimeSession, User
from signaling.db import domain_call
from signaling.protocol import CloseCode, ErrorCode, ProtocolError


@dataclass(frozen=True)
class SessionInfo:
    """What the consumer keeps about its session (plain data, no ORM objects)."""

    session_id: str
    user_id: int
    scenario_id: int
    language: str
    max_turns: int
    buyer_persona: dict[str, str]
    resumed: bool
    ends_at: float | None  # unix seconds when the scenario's time limit runs out (None: no limit)


def _info(session: RealtimeSession, *, resumed: bool) -> SessionInfo:
    scenario = session.scenario
    return SessionInfo(
        session_id=session.pk,
        user_id=session.trainee_id,
        scenario_id=scenario.pk,
        language=scenario.language,
        max_turns=scenario.max_turns,
        # The persona as the trainee may see it: never the goals, objections or closing rules.
        buyer_persona={
            "name": scenario.persona_name,
            "title": scenario.persona_title,
            "company": scenario.company,
            "industry": scenario.industry,
            "personality": scenario.personality,
        },
        resumed=resumed,
        ends_at=session.started_at.timestamp() + scenario.time_limit_seconds if scenario.time_limit_seconds else None,
    )


@domain_call
def open_session(*, user: User, scenario_id: str) -> SessionInfo:
    try:
        scenario = selectors.scenario_get(scenario_id=scenario_id)
    except NotFound:
        raise ProtocolError(
            ErrorCode.CONNECTION_FAILED,
            "No such scenario.",
            {"reason": "scenario_not_found", "scenario": scenario_id[:64]},
            close_code=CloseCode.BAD_REQUEST,
        ) from None
    try:
        session = services.session_create(trainee=user, scenario=scenario, transport=RealtimeSession.Transport.TEXT)
    except LiveSessionLimit as exc:
        raise ProtocolError(
            ErrorCode.CONNECTION_FAILED,
            exc.message,
            {"reason": "live_session_limit", **exc.details},
            close_code=CloseCode.LIVE_SESSION_LIMIT,
        ) from None
    session.scenario = scenario
    return _info(session, resumed=False)


@domain_call
def resume_session(*, user: User, session_id: str) -> SessionInfo:
    try:
        session = services.session_resume(user=user, session_id=session_id)
    except SessionNotFound:
        raise ProtocolError(
            ErrorCode.SESSION_NOT_FOUND,
            "No such session.",
            {"reason": "not_found", "session": session_id[:64]},
            close_code=CloseCode.SESSION_NOT_FOUND,
        ) from None
    except SessionNotResumable as exc:
        raise ProtocolError(
            ErrorCode.SESSION_NOT_FOUND,
            exc.message,
            {"reason": "not_resumable", "session": session_id[:64]},
            close_code=CloseCode.NOT_RESUMABLE,
        ) from None
    session = RealtimeSession.objects.select_related("scenario").get(pk=session.pk)
    return _info(session, resumed=True)


@domain_call
def mark_dropped(*, session_id: str) -> None:
    services.session_mark_dropped(session_id=session_id)


@domain_call
def use_webrtc(*, session_id: str) -> None:
    services.session_set_transport(session_id=session_id, transport=RealtimeSession.Transport.WEBRTC)


async def end_session(*, session_id: str, reason: str) -> None:
    await conversation.end_session(session_id, reason)


@dataclass(frozen=True)
class BuyerText:
    response_id: str
    text: str
    ends_conversation: bool
    end_reason: str  # protocol disconnect reason when ends_conversation: max_turns / buyer_ended
    utterance_id: int | None = None  # the persisted reply: the media worker records its playback on it


def _buyer_text(reply: conversation.BuyerReply, utterance_id: int) -> BuyerText:
    ctx = reply.context
    ends = reply.ends_conversation
    reason = "max_turns" if ctx.max_turns and ctx.turn_count >= ctx.max_turns else "buyer_ended"
    return BuyerText(response_id=f"resp_{utterance_id}", text=reply.text, ends_conversation=ends, end_reason=reason,
                     utterance_id=utterance_id)


async def opening_line(*, session_id: str, new: bool) -> BuyerText | None:
    """The buyer's first line (persisted) if the conversation has not started yet.

    A resumed session may have dropped before its opening line was stored, hence the check.
    """
    if not new and not await conversation.needs_opening_line(session_id):
        return None
    reply, utterance = await conversation.buyer_text_reply(session_id)
    return _buyer_text(reply, utterance.pk)


async def text_turn(*, session_id: str, text: str) -> BuyerText:
    """A typed trainee turn and the buyer's reply, both persisted."""
    try:
        await conversation.record_trainee_turn(session_id=session_id, text=text.strip(), source="text")
    except SessionEnded:
        raise ProtocolError(
            ErrorCode.SESSION_NOT_FOUND, "The session has ended.", {"reason": "ended", "session": session_id}
        ) from None
    reply, utterance = await conversation.buyer_text_reply(session_id)
    return _buyer_text(reply, utterance.pk)


def _live_channels() -> set[str]:
    return {beat.get("channel", "") for beat in live_workers().values()}


async def live_worker_channels() -> set[str]:
    """Channel names of media workers with a fresh heartbeat (cache read off the event loop)."""
    return await sync_to_async(_live_channels, thread_sensitive=False)()
