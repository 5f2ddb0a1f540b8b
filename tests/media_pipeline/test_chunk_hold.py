"""A thought held open on the chunk path is answered on what the loop has *heard*, not on what the
decode thread is still scoring.

The decode thread moves the stream on while it scores a flush: its samples count as decoded before
the VAD has heard the voice in them. A held thought checked in that moment looked like a pause of
seconds with nobody speaking, and was answered alone ("I understand that the budget.") with its
rest in the very flush being scored. Under the full suite's load this cut the end-to-end test of a
pause after a content word in two."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

from media_pipeline.audio import float32_to_pcm16
from media_pipeline.chunked.turns import ChunkTurns, load_call_facts
from media_pipeline.contract import ChunkEvent
from media_pipeline.engines.vad.base import Endpointer, EndpointerConfig
from tests.audio_fixtures import VOICED, silence, speak_with_pause

pytestmark = [pytest.mark.django_db(transaction=True)]

SENTENCE = "I understand that the budget is a big problem for you."
BEFORE = "I understand that the budget"
RATE = 16000


def _pcm(samples: np.ndarray) -> bytes:
    return float32_to_pcm16(samples).astype("<i2").tobytes()


def _pause_at(audio: np.ndarray) -> int:
    """Where the 0.8 s pause cut into the sentence begins (the first gap of 0.5 s without voice)."""
    voiced = np.flatnonzero(np.abs(audio) > VOICED)
    gap = np.nonzero(np.diff(voiced) > RATE // 2)[0][0]
    return int(voiced[gap]) + 1


async def _until(events: list[tuple[str, dict[str, Any]]], name: str, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [data for seen, data in events if seen == name]
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {name}; saw {[seen for seen, _ in events]}")


@pytest.mark.slow
async def test_a_held_thought_is_not_answered_while_its_rest_is_being_scored(chunk_session):
    events: list[tuple[str, dict[str, Any]]] = []

    async def emit(name: str, data: dict[str, Any]) -> None:
        events.append((name, data))

    async def closed(reason: str) -> None:
        return None

    turns = ChunkTurns(await load_call_facts(chunk_session.pk), {"format": "pcm16", "sampleRate": RATE})
    turns.bind(emit, closed)
    turns.opening()
    try:
        await _until(events, ChunkEvent.REPLY_TEXT)  # the opening line
        spoken = np.concatenate([silence(300), speak_with_pause(SENTENCE, BEFORE, 800)])
        cut = _pause_at(spoken) + RATE // 2
        assert await turns.audio(_pcm(spoken[:cut]))  # "…the budget" and half a second of pause
        deadline = time.monotonic() + 20
        while turns._held is None and time.monotonic() < deadline:  # noqa: SLF001 - the hold under test
            await asyncio.sleep(0.05)
        assert turns._held is not None, "the ASR's odds hold '…the budget' open"  # noqa: SLF001

        real_feed = turns.stream.feed

        def slow_feed(data: bytes) -> Any:
            """Score the rest, then stay busy, as a loaded decode thread does before the loop hears back."""
            scored = real_feed(data)
            time.sleep(1.5)
            return scored

        turns.stream.feed = slow_feed  # type: ignore[method-assign]
        assert await turns.audio(_pcm(np.concatenate([spoken[cut:], silence(1500)])))
        await turns.idle()
        await _until(events, ChunkEvent.HEARD)
        await asyncio.sleep(0.5)  # a second transcription would come right after the first
        heard = [data for name, data in events if name == ChunkEvent.HEARD]
        assert len(heard) == 1, heard
        assert "budget" in heard[0]["text"].lower() and "problem" in heard[0]["text"].lower(), heard
    finally:
        await turns.close("user_requested")


def test_the_pause_ends_where_the_voice_that_ends_it_began():
    """Voice not yet long enough to be speech already ends the pause (``quiet_until``)."""
    ep = Endpointer(EndpointerConfig(start_ms=96), window_samples=512)
    ep.process([0.0] * 10)
    assert ep.quiet_until == ep.position == 10 * 512
    ep.process([0.9, 0.9])  # 64 ms of voice: not speech yet
    assert not ep.in_speech
    assert ep.quiet_until == 10 * 512
    ep.process([0.1])  # a click, not a start
    assert ep.quiet_until == ep.position
