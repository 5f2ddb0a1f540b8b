"""Graceful shutdown: SIGTERM ends every call (client told, session ended, recording stored) within
``SHUTDOWN_DRAIN_SECONDS`` and the server exits 0 (lingecho.server + signaling.shutdown).

The fast tests drive the drain in-process; the slow ones send SIGTERM to a real
``python -m lingecho.server`` mid-call (a real aiortc client on /ws/voice/, a real python-socketio
client on /socket.io/), restart it on the same SQLite file and read what the call left behind.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import signal
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import RefreshToken

from lingecho.asgi import application
from lingecho.server import SlicedSweepServer
from roleplay.models import RealtimeSession
from signaling import shutdown
from signaling.chunk_sessions import manager as chunk_manager
from signaling.protocol import CloseCode

DRAIN_SECONDS = 10.0  # the default SHUTDOWN_DRAIN_SECONDS


@pytest.fixture(autouse=True)
def _accepting_again():
    shutdown.reset()
    yield
    shutdown.reset()


class Call:
    """A registered call that takes ``seconds`` to end (forever when None)."""

    def __init__(self, seconds: float | None = 0.0) -> None:
        self.seconds = seconds
        self.ended_with: str | None = None
        self.cancelled = False
        shutdown.register(self)

    async def end_for_shutdown(self, reason: str) -> None:
        try:
            await asyncio.sleep(3600 if self.seconds is None else self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.ended_with = reason
        shutdown.unregister(self)  # its socket closed


class Sink:
    def __init__(self) -> None:
        self.closed_with: str | None = None

    async def audio(self, data: bytes) -> bool:
        return True

    async def idle(self) -> None:
        pass

    async def close(self, reason: str) -> None:
        self.closed_with = reason


# ---- the drain ----------------------------------------------------------------------------------


async def test_it_ends_every_registered_call_and_refuses_new_ones():
    calls = [Call(0.01), Call(0.05)]
    assert shutdown.accepting()
    report = await shutdown.drain(timeout=2)
    assert not shutdown.accepting()
    assert [c.ended_with for c in calls] == ["server_shutdown", "server_shutdown"]
    assert (report.calls, report.cancelled, report.sockets_open) == (2, 0, 0)
    assert report.after_call_done and report.seconds < 1


async def test_it_ends_chunk_sessions_nobody_is_attached_to_with_the_shutdown_reason():
    sink = Sink()
    chunk_manager.open(session_id="sess_detached", user_id=1, sink=sink, audio_config={})
    report = await shutdown.drain(timeout=2)
    assert sink.closed_with == "server_shutdown"
    assert report.detached_chunk_sessions == 1 and "sess_detached" not in chunk_manager.sessions


async def test_it_cancels_a_call_still_ending_at_the_deadline_and_returns_on_time():
    quick, stuck = Call(0.0), Call(None)
    started = time.monotonic()
    report = await shutdown.drain(timeout=0.5)
    assert time.monotonic() - started < 0.8
    assert quick.ended_with == "server_shutdown"
    await asyncio.sleep(0)  # the cancellation is delivered
    assert stuck.cancelled and report.cancelled == 1 and report.sockets_open == 1


async def test_a_call_that_ends_its_socket_late_is_waited_for_until_it_closes():
    class SlowSocket(Call):
        async def end_for_shutdown(self, reason: str) -> None:
            self.ended_with = reason
            asyncio.get_running_loop().call_later(0.2, shutdown.unregister, self)

    call = SlowSocket()
    started = time.monotonic()
    report = await shutdown.drain(timeout=3)
    assert call.ended_with == "server_shutdown" and report.sockets_open == 0
    assert 0.2 <= time.monotonic() - started < 1.0


def test_the_cancel_after_the_drain_skips_connections_whose_application_was_already_reaped():
    """daphne's own kill_all_applications raises KeyError on them (the sliced sweep reaps early)."""
    loop = asyncio.new_event_loop()
    try:
        srv = SlicedSweepServer(application=None, endpoints=["tcp:port=0"])
        running, finished = loop.create_future(), loop.create_future()
        finished.set_result(None)
        srv.connections = {"reaped": {"connected": 1.0}, "live": {"application_instance": running},
                           "done": {"application_instance": finished}}
        asyncio.set_event_loop(loop)
        srv._cancel_applications()
        assert running.cancelled() and not finished.cancelled()
    finally:
        asyncio.set_event_loop(None)
        loop.close()


