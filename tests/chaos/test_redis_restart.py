"""Redis restarted mid-call: every call ends or continues cleanly, nothing hangs, new calls work.

The scaled topology (server + ``runworker media`` on a Redis channel layer) on a private
``redis-server`` that the test kills and starts again on the same port, as a Redis restart or
failover looks to the application. Skipped with a reason when ``redis-server`` is not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.audio_fixtures import silence, speak
from tests.live_server import free_port
from tests.media_pipeline.live import LiveStack, WsPeer, ws_connect_media
from tests.media_pipeline.voice_client import VoiceClient

pytestmark = [pytest.mark.slow, pytest.mark.scaled]

PHRASE = "Hello, I would like to tell you about our new software."


class PrivateRedis:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.3).ping()
                return self
            except redis.RedisError:
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    server = PrivateRedis(tmp_path).start()
    yield server
    server.kill()


def wait_for_media_worker(port: int, timeout: float = 60) -> None:
    """/readyz turns 200 once a media worker's heartbeat is seen (it loads its models first)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        assert time.monotonic() < deadline, "no media worker became ready"
        time.sleep(0.5)


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return response.status


async def turn(peer: WsPeer, client: VoiceClient, codec: str) -> None:
    await peer.send("asr_start", {"language": "en-US", "format": codec, "sample_rate": client.track.rate,
                                  "mode": "auto"})
    client.track.play(speak(PHRASE, rate=client.track.rate))
    client.track.play(silence(1200, client.track.rate))
    await peer.expect("asr_result", timeout=30)
    await peer.expect("tts_complete", timeout=30)


async def outcome_after_restart(peer: WsPeer, timeout: float) -> str:
    """``ended`` (told, then closed) or ``continues`` (answers a ping); anything else is a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer.ws.close_code is not None:
            told = peer.of_type("disconnect") or peer.of_type("error")
            return "ended" if told else "closed_silently"
        with contextlib.suppress(Exception):
            await peer.send("ping", {})
            await peer.expect("pong", timeout=2)
            return "continues"
        await asyncio.sleep(0.5)
    return "hang"


async def test_a_redis_restart_mid_call_ends_or_continues_every_call_cleanly(tmp_path, redis_server):
    stack = LiveStack(tmp_path)
    stack.env.update({"REDIS_URL": redis_server.url, "MEDIA_WORKER_MODE": "external",
                      "CELERY_TASK_ALWAYS_EAGER": "1"})
    stack.start()
    try:
        stack.start_worker("worker")
        await asyncio.to_thread(wait_for_media_worker, stack.port)
        peers = []
        for _ in range(2):
            peer = await WsPeer(stack, stack.scenario_id()).start()
            client = VoiceClient("opus")
            await ws_connect_media(peer, client)
            peers.append((peer, client))
        await turn(*peers[0], "opus")

        redis_server.kill()
        await asyncio.sleep(2)
        assert healthz(stack.port) == 200, "the server stopped answering while Redis was down"
        redis_server.start()

        outcomes = await asyncio.gather(*(outcome_after_restart(peer, 40) for peer, _ in peers))
        assert set(outcomes) <= {"ended", "continues"}, (outcomes, (tmp_path / "daphne.log").read_text()[-12000:])
        for (peer, client), outcome in zip(peers, outcomes, strict=True):
            if outcome == "continues":
                # A continuing call either still has its media or is told to re-offer (ERR_WEBRTC_FAILED).
                await peer.close()
            await client.close()
        assert stack.procs["daphne"].poll() is None, stack.log("daphne")

        # Recovery: once the worker's heartbeat is back in the new Redis (/readyz), a new call
        # connects and is answered.
        await asyncio.to_thread(wait_for_media_worker, stack.port, 30)
        peer = await WsPeer(stack, stack.scenario_id()).start()
        client = VoiceClient("opus")
        try:
            await ws_connect_media(peer, client)
            await turn(peer, client, "opus")
        finally:
            await peer.close()
            await client.close()
    finally:
        stack.stop()
    assert "Exception inside application" not in stack.log("daphne"), stack.log("daphne")
