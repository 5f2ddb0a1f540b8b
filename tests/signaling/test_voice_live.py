"""A live daphne and an independent client (the ``websockets`` package): a 6-turn typed
conversation with the scripted buyer, checked against what the REST API says was persisted.

The server runs as a subprocess on a free port with its own SQLite file, migrated and loaded with
the demo data, exactly as ``make run`` would serve it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from signaling.protocol import CloseCode, validate_server_message
from tests.live_server import free_port, isolated_env, server_command

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TURNS = [
    "Hi Margaret, thanks for taking the call. How do you reconcile freight invoices today?",
    "How many people spend time on that each month?",
    "What happened with the overbilling error you mentioned?",
    "We automate invoice matching; customers usually see payback within a quarter.",
    "What would you need to see to be confident it works for Northwind?",
    "Could we book thirty minutes next week with your controller to walk through the numbers?",
]


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("live-voice")
    env = isolated_env(tmp)
    _manage(env, "migrate", "--noinput")
    _manage(env, "create_demo_data")
    token = _manage(env, "issue_token", "trainee").splitlines()[-1]
    port = free_port()
    log = open(tmp / "daphne.log", "w")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(
        server_command(port),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert proc.poll() is None, (tmp / "daphne.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "daphne did not start"
                time.sleep(0.2)
        yield {"base": f"127.0.0.1:{port}", "token": token, "log": str(tmp / "daphne.log")}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _api(server: dict[str, str], path: str) -> object:
    request = urllib.request.Request(
        f"http://{server['base']}{path}", headers={"Authorization": f"Bearer {server['token']}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _scenario_id(server: dict[str, str], slug: str) -> int:
    listing = _api(server, "/api/scenarios/")
    items = listing["results"] if isinstance(listing, dict) else listing
    return next(s["id"] for s in items if s["slug"] == slug)


async def _recv(ws) -> dict:
    """The next non-ping message, schema-checked."""
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert validate_server_message(message) == {}, message
        if message["type"] != "ping":
            return message


def test_a_six_turn_text_conversation_over_a_live_daphne(server):
    scenario = _scenario_id(server, "cost-focused-cfo")
    url = f"ws://{server['base']}/ws/voice/?scenario={scenario}&token={server['token']}"

    async def talk() -> tuple[str, list[str]]:
        async with websockets.connect(url) as ws:
            init = await _recv(ws)
            assert init["type"] == "init" and init["data"]["resumed"] is False
            sid = init["session_id"]
            opening = await _recv(ws)
            assert opening["type"] == "text_response" and opening["data"]["message_id"] is None
            replies = [opening["data"]["text"]]
            for n, text in enumerate(TURNS, start=1):
                frame = {
                    "type": "text_message",
                    "session_id": sid,
                    "timestamp": int(time.time() * 1000),
                    "data": {"message_id": f"msg_{n:03d}", "text": text, "language": "en"},
                    "error": None,
                }
                await ws.send(json.dumps(frame))
                reply = await _recv(ws)
                assert reply["type"] == "text_response", reply
                assert reply["data"]["message_id"] == f"msg_{n:03d}" and reply["data"]["text"]
                replies.append(reply["data"]["text"])
            await ws.send(json.dumps({"type": "disconnect", "session_id": sid, "data": {"reason": "user_requested"}}))
            assert (await _recv(ws))["data"] == {"reason": "user_requested"}
            await ws.wait_closed()
            assert ws.close_code == CloseCode.NORMAL
            return sid, replies

    sid, replies = asyncio.run(talk())
    detail = _api(server, f"/api/sessions/{sid}/")
    rows = detail["utterances"]
    assert [u["speaker"] for u in rows] == ["buyer"] + ["trainee", "buyer"] * 6
    assert [u["text"] for u in rows if u["speaker"] == "trainee"] == TURNS
    assert [u["text"] for u in rows if u["speaker"] == "buyer"] == replies
    assert len(set(replies)) == len(replies)  # the scripted buyer varies its wording
    assert detail["state"] == "ended" and detail["end_reason"] == "user_requested"
    assert server["token"] not in Path(server["log"]).read_text()


def test_live_refusals_and_the_size_limit(server):
    scenario = _scenario_id(server, "cost-focused-cfo")
    base = f"ws://{server['base']}/ws/voice/?scenario={scenario}"

    async def probe() -> None:
        with pytest.raises(websockets.exceptions.InvalidStatus) as anonymous:
            await websockets.connect(base)
        assert anonymous.value.response.status_code == 403
        with pytest.raises(websockets.exceptions.InvalidStatus) as foreign:
            await websockets.connect(f"{base}&token={server['token']}", origin="https://evil.example")
        assert foreign.value.response.status_code == 403
        async with websockets.connect(f"{base}&token={server['token']}", max_size=None) as ws:
            init = await _recv(ws)
            await _recv(ws)  # opening line
            await ws.send("x" * (64 * 1024 + 1))
            error = await _recv(ws)
            assert error["error"] == "ERR_INVALID_MESSAGE" and error["data"]["details"]["reason"] == "too_large"
            assert (await _recv(ws))["type"] == "disconnect"
            await ws.wait_closed()
            assert ws.close_code == CloseCode.TOO_BIG and init["session_id"]

    asyncio.run(probe())