# ---- the LingEcho consumer through the ASGI application ----------------------------------------


async def _voice_client(user, query: str) -> tuple[WebsocketCommunicator, list[dict[str, Any]]]:
    token = await sync_to_async(lambda: str(RefreshToken.for_user(user).access_token))()
    communicator = WebsocketCommunicator(application, f"/ws/voice/?{query}&token={token}")
    accepted, _ = await communicator.connect()
    assert accepted
    return communicator, []


async def _frames_until_close(communicator: WebsocketCommunicator) -> tuple[list[dict[str, Any]], int]:
    frames = []
    while True:
        output = await communicator.receive_output(5)
        if output["type"] == "websocket.close":
            await communicator.disconnect(code=output["code"])
            return frames, output["code"]
        frames.append(json.loads(output["text"]))


@pytest.mark.django_db(transaction=True)
async def test_a_live_voice_call_is_told_and_its_session_ended_and_new_calls_are_refused(alice, scenario, settings):
    settings.POSTPROCESS_EAGER_IN_BACKGROUND = False  # the in-memory test database is one connection's
    communicator, _ = await _voice_client(alice, f"scenario={scenario.pk}")
    init = json.loads((await communicator.receive_output(5))["text"])
    await communicator.receive_output(5)  # the buyer's opening line
    assert len(shutdown.live_calls()) == 1

    drained = asyncio.ensure_future(shutdown.drain(timeout=5))
    frames, code = await _frames_until_close(communicator)
    report = await drained
    assert [f["type"] for f in frames] == ["disconnect"] and frames[0]["data"] == {"reason": "server_shutdown"}
    assert code == CloseCode.GOING_AWAY and report.sockets_open == 0
    row = await sync_to_async(RealtimeSession.objects.get)(pk=init["session_id"])
    assert (row.state, row.end_reason) == ("ended", "server_shutdown")

    late, _ = await _voice_client(alice, f"scenario={scenario.pk}")
    frames, code = await _frames_until_close(late)
    assert frames[0]["error"] == "ERR_CONNECTION_FAILED"
    assert frames[0]["data"]["details"] == {"reason": "server_shutdown", "retry_after": shutdown.RETRY_AFTER_MS}
    assert code == CloseCode.GOING_AWAY
    assert await sync_to_async(RealtimeSession.objects.count)() == 1  # no session for the refused call


# ---- live: SIGTERM to python -m lingecho.server mid-call -----------------------------------------


def _session_row(db: Path, session_id: str) -> dict[str, Any]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM roleplay_realtimesession WHERE id = ?", (session_id,)).fetchone())
        row["speakers"] = [r[0] for r in conn.execute(
            "SELECT speaker FROM roleplay_utterance WHERE session_id = ? ORDER BY seq", (session_id,))]
    return row


def _drain_summary(log: str) -> str:
    """The server's own account of the drain, e.g. "1 calls, …, 0.71 s" (asserted to exist)."""
    found = re.findall(r"shutdown drain finished: (.*, [0-9.]+ s)$", log, re.MULTILINE)
    assert found, log[-3000:]
    return found[-1]


