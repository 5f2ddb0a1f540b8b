"""One turn is one turn, over WebRTC with a real aiortc client: pauses inside a thought, the buyer
yielding to a trainee who goes on, backchannels that neither take the turn nor stop the buyer."""

from __future__ import annotations

import asyncio
import re

import pytest
from asgiref.sync import sync_to_async

from media_pipeline import joining
from roleplay.models import RealtimeSession, Utterance
from tests.audio_fixtures import silence, speak
from tests.media_pipeline.voice_client import VoiceClient, connect
from tests.trailing_off import CONTENT_WORD_PAUSE, trailing_off_take

pytestmark = [pytest.mark.django_db(transaction=True)]

RATE = 8000
OPUS_RATE = 48000


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@sync_to_async
def trainee_and_buyer(session_id: str) -> tuple[list[Utterance], list[Utterance], int]:
    found = list(Utterance.objects.filter(session_id=session_id).order_by("seq"))
    turns = RealtimeSession.objects.get(pk=session_id).turn_count
    return [u for u in found if u.speaker == "trainee"], [u for u in found if u.speaker == "buyer"], turns


async def start(contract_peer, client) -> None:
    await connect(contract_peer, client)
    await contract_peer.send("media.asr_start", language="en", format="pcma", sample_rate=16000, mode="auto")


async def answered(contract_peer) -> dict:
    """The buyer reply that was spoken for good (a reply withdrawn because the trainee went on is skipped)."""
    while True:
        reply = await contract_peer.expect("text_response", timeout=30)
        complete = await contract_peer.expect("tts_complete", timeout=30, request_id=reply["data"]["response_id"])
        if not complete["data"].get("withdrawn"):
            return reply


def speculative(outcome: str) -> float:
    from media_pipeline import metrics

    return metrics.SPECULATIVE_FINALS_TOTAL.labels(outcome)._value.get()


def vad_hops(how: str) -> float:
    from media_pipeline import metrics

    return metrics.VAD_HOPS_TOTAL.labels(how)._value.get()


# --- the words ------------------------------------------------------------------------------------

def test_it_joins_fragments_with_a_space_in_english_and_none_in_chinese():
    joined = joining.join_text("I wanted to ask you about.", "your invoices.")
    assert joined == "I wanted to ask you about your invoices."
    assert joining.join_text("我觉得", "这个价格有点高。", "zh") == "我觉得这个价格有点高。"
    assert joining.join_text("", "okay") == "okay"


def test_an_open_turn_keeps_its_id_start_and_utterance_when_joined():
    first = joining.OpenTurn(result_id="asr_1", text="So the thing is", start_ms=100, end_ms=900, confidence=0.9,
                             utterance_id=7, response_id="resp_1")
    joined = first.joined("we pay too much.", end_ms=2500, confidence=0.8, language="en")
    assert (joined.result_id, joined.start_ms, joined.end_ms, joined.utterance_id) == ("asr_1", 100, 2500, 7)
    assert joined.text == "So the thing is we pay too much." and joined.confidence == 0.8
    assert joined.response_id == ""


# --- live -----------------------------------------------------------------------------------------

@pytest.mark.slow
async def test_a_pause_mid_sentence_is_one_turn_with_one_reply(media_worker, contract_peer, call_session):
    # Opus at 48 kHz: over 8 kHz PCMA tiny.en now and then hears "ask you about" as "have you am out",
    # an ASR slip that leaves no words to hold the thought by (the model alone then decides).
    decodes_before = {k: speculative(k) for k in ("used", "stale")}
    hops_before = {k: vad_hops(k) for k in ("scored", "idle")}
    client = VoiceClient("opus")
    try:
        await start(contract_peer, client)
        client.track.play(speak("I wanted to ask you about", rate=OPUS_RATE))
        client.track.play(silence(800, OPUS_RATE))
        client.track.play(speak("the invoices your team handles every month.", rate=OPUS_RATE))
        client.track.play(silence(1500, OPUS_RATE))
        reply = await answered(contract_peer)
        finals = contract_peer.of_type("asr_result")
        assert len({f["data"]["result_id"] for f in finals}) == 1, [f["data"] for f in finals]
        assert {"wanted", "month"} <= words(finals[-1]["data"]["text"]), finals[-1]["data"]
        trainee, buyer, turns = await trainee_and_buyer(call_session.pk)
        assert len(trainee) == 1 and turns == 1, [u.text for u in trainee]
        assert {"wanted", "month"} <= words(trainee[0].text)
        assert trainee[0].turn_end["decision"], trainee[0].turn_end  # how its end was decided, for review
        assert len(buyer) == 1 and buyer[0].text == reply["data"]["text"]
    finally:
        await client.close()
    # The final decode starts when a pause begins (the words are ready when the turn is decided) and
    # the final reuses it; /metrics counts each (lingecho_speculative_finals_total). The 0.8 s pause
    # either resumed (its decode thrown away) or ended a fragment the turn stage joined (used).
    decodes = {k: speculative(k) - decodes_before[k] for k in decodes_before}
    assert decodes["used"] >= 1 and decodes["used"] + decodes["stale"] >= 2, decodes
    # The silent line before and after the turn was scored on the loop without the model (the VAD's
    # level gate, lingecho_vad_hops_total{how="idle"}); the speech and the pause inside the turn were not.
    hops = {k: vad_hops(k) - hops_before[k] for k in hops_before}
    assert hops["idle"] >= 10 and hops["scored"] >= 60, hops


