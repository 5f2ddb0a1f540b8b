"""The chunk call's neutral events become the fallback's Socket.IO events (signaling.socketio_events)."""

from __future__ import annotations

from media_pipeline.contract import ChunkEvent
from signaling.socketio_events import WIRE, to_wire


def test_every_chunk_event_has_a_socketio_name_and_shape():
    assert set(WIRE) == set(ChunkEvent)


def test_events_take_the_streaming_guides_names_and_camel_case():
    assert to_wire(ChunkEvent.HEARD, {"text": "hi", "timestamp": 5, "confidence": 0.9, "start_ms": 1, "end_ms": 2}) == (
        "transcription", {"text": "hi", "timestamp": 5, "confidence": 0.9, "startMs": 1, "endMs": 2})
    assert to_wire(ChunkEvent.REPLY_TEXT, {"text": "ok", "turn_count": 1, "max_turns": 10, "timestamp": 5,
                                           "conversation_ended": False}) == (
        "ai-response", {"text": "ok", "turnCount": 1, "maxTurns": 10, "timestamp": 5, "conversationEnded": False})
    assert to_wire(ChunkEvent.REPLY_AUDIO, {"audio_url": "/m/1.wav", "duration_s": 1.5, "video_url": None}) == (
        "avatar-response", {"audioUrl": "/m/1.wav", "duration": 1.5, "videoUrl": None})
    assert to_wire(ChunkEvent.ENDED, {"reason": "max_turns", "total_turns": 3, "duration_s": 40.0}) == (
        "session-ended", {"reason": "max_turns", "totalTurns": 3, "duration": 40.0})


def test_an_error_carries_details_only_when_there_are_some():
    assert to_wire("error", {"code": "ERR_ASR_FAILED", "message": "m", "details": {}}) == (
        "error", {"code": "ERR_ASR_FAILED", "message": "m"})
    assert to_wire("error", {"code": "ERR_TTS_FAILED", "message": "m", "details": {"engine": "x"}})[1]["details"] == {
        "engine": "x"}


def test_an_event_this_wire_lacks_is_not_sent():
    assert to_wire("tts_start", {}) is None
