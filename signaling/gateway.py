"""The consumers' only door to the domain, for both transports: ``database_sync_to_async`` helpers
over roleplay services/selectors that raise ``ProtocolError`` with the wire code already chosen.

Keeping this out of the consumers means no consumer touches the ORM and every domain refusal has
one home. Both consumers open, resume and drop sessions here and show the same buyer persona.

The same refusal is coded differently per transport, as docs/protocol.md and
docs/chunk-fallback.md document, because the sockets differ: a ``/ws/voice/`` socket is opened for
one session, so a refusal at connect is ``ERR_CONNECTION_FAILED`` (``ERR_SESSION_NOT_FOUND`` for
``?session=``) with the close code that says why; a ``/socket.io/`` socket outlives its sessions,
so a refused ``start-session`` is an ``error`` event on a socket that stays open, coded for what
the client does next (``ERR_INVALID_MESSAGE``: fix the request; ``ERR_RATE_LIMIT``: end another
session first). One :class:`Refusal` per failure (its value is ``details.reason`` on both wires)
and one table per transport (:data:`VOICE_ERRORS`, :data:`CHUNK_ERRORS`) make that difference
data; :func:`refused` is the only place a refusal becomes a ``ProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from asgiref.sync import sync_to_async

from media_pipeline import contract
from roleplay import conversation, selectors, services
from roleplay.errors import LiveSessionLimit, NotFound, SessionEnded, SessionNotFound, SessionNotResumable
from roleplay.models import RealtimeSession, Scenario, User
from signaling.db import domain_call
from signaling.protocol import CloseCode, ErrorCode, ProtocolError


class Transport(StrEnum):
    """The consumer asking: the session's stored transport and the table its refusals are coded by."""

    VOICE = "voice"  # /ws/voice/: starts as typed text, becomes WebRTC with the first offer
    CHUNK = "chunk"  # /socket.io/: audio chunks


class Refusal(StrEnum):
    """Why a session cannot be opened or resumed; the value is ``details.reason`` on both wires."""

    SCENARIO_NOT_FOUND = "scenario_not_found"
    LIVE_SESSION_LIMIT = "live_session_limit"
    SESSION_NOT_FOUND = "not_found"
    NOT_RESUMABLE = "not_resumable"


@dataclass(frozen=True)
class WireError:
    code: ErrorCode
    close_code: int | None = None  # the voice socket closes with it; the Socket.IO socket stays open


VOICE_ERRORS: dict[Refusal, WireError] = {
    Refusal.SCENARIO_NOT_FOUND: WireError(ErrorCode.CONNECTION_FAILED, CloseCode.BAD_REQUEST),
    Refusal.LIVE_SESSION_LIMIT: WireError(ErrorCode.CONNECTION_FAILED, CloseCode.LIVE_SESSION_LIMIT),
    Refusal.SESSION_NOT_FOUND: WireError(ErrorCode.SESSION_NOT_FOUND, CloseCode.SESSION_NOT_FOUND),
    Refusal.NOT_RESUMABLE: WireError(ErrorCode.SESSION_NOT_FOUND, CloseCode.NOT_RESUMABLE),
}
CHUNK_ERRORS: dict[Refusal, WireError] = {
    Refusal.SCENARIO_NOT_FOUND: WireError(ErrorCode.INVALID_MESSAGE),
    Refusal.LIVE_SESSION_LIMIT: WireError(ErrorCode.RATE_LIMIT),
    Refusal.SESSION_NOT_FOUND: WireError(ErrorCode.SESSION_NOT_FOUND),
    Refusal.NOT_RESUMABLE: WireError(ErrorCode.SESSION_NOT_FOUND),
}
_ERRORS = {Transport.VOICE: VOICE_ERRORS, Transport.CHUNK: CHUNK_ERRORS}
_STORED_TRANSPORT = {Transport.VOICE: RealtimeSession.Transport.TEXT, Transport.CHUNK: RealtimeSession.Transport.CHUNK}


def refused(transport: Transport, refusal: Refusal, message: str, **details: Any) -> ProtocolError:
    """The ``ProtocolError`` this transport sends for ``refusal`` (its table: the module doc)."""
    wire = _ERRORS[transport][refusal]
    return ProtocolError(wire.code, message, {"reason": refusal.value, **details}, close_code=wire.close_code)


@dataclass(frozen=True)
class SessionInfo:
    """What a consumer keeps about its session (plain data, no ORM objects)."""

    session_id: str
    user_id: int
    scenario_id: int
    language: str
    max_turns: int
    buyer_persona: dict[str, str]
    resumed: bool
    ends_at: float | None  # unix seconds when the scenario's time limit runs out (None: no limit)


def buyer_persona(scenario: Scenario) -> dict[str, str]:
    """The persona as the trainee may see it: never the goals, objections or closing rules."""
    return {
        "name": scenario.persona_name,
        "title": scenario.persona_title,
        "company": scenario.company,
        "industry": scenario.industry,
        "personality": scenario.personality,
    }


def _info(session: RealtimeSession, *, resumed: bool) -> SessionInfo:
    scenario = session.scenario
    return SessionInfo(
        session_id=session.pk,
        user_id=session.trainee_id,
        scenario_id=scenario.pk,
        language=scenario.language,
        max_turns=scenario.max_turns,
        buyer_persona=buyer_persona(scenario),
        resumed=resumed,
        ends_at=session.started_at.timestamp() + scenario.time_limit_seconds if scenario.time_limit_seconds else None,
    )


@domain_call
def open_session(*, user: User, scenario_id: str, transport: Transport) -> SessionInfo:
    try:
        scenario = selectors.scenario_get(scenario_id=scenario_id)
    except NotFound:
        raise refused(transport, Refusal.SCENARIO_NOT_FOUND, "No such scenario.", scenario=scenario_id[:64]) from None
    try:
        session = services.session_create(trainee=user, scenario=scenario, transport=_STORED_TRANSPORT[transport])
    except LiveSessionLimit as exc:
        raise refused(transport, Refusal.LIVE_SESSION_LIMIT, exc.message, **exc.details) from None
    session.scenario = scenario
    return _info(session, resumed=False)


@domain_call
def resume_session(*, user: User, session_id: str, transport: Transport) -> SessionInfo:
    try:
        session = services.session_resume(user=user, session_id=session_id)
    except SessionNotFound:
        raise refused(transport, Refusal.SESSION_NOT_FOUND, "No such session.", session=session_id[:64]) from None
    except SessionNotResumable as exc:
        raise refused(transport, Refusal.NOT_RESUMABLE, exc.message, session=session_id[:64]) from None
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
    return BuyerText(response_id=f"resp_{utterance_id}", text=reply.text, ends_conversation=reply.ends_conversation,
                     end_reason=str(reply.end_reason),
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


async def live_worker_channels() -> set[str]:
    """Channel names of media workers with a fresh heartbeat (cache read off the event loop)."""
    return await sync_to_async(contract.live_worker_channels, thread_sensitive=False)()
