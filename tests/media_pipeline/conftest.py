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
def chunk_session(transactional_db, bob, scenario, monkeypatch) -> RealtimeSession:
    # After-call processing is another area's job and would outlive the test's database.
    monkeypatch.setattr(services, "_dispatch_post_session", lambda session_id: None)
    return services.session_create(trainee=bob, scenario=scenario, transport=RealtimeSession.Transport.CHUNK)




@pytest.fixture
async def contract_peer(media_worker, call_session):
    peer = await ContractPeer(media_worker.layer, call_session.pk).start()
    yield peer
    await peer.stop()
