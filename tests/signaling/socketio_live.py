"""Helpers for the chunk-fallback tests and bench: a live daphne server on a temp SQLite database,
a python-socketio client that queues what it receives, and MediaRecorder-like WebM/Opus pieces
made from test speech."""

from __future__ import annotations

import asyncio
import base64
import io
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import socketio

from media_pipeline.audio import resample
from tests.live_server import free_port, isolated_env, server_command

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
SECRET = "chunk-fallback-test-secret-key-0123456789-abcdefghijklmnop"


class LiveServer:
    """daphne serving lingecho.asgi with its own database, media folder and settings (env)."""

    def __init__(self, **env: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="lingecho-sio-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = self.dir / "db.sqlite3"
        self.env = {
            **isolated_env(self.dir),
            "SECRET_KEY": SECRET,
            "DEBUG": "0",
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "WARNING",
            **env,
        }
        self.proc: subprocess.Popen | None = None
        self._log = open(self.dir / "server.log", "wb")  # noqa: SIM115 - closed in stop()

    def manage(self, *args: str) -> str:
        out = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120
        )
        if out.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {out.stderr[-2000:]}")
        return out.stdout.strip()

    def start(self) -> LiveServer:
        self.manage("migrate", "--noinput")
        self.manage("create_demo_data")
        self.proc = subprocess.Popen(
            server_command(self.port),
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited: {self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("daphne did not come up")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    def log(self) -> str:
        return (self.dir / "server.log").read_text(errors="replace")

    def token(self, username: str = "trainee") -> str:
        return self.manage("issue_token", username).splitlines()[-1]

    def make_trainee(self, username: str) -> None:
        self.manage("shell", "-c", (
            "from roleplay.models import User\n"
            f"User.objects.get_or_create(username={username!r}, defaults={{'role': 'trainee'}})"
        ))

    def session_cookie(self, username: str = "trainee") -> str:
        """A Django session key for ``username``, as a logged-in browser would carry."""
        code = (
            "from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY\n"
            "from django.contrib.sessions.backends.db import SessionStore\n"
            "from roleplay.models import User\n"
            f"u = User.objects.get(username={username!r})\n"
            "s = SessionStore()\n"
            "s[SESSION_KEY] = str(u.pk)\n"
            "s[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'\n"
            "s[HASH_SESSION_KEY] = u.get_session_auth_hash()\n"
            "s.create()\n"
            "print(s.session_key)\n"
        )
        return self.manage("shell", "-c", code).splitlines()[-1]

    def scenario_id(self) -> int:
        return self.query("SELECT id FROM roleplay_scenario WHERE language = 'en' ORDER BY id LIMIT 1")[0][0]

    def query(self, sql: str, *params: object) -> list[tuple]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute(sql, params).fetchall()


def webm_opus(samples: np.ndarray, rate: int = 16000, *, bitrate: int = 32000) -> bytes:
    """One WebM/Opus file of ``samples`` as MediaRecorder writes it (live mode: unknown sizes)."""
    x48 = resample(samples, rate, 48000).astype(np.float32)
    out = io.BytesIO()
    container = av.open(out, "w", format="webm", options={"live": "1"})
    stream = container.add_stream("libopus", rate=48000, layout="mono")
    stream.bit_rate = bitrate
    step, pts = 960, 0
    for i in range(0, len(x48), step):
        piece = x48[i : i + step]
        if len(piece) < step:
            piece = np.pad(piece, (0, step - len(piece)))
        frame = av.AudioFrame.from_ndarray(piece.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate, frame.pts = 48000, pts
        pts += step
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    return out.getvalue()


def block_times(data: bytes) -> list[tuple[int, int]]:
    """(byte offset, time in ms) of every SimpleBlock of a WebM file (Clusters entered, the rest skipped)."""
    from media_pipeline.chunked.webm_stream import CLUSTER, SEGMENT, SIMPLE_BLOCK, _vint

    out, pos, cluster_ms = [], 0, 0
    while pos < len(data):
        ident, id_len = _vint(data, pos, keep_marker=True)
        size, size_len = _vint(data, pos + id_len, keep_marker=False)
        body = pos + id_len + size_len
        if ident in (SEGMENT, CLUSTER):
            pos = body
            continue
        if ident == 0xE7:  # cluster Timecode
            cluster_ms = int.from_bytes(data[body : body + size], "big")
        elif ident == SIMPLE_BLOCK:
            track_len = _vint(data, body, keep_marker=False)[1]
            relative = int.from_bytes(data[body + track_len : body + track_len + 2], "big", signed=True)
            out.append((pos, cluster_ms + relative))
        pos = body + size
    return out


def media_recorder_pieces(samples: np.ndarray, rate: int = 16000, *, piece_ms: int = 250) -> list[bytes]:
    """The WebM stream cut into ``piece_ms`` pieces of audio time, as MediaRecorder's timeslice does:
    the header goes with the first piece only, and each piece ends where the next slice's audio starts."""
    data = webm_opus(samples, rate)
    cuts, next_ms = [0], piece_ms
    for offset, ms in block_times(data):
        if ms >= next_ms:
            cuts.append(offset)
            next_ms = (ms // piece_ms + 1) * piece_ms
    cuts.append(len(data))
    return [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


class Client:
    """A python-socketio AsyncClient that queues every event it receives."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue[tuple[str, Any, float]] = asyncio.Queue()
        self.seen: list[tuple[str, Any]] = []
        self.connect_errors: list[Any] = []

        @self.sio.event
        async def connect_error(data: Any = None) -> None:
            self.connect_errors.append(data)

        @self.sio.on("*")
        async def _any(event: str, data: Any = None) -> None:
            self.seen.append((event, data))
            await self.events.put((event, data, time.monotonic()))

    async def connect(self, *, token: str | None = None, headers: dict[str, str] | None = None) -> Client:
        await self.sio.connect(
            self.server.url, transports=["websocket"], auth={"token": token} if token else None,
            headers=headers or {}, wait_timeout=10,
        )
        return self

    async def wait(self, name: str, timeout: float = 20.0) -> tuple[Any, float]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {name!r} within {timeout}s; seen {[e for e, _ in self.seen]}")
            try:
                event, data, at = await asyncio.wait_for(self.events.get(), remaining)
            except TimeoutError:
                continue
            if event == name:
                return data, at

    async def start(self, scenario_id: int | None = None, *, session_id: str | None = None,
                    audio_config: dict | None = None) -> dict:
        payload: dict[str, Any] = {"sessionId": session_id, "scenarioId": scenario_id}
        if audio_config:
            payload["audioConfig"] = audio_config
        await self.sio.emit("start-session", payload)
        started, _ = await self.wait("session-started")
        return started

    async def send(self, session_id: str, pieces: list[bytes], *, first: int = 0, pace: float = 0.0) -> None:
        for i, piece in enumerate(pieces, start=first):
            await self.sio.emit("audio-chunk", {
                "sessionId": session_id, "audioData": base64.b64encode(piece).decode(),
                "offset": i, "totalChunks": i + 1,
            })
            if pace:
                await asyncio.sleep(pace)

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
