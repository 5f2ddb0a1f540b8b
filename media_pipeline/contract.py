"""The channel-layer contract between the signaling consumer and the media worker.

Signaling owns the WebSocket; the media worker owns the aiortc peer connection. They talk only
through the channel layer with the messages below, so a worker can live in the server process
(embedded default) or in any number of ``runworker media`` processes (scaled).

Routing: the first ``media.offer`` of a session goes to the shared ``MEDIA_CHANNEL``; the worker
that takes it answers with ``media.pinned`` carrying its own channel name, and the consumer sends
every later message of that session there. If the pinned worker stops answering (no heartbeat),
the consumer reports ``ERR_WEBRTC_FAILED`` and unpins; the client's fresh ``offer`` lands on a
live worker.

Consumer → worker (``type`` values; every message has ``session_id`` and ``reply_channel``, the
consumer's own channel name):
- ``media.offer``       {sdp, candidates, scenario_id, user_id, offer_id} — ``offer_id`` numbers the
                         consumer's offers, so a hang-up can name the one it gives up
- ``media.ice``         {candidate, sdp_mid, sdp_mline_index}
- ``media.ready``       {direction}
- ``media.asr_start``   {language, format, sample_rate, mode}
- ``media.asr_stop``    {}
- ``media.tts_request`` {request_id, text, voice, speed, pitch}
- ``media.text_reply``  {text, message_id, response_id, utterance_id} — speak a buyer reply produced by a
                         typed turn; once played, the worker marks that utterance as voice with its played span
- ``media.hangup``      {reason, offer_id?} — the session ended, the socket dropped, or (with
                         ``offer_id``) signaling gave up that offer (a media reset); the call closes
                         unless it already answers a newer offer. Before the worker is pinned it
                         goes to every worker (group ``MEDIA_WORKERS_GROUP``): the one holding the
                         call closes it, the others remember it and refuse that offer if it comes
- ``media.keepalive``   {} — signaling still has this call (every few seconds while pinned); a call
                         nothing touched for ``MEDIA_IDLE_REAP_SECONDS`` is closed by the worker

The audio-chunk fallback's calls live in the media worker too (``media_pipeline.chunked``): signaling
keeps the Socket.IO socket and the chunk session (offsets, acknowledgements, the resume window) and
drives the worker's call with requests, each answered by one ``media.chunk_done`` {request_id,
result | error} on ``reply_channel`` (the process's chunk link, which outlives any one socket):
- ``media.chunk_open``  {request_id, user_id, audio_config, opening} — to the shared channel (or passed
                         on by a full worker, as an offer is); ``result`` {worker_channel}; ``opening``
                         asks for the buyer's opening line (a new session, not a resumed one)
- ``media.chunk_audio`` {request_id, data: bytes} — one flush of in-order audio; ``result`` {taken}:
                         false when the decoder is saturated (signaling keeps the bytes and retries)
- ``media.chunk_idle``  {request_id} — the stream paused: a turn still open is closed and answered
- ``media.chunk_text``  {request_id, text} — a typed turn; ``result`` {queued}
- ``media.hangup``      {reason, request_id} — end the call: ``session-ended`` is emitted, the
                         recording stored, then the request is answered
The call's events come back as ``media.event`` with a transport-neutral :class:`ChunkEvent` (the
Socket.IO consumer maps them to its event names and camelCase payloads, ``signaling.socketio_events``)
and a call that ends itself (``max_turns``) sends ``media.session_end``.

Worker → consumer:
- ``media.pinned``      {worker_channel, offer_id}
- ``media.event``       {message: {type, data}} — a protocol message to forward to the client
                         as-is (answer, ice_candidate, connected, ready, asr_interim, asr_result,
                         text_response, tts_start, tts_complete, error)
- ``media.session_end`` {reason} — the pipeline ended the session (max_turns, error), or the worker
                         is shutting down (server_shutdown, sent by ``MediaWorker.drain``)

Both sides also share the protocol's error codes (:class:`ErrorCode`: the worker's ``error`` events
carry them, the consumers send them) and the wall clock messages are stamped with (:func:`now_ms`).
They live here, not in ``signaling.protocol``, because the media worker must not import signaling;
``signaling.protocol`` re-exports them.

This module is signaling's only door into the media pipeline (an import-linter contract in
pyproject.toml checks it): besides the messages, signaling reads the workers' heartbeat here
(:func:`live_worker_channels`) and, at shutdown, finds the embedded worker to drain
(:func:`in_process_worker`).
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from media_pipeline.worker import MediaWorker


class ErrorCode(StrEnum):
    """The nine ``error`` codes of both wire protocols (``/ws/voice/`` and the ``/socket.io/`` fallback).

    A StrEnum, so a member is its wire value (``ErrorCode.ASR_FAILED == "ERR_ASR_FAILED"``): no
    other module spells an ``"ERR_…"`` literal (tests/media_pipeline/test_contract.py checks).
    """

    CONNECTION_FAILED = "ERR_CONNECTION_FAILED"
    INVALID_MESSAGE = "ERR_INVALID_MESSAGE"
    SESSION_NOT_FOUND = "ERR_SESSION_NOT_FOUND"
    WEBRTC_FAILED = "ERR_WEBRTC_FAILED"
    AUDIO_ENCODE_FAILED = "ERR_AUDIO_ENCODE_FAILED"
    ASR_FAILED = "ERR_ASR_FAILED"
    TTS_FAILED = "ERR_TTS_FAILED"
    TIMEOUT = "ERR_TIMEOUT"
    RATE_LIMIT = "ERR_RATE_LIMIT"


class ChunkEvent(StrEnum):
    """What a chunk call tells its client, in this project's words (snake_case payloads).

    Named like the LingEcho messages they correspond to; the Socket.IO wire names and shapes are
    the consumer's business (``signaling.socketio_events``), not the media worker's.
    """

    HEARD = "asr_result"  # {text, confidence, start_ms, end_ms, timestamp}: one trainee turn, final
    REPLY_TEXT = "text_response"  # {text, turn_count, max_turns, conversation_ended, timestamp}
    REPLY_AUDIO = "reply_audio"  # {audio_url, video_url, duration_s}: the reply as a fetchable file
    ERROR = "error"  # {code, message, details}
    ENDED = "session_ended"  # {reason, total_turns, duration_s}


def now_ms() -> int:
    """Unix time in ms: the ``timestamp`` of every envelope and the ``serverTime`` of acknowledgements."""
    return int(time.time() * 1000)

MEDIA_CHANNEL = "media"
# Every worker's pinned channel is in this group: a hang-up for an offer nobody has pinned yet.
MEDIA_WORKERS_GROUP = "media-workers"

TO_WORKER = (
    "media.offer",
    "media.ice",
    "media.ready",
    "media.asr_start",
    "media.asr_stop",
    "media.tts_request",
    "media.text_reply",
    "media.hangup",
    "media.keepalive",
    "media.chunk_open",
    "media.chunk_audio",
    "media.chunk_idle",
    "media.chunk_text",
)
TO_CONSUMER = ("media.pinned", "media.event", "media.session_end", "media.chunk_done")
CHUNK_REQUESTS = ("media.chunk_open", "media.chunk_audio", "media.chunk_idle", "media.chunk_text")
# What the chunk path accepts as ``audioConfig.format`` (media_pipeline.chunked.webm_stream decodes them).
CHUNK_AUDIO_FORMATS = ("webm-opus", "pcm16")


def to_worker(kind: str, *, session_id: str, reply_channel: str, **data: Any) -> dict[str, Any]:
    if kind not in TO_WORKER:
        raise ValueError(f"unknown worker message {kind!r}")
    return {"type": kind, "session_id": session_id, "reply_channel": reply_channel, **data}


def event(message_type: str, data: dict[str, Any], *, session_id: str, worker_channel: str = "") -> dict[str, Any]:
    """Wrap a protocol message for the consumer to forward to its client. ``worker_channel``: the
    call's worker (its pinned channel), so a consumer forwards only the worker it is pinned to."""
    wrapped = {"type": "media.event", "session_id": session_id, "message": {"type": message_type, "data": data}}
    if worker_channel:
        wrapped["worker_channel"] = worker_channel
    return wrapped


