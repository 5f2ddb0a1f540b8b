"""Fixtures for driving the media worker through an in-memory channel layer with real engines."""

from __future__ import annotations

import pytest

from roleplay import services
from roleplay.models import RealtimeSession
from tests.media_pipeline.voice_client import ContractPeer


@pytest.fixture
def call_session(transactional_db, alice, scenario) -> RealtimeSession:
    return services.session_create(trainee=alice, scenario=scenario, transport=RealtimeSession.Transport.WEBRTC)




@pytest.fixture
async def contract_peer(media_worker, call_session):
    peer = await ContractPeer(media_worker.layer, call_session.pk).start()
    yield peer
    await peer.stop()
