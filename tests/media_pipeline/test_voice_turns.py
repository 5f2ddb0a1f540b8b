"""The WebRTC turn stage (media_pipeline.webrtc.turns) with fakes at its ports: finals handed in as
the inbound audio would, a speaker on an instant track, a call that records what it emitted; the
conversation is the real one (roleplay, database). test_turn_joining covers the same through aiortc."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from types import SimpleNamespace
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from media_pipeline.webrtc.inbound import FinalResult
from media_pipeline.webrtc.speaking import Speaker
from media_pipeline.webrtc.turns import VoiceTurns
from roleplay.models import Utterance
from tests.media_pipeline.test_speaking import Host, RecordingTTS

pytestmark = [pytest.mark.django_db(transaction=True)]


class Call(Host):
    """The turn stage's host: what a CallSession offers it, recorded (the speaker's fake host, plus
    what the turn stage reads of its call)."""

    def __init__(self, session_id: str, *, patience_ms: int = 300) -> None:
        super().__init__(RecordingTTS())
        self.session_id = session_id
        self.engines.asr = SimpleNamespace(name="fake-asr")
        self.inbound = None
        self.mode = "auto"
        self.closed = False
        self.voice = ""
        self.language = "en"
        self.patience_ms = patience_ms
        self.ended: list[str] = []
        self.speaker = Speaker(self)

    async def request_end(self, reason: str) -> None:
        self.ended.append(reason)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]


def final(text: str, result_id: str, start_ms: int, end_ms: int) -> FinalResult:
    now = time.monotonic()
    return FinalResult(text=text, confidence=0.9, language="en", start_ms=start_ms, end_ms=end_ms,
                       result_id=result_id, stream_start_ms=start_ms, stream_end_ms=end_ms, interim_count=1,
                       last_voiced_at=now, decided_at=now, ready_at=now)


async def until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@sync_to_async
def utterances(session_id: str) -> list[tuple[str, str]]:
    return list(Utterance.objects.filter(session_id=session_id).order_by("seq").values_list("speaker", "text"))


@pytest.fixture
async def stage(call_session):
    call = Call(call_session.pk)
    turns = VoiceTurns(call)
    runner = asyncio.ensure_future(turns.run())
    yield call, turns
    call.closed = True
    runner.cancel()


async def test_a_final_is_one_turn_answered_by_the_speaker(stage):
    call, turns = stage
    turns.on_final(final("How much time does your team spend on invoices?", "asr_1", 0, 2500))
    await until(lambda: call.of("tts_complete"))
    assert [e["result_id"] for e in call.of("asr_result")] == ["asr_1"]
    (reply,) = call.of("text_response")
    assert reply["message_id"] == "asr_1" and reply["text"]
    assert await utterances(call.session_id) == [("trainee", "How much time does your team spend on invoices?"),
                                                 ("buyer", reply["text"])]


async def test_a_thought_held_on_and_joins_what_follows_into_one_turn(stage):
    call, turns = stage
    turns.on_final(final("I was looking at your invoices and", "asr_1", 0, 2000))
    await until(lambda: call.of("asr_interim"))
    assert not call.of("asr_result"), "held: shown as an interim, no final yet"
    turns.on_final(final("the month-end close.", "asr_2", 2600, 4000))
    await until(lambda: call.of("tts_complete"))
    (result,) = call.of("asr_result")
    assert result["result_id"] == "asr_1"
    assert result["text"] == "I was looking at your invoices and the month-end close."
    assert len(call.of("text_response")) == 1
    said = await utterances(call.session_id)
    assert [speaker for speaker, _ in said] == ["trainee", "buyer"]


async def test_a_held_thought_nobody_continues_is_answered_after_the_patience(stage):
    call, turns = stage
    turns.on_final(final("So what I wanted to say is um", "asr_1", 0, 2000))
    await until(lambda: call.of("tts_complete"))
    (result,) = call.of("asr_result")
    assert result["text"] == "So what I wanted to say is um"
    assert len(call.of("text_response")) == 1


async def test_a_held_thought_counts_the_pause_endpointing_already_waited(stage):
    """Endpointing waited out the patience on "um": the turn stage answers now, not one patience later."""
    call, turns = stage
    call.patience_ms = 2000  # with no audio coming in (no inbound), a hold waits twice that: 4 s
    held = final("So what I wanted to say is um", "asr_1", 0, 2000)
    turns.on_final(dataclasses.replace(held, last_voiced_at=held.decided_at - 2.0))
    started = time.monotonic()
    await until(lambda: call.of("asr_result"), timeout=10)
    assert time.monotonic() - started < 1.5
    await until(lambda: call.of("tts_complete"))  # the reply is stored before the test's database goes


async def test_a_thought_held_on_the_asrs_odds_alone_waits_less_than_the_patience(stage, settings):
    from media_pipeline.engines.asr.base import EndingOdds

    call, turns = stage
    call.patience_ms = 2000
    settings.TURN_TRAILS_OFF_WAIT_MS = 200
    broken_off = dataclasses.replace(final("I understand that the budget", "asr_1", 0, 2000),
                                     ending=EndingOdds(more=0.3, stop=0.4))
    turns.on_final(broken_off)
    await until(lambda: call.of("asr_interim"))
    assert not call.of("asr_result"), "held: the odds say it goes on"
    started = time.monotonic()
    await until(lambda: call.of("asr_result"), timeout=10)
    assert time.monotonic() - started < 1.5, "answered after the odds' wait (0.2 s, 0.4 s on the wall clock)"
    await until(lambda: call.of("tts_complete"))  # the reply is stored before the test's database goes


async def test_a_backchannel_while_the_buyer_speaks_is_neither_a_turn_nor_a_barge_in(stage):
    call, turns = stage
    call.outbound.playing = "resp_x"  # the buyer is speaking
    call.inbound = SimpleNamespace(result_id="asr_9")
    turns._during_reply = "asr_9"  # noqa: SLF001 - what on_speech notes when speech begins over the buyer
    turns.on_final(final("mm-hm", "asr_9", 0, 400))
    await until(lambda: call.of("asr_result"))
    (result,) = call.of("asr_result")
    assert result["backchannel"] is True
    await asyncio.sleep(0.2)
    assert not call.of("text_response") and call.speaker.barge_in_at is None
    assert await utterances(call.session_id) == []


async def test_a_held_thought_waits_on_what_the_loop_has_heard_not_on_a_vad_pass_in_flight(stage):
    """The VAD thread moves the detector while it scores a pass: voice it has scored but not yet
    called speech looked, from the loop, like the held pause going on, and the thought was answered
    alone with its rest in that very pass. The hold reads the loop's view, taken between passes."""
    call, turns = stage
    call.patience_ms = 1000  # the wall-clock fallback (no audio at all) is twice that
    inbound = SimpleNamespace(quiet_until=0, hearing_speech=False, utt_start=None,
                              detector=SimpleNamespace(in_speech=False), vad_position=0)
    call.inbound = inbound
    turns.on_final(final("I was looking at your invoices and", "asr_1", 0, 2000))
    await until(lambda: call.of("asr_interim"))
    for _ in range(16):  # 1.6 s of a pass in flight: the thread scores, the loop has heard nothing new
        inbound.vad_position += 1600
        await asyncio.sleep(0.1)
    assert not call.of("asr_result"), "answered on a VAD pass still in flight"
    inbound.hearing_speech, inbound.utt_start = True, 16000  # the pass lands: the trainee went on
    turns.on_final(final("the month-end close.", "asr_2", 2600, 4000))
    await until(lambda: call.of("tts_complete"))
    (result,) = call.of("asr_result")
    assert result["text"] == "I was looking at your invoices and the month-end close."
