"""The stock JavaScript socket.io-client (from npm, under Node.js) drives a whole chunked session.

The client is installed once into a cache folder by the test set-up; without node/npm or the
npm registry the test skips with a one-line reason.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.audio_fixtures import silence, speak
from tests.signaling.socketio_live import LiveServer, media_recorder_pieces

pytestmark = pytest.mark.slow

CLIENT_VERSION = "4"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lingecho-test-node"

SCRIPT = r"""
const { io } = require("socket.io-client");
const fs = require("fs");
const [url, token, scenarioId, piecesFile] = process.argv.slice(2);
const pieces = JSON.parse(fs.readFileSync(piecesFile, "utf8"));
const seen = [];
const socket = io(url, { transports: ["websocket"], auth: { token }, reconnection: false });
const done = (code) => { console.log(JSON.stringify(seen)); socket.close(); process.exit(code); };
setTimeout(() => done(2), 90000);
socket.on("connect_error", (err) => { seen.push(["connect_error", err.message]); done(1); });
socket.onAny((event, data) => seen.push([event, data]));
socket.on("connect", () => socket.emit("start-session", { sessionId: null, scenarioId: Number(scenarioId) }));
socket.on("session-started", async (d) => {
  for (let i = 0; i < pieces.length; i++) {
    socket.emit("audio-chunk", { sessionId: d.sessionId, audioData: pieces[i], offset: i, totalChunks: i + 1 });
    await new Promise((r) => setTimeout(r, 20));
  }
});
socket.on("avatar-response", () => {
  const replies = seen.filter(([e]) => e === "avatar-response").length;
  if (replies === 2) {
    socket.emit("end-session", { sessionId: seen.find(([e]) => e === "session-started")[1].sessionId }, (ack) => {
      seen.push(["end-ack", ack]);
    });
  }
});
socket.on("session-ended", () => setTimeout(() => done(0), 100));
"""


def node_client_dir() -> Path:
    """socket.io-client installed with npm into the cache (once); skips when that is impossible."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node/npm not installed")
    target = CACHE / f"socket.io-client-{CLIENT_VERSION}"
    if (target / "node_modules" / "socket.io-client" / "package.json").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    (target / "package.json").write_text(json.dumps({"name": "lingecho-sio-test", "private": True}))
    try:
        out = subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent", f"socket.io-client@{CLIENT_VERSION}"],
            cwd=target, capture_output=True, text=True, timeout=180,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("npm registry unreachable (npm install timed out)")
    if out.returncode:
        pytest.skip(f"npm install socket.io-client failed: {(out.stderr or out.stdout).strip().splitlines()[-1:]}")
    return target


@pytest.fixture(scope="module")
def server():
    live = LiveServer().start()
    yield live
    live.stop()


def test_the_stock_javascript_client_runs_a_whole_session(server, tmp_path):
    client_dir = node_client_dir()
    speech = np.concatenate([speak("How much time does your finance team spend on invoices?"), silence(1200)])
    pieces = [base64.b64encode(p).decode() for p in media_recorder_pieces(speech)]
    (tmp_path / "pieces.json").write_text(json.dumps(pieces))
    (tmp_path / "client.js").write_text(SCRIPT)
    out = subprocess.run(
        ["node", str(tmp_path / "client.js"), server.url, server.token(), str(server.scenario_id()),
         str(tmp_path / "pieces.json")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "NODE_PATH": str(client_dir / "node_modules")},
    )
    assert out.returncode == 0, (out.stdout[-2000:], out.stderr[-2000:])
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    names = [name for name, _ in seen]
    assert names[0] == "session-started"
    assert names.count("audio-received") == len(pieces)
    heard = next(data for name, data in seen if name == "transcription")
    assert "finance" in heard["text"].lower() and "invoic" in heard["text"].lower()
    replies = [data for name, data in seen if name == "ai-response"]
    assert [r["turnCount"] for r in replies] == [0, 1]
    avatars = [data for name, data in seen if name == "avatar-response"]
    assert all(a["audioUrl"].startswith("/media/sessions/") for a in avatars)
    ended = next(data for name, data in seen if name == "session-ended")
    assert ended["reason"] == "user_requested" and ended["totalTurns"] == 1
    assert next(data for name, data in seen if name == "end-ack")["sessionId"]