def _port_closed(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def _answers(port: int) -> bool:
    """Whether the server answers HTTP (its reactor runs, so its signal handlers are installed)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _wait_until_processed(db: Path, session_id: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = _session_row(db, session_id)
        if row["processing"] == "done" or time.monotonic() > deadline:
            return row
        time.sleep(0.5)


async def _mid_call(stack: Any) -> tuple[Any, Any]:
    """A WebRTC call on ``stack`` with one voice turn done and the trainee talking again."""
    from tests.audio_fixtures import silence, speak
    from tests.media_pipeline.live import WsPeer, ws_connect_media
    from tests.media_pipeline.voice_client import VoiceClient

    peer = await WsPeer(stack, stack.scenario_id()).start()
    client = VoiceClient("opus")
    await ws_connect_media(peer, client)
    await peer.send("asr_start", {"language": "en-US", "format": "opus", "sample_rate": client.track.rate,
                                  "mode": "auto"})
    client.track.play(speak("Hello, I would like to tell you about our new software.", rate=client.track.rate))
    client.track.play(silence(1200, client.track.rate))
    await peer.expect("asr_result", timeout=30)
    await peer.expect("tts_complete", timeout=30)
    client.track.play(speak("How many invoices do you reconcile every month?", rate=client.track.rate))
    await asyncio.sleep(1.0)
    return peer, client


@pytest.mark.slow
@pytest.mark.parametrize("drain", [DRAIN_SECONDS, 1.5], ids=["default-drain", "drain-shorter-than-the-after-call-job"])
async def test_sigterm_mid_webrtc_call_ends_it_stores_the_recording_and_exits_in_time(tmp_path, drain):
    """With the default drain the after-call job finishes before the exit; with a short one the
    process still exits on time and the restarted server's start-up processes the session."""
    from tests.live_server import server_command
    from tests.media_pipeline.live import LiveStack

    stack = LiveStack(tmp_path)
    stack.env.update(LOG_LEVEL="INFO", SHUTDOWN_DRAIN_SECONDS=str(drain))
    stack.start()
    db = tmp_path / "db.sqlite3"
    try:
        peer, client = await _mid_call(stack)
        signalled = time.monotonic()
        stack.procs["daphne"].send_signal(signal.SIGTERM)
        told = await peer.expect("disconnect", timeout=drain)
        assert told["data"] == {"reason": "server_shutdown"}
        assert _port_closed(stack.port)  # no new connections while draining
        code = await asyncio.to_thread(stack.procs["daphne"].wait, drain + 5)
        exited = time.monotonic() - signalled
        log = stack.log("daphne")
        assert code == 0 and exited < drain, (code, exited, log)
        await asyncio.sleep(0.2)
        assert peer.ws.close_code == CloseCode.GOING_AWAY
        print(f"\nwebrtc, SHUTDOWN_DRAIN_SECONDS={drain}: drain {_drain_summary(log)}; SIGTERM to exit {exited:.2f} s")
        await client.close()

        row = _session_row(db, peer.session_id)
        assert (row["state"], row["end_reason"]) == ("ended", "server_shutdown")
        assert row["speakers"][:3] == ["buyer", "trainee", "buyer"]
        assert row["recording"] and (tmp_path / "media" / row["recording"]).stat().st_size > 2000

        stack.spawn("daphne", server_command(stack.port))  # restart on the same SQLite file
        row = await asyncio.to_thread(_wait_until_processed, db, peer.session_id)
        assert row["processing"] == "done", row
        assert row["recording"] and (tmp_path / "media" / row["recording"]).exists()
        assert (row["state"], row["end_reason"]) == ("ended", "server_shutdown")
    finally:
        stack.stop()


@pytest.mark.slow
@pytest.mark.scaled
async def test_sigterm_to_a_scaled_server_hangs_up_the_pinned_worker_which_stores_the_recording(tmp_path):
    """Scaled: the media worker is another process (its own SIGTERM is its own drain); the server
    tells its client, ends the session and sends the pinned worker its hang-up."""
    from tests.media_pipeline.live import LiveStack, redis_reachable

    if not redis_reachable():
        pytest.skip("Redis at 127.0.0.1:6379 is not reachable")
    stack = LiveStack(tmp_path, scaled=True)
    stack.env["LOG_LEVEL"] = "INFO"
    stack.start()
    try:
        stack.start_worker("worker")
        await asyncio.to_thread(stack.wait_for_media_workers, 1)
        peer, client = await _mid_call(stack)
        signalled = time.monotonic()
        stack.procs["daphne"].send_signal(signal.SIGTERM)
        assert (await peer.expect("disconnect", timeout=DRAIN_SECONDS))["data"] == {"reason": "server_shutdown"}
        code = await asyncio.to_thread(stack.procs["daphne"].wait, DRAIN_SECONDS + 5)
        exited = time.monotonic() - signalled
        assert code == 0 and exited < DRAIN_SECONDS, (code, exited, stack.log("daphne"))
        print(f"\nscaled: drain {_drain_summary(stack.log('daphne'))}; SIGTERM to exit {exited:.2f} s")
        await client.close()
        row: dict[str, Any] = {}
        for _ in range(100):
            row = _session_row(tmp_path / "db.sqlite3", peer.session_id)
            if row["recording"]:
                break
            await asyncio.sleep(0.1)
        assert (row["state"], row["end_reason"]) == ("ended", "server_shutdown")
        assert row["speakers"][:3] == ["buyer", "trainee", "buyer"]
        assert row["recording"] and (tmp_path / "media" / row["recording"]).exists(), stack.log("worker")
        assert stack.procs["worker"].poll() is None  # the worker lives on for the other servers' calls
    finally:
        stack.stop()


@pytest.mark.slow
def test_sigint_stops_an_idle_server_through_the_same_drain(tmp_path):
    import subprocess
    import sys

    from tests.live_server import free_port, isolated_env, server_command

    env = {**isolated_env(tmp_path), "LOG_LEVEL": "INFO"}
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=root, env=env, check=True,
                   capture_output=True, timeout=120)
    port = free_port()
    with open(tmp_path / "server.log", "w") as log:
        # SIGINT as a terminal delivers it: a suite started in the background (`make test &`, some CI
        # runners) ignores SIGINT, children inherit that, and Python then installs no handler for it.
        proc = subprocess.Popen(server_command(port), cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            # An answered request, not an open port: the port listens before the reactor runs and
            # installs its signal handlers, and a SIGINT in between is lost (the server never stops).
            deadline = time.monotonic() + 30
            while not _answers(port):
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            # Right after the boot the engines are still warming up: exiting then aborted (-6).
            assert proc.wait(timeout=DRAIN_SECONDS) == 0, (tmp_path / "server.log").read_text()[-2000:]
        finally:
            if proc.poll() is None:  # a failed assertion must not leave the server running
                proc.kill()
                proc.wait()
    summary = _drain_summary((tmp_path / "server.log").read_text())
    assert summary.startswith("0 calls") and "after-call jobs done" in summary


@pytest.mark.slow
async def test_sigterm_mid_socketio_session_says_session_ended_and_keeps_its_turns(speech_pieces):
    import socketio

    from tests.signaling.socketio_live import LiveServer

    server = LiveServer(LOG_LEVEL="INFO", MAX_LIVE_SESSIONS_PER_USER="50").start()
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    sio = socketio.AsyncClient(reconnection=False)

    @sio.on("*")
    async def _any(event: str, data: Any = None) -> None:
        await events.put((event, data))

    async def wait(name: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            event, data = await asyncio.wait_for(events.get(), max(0.01, deadline - time.monotonic()))
            if event == name:
                return data

    try:
        await sio.connect(server.url, transports=["websocket"], auth={"token": server.token()}, wait_timeout=10)
        await sio.emit("start-session", {"scenarioId": server.scenario_id()})
        sid = (await wait("session-started"))["sessionId"]
        await wait("ai-response")  # the opening line
        for offset, piece in enumerate(speech_pieces):
            await sio.emit("audio-chunk", {"sessionId": sid, "audioData": base64.b64encode(piece).decode(),
                                           "offset": offset})
            await asyncio.sleep(0.05)
        await wait("transcription", timeout=60)
        await wait("avatar-response")  # the reply is persisted once spoken
        # Mid-utterance: the first half of the phrase again, then the deploy.
        half = speech_pieces[: len(speech_pieces) // 2]
        for offset, piece in enumerate(half, start=len(speech_pieces)):
            await sio.emit("audio-chunk", {"sessionId": sid, "audioData": base64.b64encode(piece).decode(),
                                           "offset": offset})

        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        ended = await wait("session-ended", timeout=DRAIN_SECONDS)
        assert ended["reason"] == "server_shutdown" and ended["totalTurns"] == 1 and ended["duration"] > 0
        code = await asyncio.to_thread(server.proc.wait, DRAIN_SECONDS + 5)
        exited = time.monotonic() - signalled
        assert code == 0 and exited < DRAIN_SECONDS, (code, exited, server.log()[-3000:])
        for _ in range(20):
            if not sio.connected:
                break
            await asyncio.sleep(0.1)
        assert not sio.connected
        print(f"\nsocket.io: drain {_drain_summary(server.log())}; SIGTERM to exit {exited:.2f} s")

        row = _session_row(server.db, sid)
        assert (row["state"], row["end_reason"], row["turn_count"]) == ("ended", "server_shutdown", 1)
        assert row["speakers"][:3] == ["buyer", "trainee", "buyer"]
        assert row["recording"] and (server.dir / "media" / row["recording"]).stat().st_size > 1000

        server.start()  # restart on the same SQLite file
        row = await asyncio.to_thread(_wait_until_processed, server.db, sid)
        assert row["processing"] == "done", row
        assert row["recording"] and (server.dir / "media" / row["recording"]).exists()
    finally:
        if sio.connected:
            await sio.disconnect()
        server.stop()


@pytest.fixture
def speech_pieces() -> list[bytes]:
    import numpy as np

    from tests.audio_fixtures import silence, speak
    from tests.signaling.socketio_live import media_recorder_pieces

    samples = np.concatenate([speak("Our finance team spends days on invoices every month."), silence(1500)])
    return media_recorder_pieces(samples)