def chunk_done(
    request_id: str, *, session_id: str, result: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The answer to one chunk request: its ``result``, or an ``error`` {code, message, details}."""
    message: dict[str, Any] = {"type": "media.chunk_done", "session_id": session_id, "request_id": request_id}
    if error is not None:
        message["error"] = error
    else:
        message["result"] = result or {}
    return message


def error_body(code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``data`` of an ``error`` event (both transports): code, message and details."""
    return {"code": code, "message": message, "details": details or {}}


def hangup(*, session_id: str, reply_channel: str, reason: str, offer_id: int | None = None) -> dict[str, Any]:
    """``media.hangup``; with ``offer_id`` it gives up only that offer (see the module doc)."""
    data: dict[str, Any] = {"reason": reason}
    if offer_id is not None:
        data["offer_id"] = offer_id
    return to_worker("media.hangup", session_id=session_id, reply_channel=reply_channel, **data)


# --- what signaling reads of the workers besides messages ----------------------------------------

def live_worker_channels() -> set[str]:
    """Channel names of media workers with a fresh heartbeat (a cache read: call it off the event loop).

    The heartbeat is part of the contract: a consumer whose pinned worker is missing from this set
    reports ``ERR_WEBRTC_FAILED`` and unpins (see the module doc).
    """
    from media_pipeline.heartbeat import live_workers

    return {beat.get("channel", "") for beat in live_workers().values()}


def in_process_worker() -> MediaWorker | None:
    """This process's media worker when it runs embedded and has started on the running loop; else None.

    The server's shutdown drain (``signaling.shutdown``) closes its calls and waits for their
    recordings; with ``runworker media`` processes each one drains itself. Imported lazily: the
    worker pulls in aiortc and the engines.
    """
    import asyncio

    from django.conf import settings

    if settings.MEDIA_WORKER_MODE != "embedded":
        return None
    from media_pipeline.worker import process_worker

    worker = process_worker()
    return worker if worker.loop is asyncio.get_running_loop() else None  # embedded: it shares the server's loop