# After a content word no word rule says "more to come": only the ASR's odds of "…" right after
# "budget" (Transcript.ending, words.trailing_cue) hold the thought. The pause is cut into the whole
# sentence's audio: "budget" spoken on its own would end on a falling pitch, and be heard as finished
# (the sentence: tests/trailing_off.py's CONTENT_WORD_PAUSE).
BOTH_SIDES = {"understand", "budget", "problem"}


@pytest.mark.slow
async def test_a_pause_after_a_content_word_mid_sentence_is_one_turn_with_one_reply(media_worker, contract_peer,
                                                                                     call_session):
    # A take the ASR hears trail off at the pause (tests/trailing_off.py; aiortc's 96 kbps Opus is
    # close to the take as it is).
    take = await asyncio.to_thread(trailing_off_take, *CONTENT_WORD_PAUSE, rate=OPUS_RATE)
    client = VoiceClient("opus")
    try:
        await start(contract_peer, client)
        client.track.play(silence(500, OPUS_RATE))  # a breath first: the decode gets its 0.3 s lead-in, as on a call
        client.track.play(take)
        client.track.play(silence(1500, OPUS_RATE))
        reply = await answered(contract_peer)
        finals = contract_peer.of_type("asr_result")
        assert len({f["data"]["result_id"] for f in finals}) == 1, [f["data"] for f in finals]
        assert BOTH_SIDES <= words(finals[-1]["data"]["text"]), finals[-1]["data"]
        # The buyer never began a reply in the pause (one it then withdrew would be talking over).
        assert len(contract_peer.of_type("text_response")) == 1, contract_peer.of_type("text_response")
        trainee, buyer, turns = await trainee_and_buyer(call_session.pk)
        assert len(trainee) == 1 and turns == 1, [u.text for u in trainee]
        assert BOTH_SIDES <= words(trainee[0].text), trainee[0].text
        assert len(buyer) == 1 and buyer[0].text == reply["data"]["text"]
    finally:
        await client.close()


@pytest.mark.slow
async def test_the_buyer_yields_when_the_trainee_goes_on_right_after_it_starts(media_worker, contract_peer,
                                                                               call_session, settings):
    settings.TURN_DETECTOR = "silence"  # endpoint on the first pause, so the buyer does start
    # Opus at 48 kHz and words tiny.en does not slip on: over 8 kHz PCMA it heard "Margaret" as "Mario".
    client = VoiceClient("opus")
    try:
        await start(contract_peer, client)
        client.track.play(speak("Hello there.", rate=OPUS_RATE))  # then silence until we speak again
        first = await contract_peer.expect("asr_result", timeout=20)
        await contract_peer.expect("tts_start", timeout=20)
        client.track.play(speak("How much time does your team spend on invoices?", rate=OPUS_RATE))
        client.track.play(silence(1500, OPUS_RATE))
        withdrawn = await contract_peer.expect("tts_complete", timeout=20)
        assert withdrawn["data"].get("withdrawn") is True and withdrawn["data"]["interrupted"] is True
        assert len(contract_peer.of_type("text_response")) == 1
        await contract_peer.expect("text_response")  # the withdrawn reply's text: the page drops it
        joined = await contract_peer.expect("asr_result", timeout=20)
        assert joined["data"]["result_id"] == first["data"]["result_id"]
        assert {"hello", "much", "time"} <= words(joined["data"]["text"]), joined["data"]
        reply = await answered(contract_peer)
        assert reply["data"]["message_id"] == first["data"]["result_id"]
        trainee, buyer, turns = await trainee_and_buyer(call_session.pk)
        assert len(trainee) == 1 and turns == 1 and {"hello", "much", "time"} <= words(trainee[0].text)
        assert trainee[0].turn_end["joined"] == 1, trainee[0].turn_end
        assert [u.text for u in buyer] == [reply["data"]["text"]]  # the withdrawn reply is not kept
    finally:
        await client.close()


@pytest.mark.slow
async def test_a_backchannel_does_not_stop_the_buyer(media_worker, contract_peer, call_session):
    client = VoiceClient("pcma")
    try:
        await start(contract_peer, client)
        long_text = " ".join(["Our budget is fixed for this year and I am not sure we can change that."] * 4)
        await contract_peer.send("media.tts_request", request_id="req_long", text=long_text, voice="", speed=1.0,
                                 pitch=1.0)
        await contract_peer.expect("tts_start", request_id="req_long")
        await asyncio.sleep(1.0)
        client.track.play(speak("Yeah.", rate=RATE))
        client.track.play(silence(1000, RATE))
        heard = await contract_peer.expect("asr_result", timeout=20)
        assert heard["data"].get("backchannel") is True, heard["data"]
        assert not contract_peer.of_type("tts_complete")  # still speaking
        trainee, _, turns = await trainee_and_buyer(call_session.pk)
        assert trainee == [] and turns == 0
    finally:
        await client.close()
