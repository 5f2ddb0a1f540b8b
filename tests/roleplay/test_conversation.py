"""The shared turn service: every transport persists turns the same way."""

from __future__ import annotations

import pytest

from roleplay import conversation, services
from roleplay.models import Utterance

pytestmark = pytest.mark.django_db(transaction=True)


async def test_it_opens_with_the_persona_line_and_persists_both_sides(alice, scenario):
    from asgiref.sync import sync_to_async

    session = await sync_to_async(services.session_create)(trainee=alice, scenario=scenario, transport="text")
    assert await conversation.needs_opening_line(session.pk)
    opening, _ = await conversation.buyer_text_reply(session.pk)
    assert opening.text == scenario.opening_line

    await conversation.record_trainee_turn(
        session_id=session.pk, text="What does reconciliation cost you today?", source="text"
    )
    reply, saved = await conversation.buyer_text_reply(session.pk)
    assert reply.text and saved.speaker == "buyer" and saved.brain_first_token_ms is not None

    rows = await sync_to_async(list)(
        Utterance.objects.filter(session=session).order_by("seq").values_list("speaker", "seq")
    )
    assert rows == [("buyer", 1), ("trainee", 2), ("buyer", 3)]


async def test_a_barged_in_reply_keeps_only_what_was_spoken(alice, scenario):
    from asgiref.sync import sync_to_async

    session = await sync_to_async(services.session_create)(trainee=alice, scenario=scenario, transport="webrtc")
    reply = await conversation.begin_buyer_reply(session.pk)
    chunks = [c async for c in reply.stream()]
    saved = await reply.persist(spoken_text="Margaret Chen", interrupted=True)
    assert chunks and saved.text == "Margaret Chen" and saved.interrupted


async def test_a_scenario_brain_override_falls_back_to_the_scripted_buyer_when_its_endpoint_is_down(
    alice, scenario, settings
):
    from asgiref.sync import sync_to_async

    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    settings.OPENAI_API_KEY = "sk-test-not-real"
    settings.ENGINE_TIMEOUT_SECONDS = 1.0
    scenario.brain_engine = "openai"
    await sync_to_async(scenario.save)()
    session = await sync_to_async(services.session_create)(trainee=alice, scenario=scenario, transport="text")
    await conversation.buyer_text_reply(session.pk)
    await conversation.record_trainee_turn(session_id=session.pk, text="How do you reconcile invoices?", source="text")
    reply, saved = await conversation.buyer_text_reply(session.pk)
    assert reply.brain.name != "scripted"  # the cloud brain was chosen …
    assert saved.text  # … and the scripted buyer answered when it failed
