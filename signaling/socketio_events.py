"""The chunk path's events on the Socket.IO wire (docs/chunk-fallback.md).

The media worker says what happened in this project's words (``media_pipeline.contract.ChunkEvent``,
snake_case); the fallback's clients were built against the streaming guide's event names and
camelCase payloads. This table is the only place one becomes the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from media_pipeline.contract import ChunkEvent


def _error(data: dict[str, Any]) -> dict[str, Any]:
    body = {"code": data.get("code"), "message": data.get("message", "")}
    if data.get("details"):
        body["details"] = data["details"]
    return body


WIRE: dict[ChunkEvent, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    ChunkEvent.HEARD: ("transcription", lambda d: {
        "text": d["text"], "timestamp": d["timestamp"], "confidence": d["confidence"],
        "startMs": d["start_ms"], "endMs": d["end_ms"],
    }),
    ChunkEvent.REPLY_TEXT: ("ai-response", lambda d: {
        "text": d["text"], "turnCount": d["turn_count"], "maxTurns": d["max_turns"], "timestamp": d["timestamp"],
        "conversationEnded": d["conversation_ended"],
    }),
    ChunkEvent.REPLY_AUDIO: ("avatar-response", lambda d: {
        "audioUrl": d["audio_url"], "duration": d["duration_s"], "videoUrl": d["video_url"],
    }),
    ChunkEvent.ERROR: ("error", _error),
    ChunkEvent.ENDED: ("session-ended", lambda d: {
        "reason": d["reason"], "totalTurns": d["total_turns"], "duration": d["duration_s"],
    }),
}


def to_wire(kind: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The Socket.IO event name and payload of a chunk call's event; None for one this wire lacks."""
    try:
        name, shape = WIRE[ChunkEvent(kind)]
    except (ValueError, KeyError):
        return None
    return name, shape(data)


__all__ = ["WIRE", "to_wire"]
