"""PostgreSQL unreachable for a few seconds: clear errors while it is gone, full recovery after.

A real server (``python -m lingecho.server``) on a database of its own, reached through a TCP proxy
that the test cuts (every open connection dropped, new ones refused) and restores. Skipped with a
reason when no PostgreSQL answers on 127.0.0.1:5432.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from urllib.parse import urlparse

import httpx
import pytest
import socketio
import websockets

from tests.chaos.proxy import ChaosProxy
from tests.signaling.socketio_live import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.scaled]

POSTGRES = os.environ.get("TEST_DATABASE_URL", "postgres://root@127.0.0.1:5432/test")


def _admin_connection():
    import psycopg

    return psycopg.connect(POSTGRES, autocommit=True, connect_timeout=2)


@pytest.fixture
def chaos_database():
    try:
        admin = _admin_connection()
    except Exception as exc:  # noqa: BLE001 - any failure means "no PostgreSQL here"
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES}: {type(exc).__name__}")
    name = f"lingecho_chaos_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def server_behind_proxy(chaos_database):
    target = urlparse(POSTGRES)
    proxy = ChaosProxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    user = target.username or "root"
    server = LiveServer(DATABASE_URL=f"postgres://{user}@127.0.0.1:{proxy.port}/{chaos_database}",
                        LINGECHO_DEMO_PASSWORD="chaos-demo-password").start()
    try:
        yield server, proxy
    finally:
        server.stop()


def _session_state(database: str, session_id: str) -> str:
    import psycopg

    target = urlparse(POSTGRES)
    with psycopg.connect(host=target.hostname, port=target.port or 5432, user=target.username or "root",
                         dbname=database, connect_timeout=2) as conn:
        return conn.execute("SELECT state FROM roleplay_realtimesession WHERE id = %s", (session_id,)).fetchone()[0]


def _scenarios(server: LiveServer, token: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/scenarios/", headers={"Authorization": f"Bearer {token}"}, timeout=15)


async def _start_session(client: socketio.AsyncClient, scenario: int, timeout: float = 15) -> dict:
    """start-session, answered either by session-started or by an error (both come as an ack too)."""
    return await client.call("start-session", {"sessionId": None, "scenarioId": scenario}, timeout=timeout)


async def test_it_gives_clear_errors_while_the_database_is_gone_and_recovers(server_behind_proxy, chaos_database):
    server, proxy = server_behind_proxy
    token = server.token("trainee")
    scenario = _scenarios(server, token).json()["results"][0]["id"]

    client = socketio.AsyncClient(reconnection=False)
    await client.connect(server.url, transports=["websocket"], auth={"token": token}, wait_timeout=15)
    first = await _start_session(client, scenario)
    assert first.get("sessionId"), first
    await client.call("end-session", {"sessionId": first["sessionId"]}, timeout=15)
    dropping = socketio.AsyncClient(reconnection=False)
    await dropping.connect(server.url, transports=["websocket"], auth={"token": token}, wait_timeout=15)
    live_session = await _start_session(dropping, scenario)
    assert live_session.get("sessionId"), live_session

    proxy.cut()
    try:
        began = time.monotonic()
        response = await asyncio.to_thread(_scenarios, server, token)
        assert time.monotonic() - began < 10, "the API hung on a dead database"
        assert response.status_code == 503, (response.status_code, response.text[:300])
        assert response.json()["error"]["code"] == "database_unavailable"
        assert "Retry-After" in response.headers

        page = await asyncio.to_thread(httpx.get, f"{server.url}/login/", timeout=15)
        assert page.status_code in (200, 503), page.status_code  # a page that needs no query may still render

        began = time.monotonic()
        refused = await _start_session(client, scenario)
        assert time.monotonic() - began < 10
        error = refused.get("error") or {}
        assert error.get("code") == "ERR_CONNECTION_FAILED", refused
        assert error.get("details", {}).get("retry_after"), refused
        assert client.connected, "a database outage must not cost the socket"

        # A new LingEcho handshake is refused as "try again", not as bad credentials.
        voice_url = f"ws://127.0.0.1:{server.port}/ws/voice/?scenario={scenario}&token={token}"
        async with websockets.connect(voice_url, open_timeout=10) as voice:
            refusal = json.loads(await asyncio.wait_for(voice.recv(), 10))
            assert refusal["data"]["details"]["reason"] == "database_unavailable", refusal
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(voice.recv(), 10)
            assert voice.close_code == 4503

        # A new Socket.IO CONNECT is answered with connect_error, database_unavailable.
        late = socketio.AsyncClient(reconnection=False)
        connect_errors: list = []
        late.on("connect_error", connect_errors.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await late.connect(server.url, transports=["websocket"], auth={"token": token}, wait_timeout=10)
        assert connect_errors and connect_errors[0]["data"]["code"] == "database_unavailable", connect_errors

        # A live session whose socket drops during the outage is marked dropped once the database is back.
        live_id = live_session["sessionId"]
        await dropping.disconnect()
        await asyncio.sleep(2)
    finally:
        proxy.restore()

    deadline = time.monotonic() + 20
    while True:
        response = await asyncio.to_thread(_scenarios, server, token)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert response.status_code == 200, response.text[:300]
    again = await _start_session(client, scenario)
    assert again.get("sessionId"), again
    await client.call("end-session", {"sessionId": again["sessionId"]}, timeout=15)
    await client.disconnect()
    deadline = time.monotonic() + 15
    while True:
        state = await asyncio.to_thread(_session_state, chaos_database, live_id)
        if state in ("dropped", "ended") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert state in ("dropped", "ended"), state
    log = server.log()
    # Requests and sockets failed cleanly (no 500, no crashed consumer). The after-call job of the
    # first session may log its own failed attempt: its retries and the sweeper finish it later.
    assert "Exception inside application" not in log, log[-3000:]
    assert "Internal Server Error" not in log, log[-3000:]
