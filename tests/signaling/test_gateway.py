"""signaling.gateway: the one door both consumers take to the domain.

A refusal (here: alice already has her one live session) is one gateway error; each transport
codes it as its document says (docs/protocol.md, docs/chunk-fallback.md): ``/ws/voice/`` refuses
the connection with ERR_CONNECTION_FAILED and close 4429, ``/socket.io/`` answers the
``start-session`` with ERR_RATE_LIMIT and keeps the socket.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache

from roleplay import services
from roleplay.models import RealtimeSession
from signaling import gateway
from signaling.protocol import CloseCode, ErrorCode, ProtocolError
from tests.signaling.test_socketio_hostile import open_sio
from tests.signaling.test_voice_protocol import Client, open_ws

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
LIVE_SESSION_LIMIT = {"reason": "live_session_limit", "limit": 1}


@pytest.fixture
def alice_at_her_limit(alice, scenario, settings):
    """alice may hold one live session and already does."""
    settings.MAX_LIVE_SESSIONS_PER_USER = 1
    settings.POSTPROCESS_EAGER_IN_BACKGROUND = False
    settings.MEDIA_WORKER_MODE = "external"
    cache.clear()
    services.session_create(trainee=alice, scenario=scenario, transport=RealtimeSession.Transport.TEXT)
    yield alice
    cache.clear()


async def refusal(transport: gateway.Transport, user, scenario) -> ProtocolError:
    with pytest.raises(ProtocolError) as refused:
        await gateway.open_session(user=user, scenario_id=str(scenario.pk), transport=transport)
    return refused.value


async def test_the_live_session_limit_is_one_refusal_coded_per_transport(alice_at_her_limit, scenario):
    voice = await refusal(gateway.Transport.VOICE, alice_at_her_limit, scenario)
    chunk = await refusal(gateway.Transport.CHUNK, alice_at_her_limit, scenario)
    assert voice.details == chunk.details == LIVE_SESSION_LIMIT
    assert voice.message == chunk.message
    assert (voice.code, voice.close_code) == (ErrorCode.CONNECTION_FAILED, CloseCode.LIVE_SESSION_LIMIT)
    assert (chunk.code, chunk.close_code) == (ErrorCode.RATE_LIMIT, None)


def test_every_refusal_has_a_code_on_both_transports():
    for refusal_kind in gateway.Refusal:
        assert gateway.VOICE_ERRORS[refusal_kind].close_code is not None  # the voice socket closes
        assert gateway.CHUNK_ERRORS[refusal_kind].close_code is None  # the Socket.IO socket goes on


async def test_the_voice_consumer_closes_with_4429_at_the_limit(alice_at_her_limit, scenario):
    communicator, (accepted, _) = await open_ws(alice_at_her_limit, query=f"scenario={scenario.pk}")
    client = Client(communicator)
    error = await client.recv_type("error")
    assert error["error"] == ErrorCode.CONNECTION_FAILED and error["data"]["details"] == LIVE_SESSION_LIMIT
    assert await client.closed() == CloseCode.LIVE_SESSION_LIMIT


async def test_the_socketio_consumer_refuses_start_session_at_the_limit_and_goes_on(alice_at_her_limit, scenario):
    client = await open_sio(alice_at_her_limit)
    refused = await client.call("start-session", {"scenarioId": scenario.pk})
    assert refused["error"]["code"] == ErrorCode.RATE_LIMIT and refused["error"]["details"] == LIVE_SESSION_LIMIT
    await client.usable()
    await client.ws.disconnect()
    assert await sync_to_async(RealtimeSession.objects.filter(trainee=alice_at_her_limit).count)() == 1


@pytest.mark.parametrize("consumer", ["signaling/voice_consumer.py", "signaling/socketio_consumer.py"])
def test_a_consumer_reaches_roleplay_only_through_the_gateway(consumer):
    tree = ast.parse((ROOT / consumer).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {name for name in imported if name.split(".")[0] == "roleplay"}
