"""A live stack for voice end-to-end tests and benches: daphne (+ optional ``runworker media``
processes on Redis) on a free port with its own SQLite file, and a LingEcho-protocol client that
carries a real aiortc peer (:class:`tests.media_pipeline.voice_client.VoiceClient`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import websockets

from tests.live_server import free_port, isolated_env, prepared_database, server_command
from tests.media_pipeline.voice_client import VoiceClient

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/1"


def redis_reachable(url: str = REDIS_URL) -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:  # noqa: BLE001 - any failure means "skip the scaled test"
        return False


class LiveStack:
    def __init__(self, tmp: Path, *, scaled: bool = False, redis_url: str = REDIS_URL) -> None:
        """``redis_url``: the Redis database a scaled stack uses (flushed at start); a bench passes a
        database of its own so it never crosses a test run's channels and heartbeats."""
        self.tmp = tmp
        self.scaled = scaled
        self.redis_url = redis_url
        self.env = {
            **isolated_env(tmp),
            "LOG_LEVEL": "WARNING",
            "MAX_LIVE_SESSIONS_PER_USER": "100",  # tests and benches reuse one trainee
        }
        if scaled:
            self.env.update({"REDIS_URL": redis_url, "MEDIA_WORKER_MODE": "external", "CELERY_TASK_ALWAYS_EAGER": "1"})
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = free_port()
        self.token = ""

    def manage(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip()

    def start(self) -> LiveStack:
        if self.scaled:
            import redis

            redis.Redis.from_url(self.redis_url).flushdb()
        self.prepare()
        self.spawn("daphne", server_command(self.port))
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                assert self.procs["daphne"].poll() is None, self.log("daphne")
                assert time.monotonic() < deadline, "daphne did not start"
                time.sleep(0.2)
        urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=10).read()  # starts embedded worker
        time.sleep(3)  # the worker loads ASR/VAD/TTS in the background: measure warm, as in production
        return self

    def prepare(self) -> None:
        """The stack's SQLite file migrated with the demo data, and a trainee token (a copy of this
        process's template: tests/live_server.py ``prepared_database``)."""
        self.token = prepared_database(self.env)

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self.procs[name]

    def start_worker(self, name: str) -> subprocess.Popen:
        return self.spawn(name, [sys.executable, "manage.py", "runworker", "media"])

    def wait_for_media_workers(self, count: int, timeout: float = 60.0) -> None:
        """Until /readyz counts ``count`` live media workers: each one's heartbeat is in the channel
        layer's cache, so an offer sent now can be pinned to it (``runworker media`` takes a few
        seconds to import and beat; a fixed sleep would either waste them or be too short)."""
        deadline = time.monotonic() + timeout
        live = -1
        while True:
            with contextlib.suppress(OSError, ValueError):
                request = urllib.request.Request(f"http://127.0.0.1:{self.port}/readyz")
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        live = json.load(response)["checks"]["media_worker"]["live"]
                except urllib.error.HTTPError as unavailable:  # 503 until a worker is live
                    live = json.load(unavailable)["checks"]["media_worker"]["live"]
            if live >= count:
                return
            assert time.monotonic() < deadline, f"{live} live media workers, not {count}, after {timeout} s"
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(timeout=10)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()[-3000:]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def api(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                         headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def scenario_id(self, slug: str | None = None) -> int:
        listing = self.api("/api/scenarios/")
        items = listing["results"] if isinstance(listing, dict) else listing
        return next(s["id"] for s in items if slug is None or s["slug"] == slug)


class WsPeer:
    """The LingEcho protocol over a real WebSocket, with the same ``expect`` as ContractPeer."""

    def __init__(self, stack: LiveStack, scenario: int) -> None:
        self.url = f"ws://127.0.0.1:{stack.port}/ws/voice/?scenario={scenario}&token={stack.token}"
        self.ws: Any = None
        self.session_id = ""
        self.events: list[dict[str, Any]] = []
        self._taken: set[int] = set()
        self._new = asyncio.Event()
        self._reader: asyncio.Task | None = None

    async def start(self) -> WsPeer:
        # The embedded server runs the previous call's after-call job in-process; its handshake can
        # stall for a few seconds meanwhile, so retry rather than fail on a busy server.
        for attempt in range(6):
            try:
                self.ws = await websockets.connect(self.url, max_size=2**22, open_timeout=20)
                break
            except (OSError, websockets.InvalidHandshake, websockets.InvalidMessage, TimeoutError):
                if attempt == 5:
                    raise
                await asyncio.sleep(2)
        init = json.loads(await self.ws.recv())
        assert init["type"] == "init", init
        self.session_id = init["session_id"]
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                if message["type"] == "ping":
                    await self.send("pong", {})
                    continue
                self.events.append({"type": message["type"], "data": message.get("data") or {}, "at": time.monotonic()})
                self._new.set()

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"type": kind, "session_id": self.session_id,
                                       "timestamp": int(time.time() * 1000), "data": data, "error": None}))

    async def expect(self, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for index, item in enumerate(self.events):
                if index not in self._taken and item["type"] == kind and all(
                    item["data"].get(k) == v for k, v in match.items()
                ):
                    self._taken.add(index)
                    return item
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                errors = [e["data"] for e in self.events if e["type"] == "error"]
                seen = [e["type"] for e in self.events]
                raise TimeoutError(f"no {kind} within {timeout}s; saw {seen}; errors {errors}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), min(remaining, 0.5))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("disconnect", {"reason": "user_requested"})
            await asyncio.sleep(0.3)
            await self.ws.close()
        if self._reader:
            self._reader.cancel()


async def ws_connect_media(peer: WsPeer, client: VoiceClient, *, trickle: bool = False) -> dict[str, Any]:
    offer, candidates = await client.offer(trickle=trickle)
    await peer.send("offer", offer)
    if trickle:
        for cand in candidates:
            await peer.send("ice_candidate", cand)
        await peer.send("ice_candidate", {"candidate": "", "sdp_mid": "0", "sdp_mline_index": 0})
    answer = await peer.expect("answer", timeout=15)
    await client.accept(answer["data"])
    connected = await peer.expect("connected", timeout=15)
    await peer.send("ready", {"direction": "both"})
    return connected["data"]
