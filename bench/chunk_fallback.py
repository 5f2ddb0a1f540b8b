"""Load test of the audio-chunk fallback: N concurrent python-socketio clients stream 250 ms
MediaRecorder-style WebM/Opus pieces in real time to a live daphne.

Run: ``.venv/bin/python bench/chunk_fallback.py [--clients 100] [--seconds 30]``. Starts its own
server on a temp SQLite database unless ``--url`` and ``--token`` are given. Each client speaks
one utterance at a staggered moment (so ASR load is spread the way real calls spread it) and
sends silence the rest of the time. Prints:

- chunk-to-ack: ``audio-chunk`` emitted → its ``audio-received`` back (p50/p99/max);
- end-of-speech-to-``ai-response``: the piece holding the end of the utterance was sent → the
  buyer's reply text arrived (p50/p95), which includes the VAD's end-of-turn silence.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lingecho.settings")

import numpy as np  # noqa: E402
import socketio  # noqa: E402

from tests.audio_fixtures import silence, speak  # noqa: E402
from tests.signaling.socketio_live import LiveServer, media_recorder_pieces  # noqa: E402

PIECE_MS = 250
SENTENCE = "Hello, how much time does your finance team spend on invoices every month?"


@dataclass
class Script:
    pieces: list[bytes]
    speech_end_piece: int  # index of the piece that carries the end of the utterance


@dataclass
class Stats:
    acks_ms: list[float] = field(default_factory=list)
    reply_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed_clients: int = 0


def make_scripts(seconds: float, variants: int) -> list[Script]:
    """WebM streams of ``seconds``: silence, one utterance at a varying moment, silence."""
    speech = speak(SENTENCE)
    total = int(seconds * 16000)
    scripts = []
    for k in range(variants):
        lead_s = 1.0 + (seconds - len(speech) / 16000 - 4.0) * k / max(1, variants - 1)
        lead = silence(int(max(0.5, lead_s) * 1000))
        audio = np.concatenate([lead, speech, silence(max(0, int((total - len(lead) - len(speech)) / 16)))])
        pieces = media_recorder_pieces(audio, piece_ms=PIECE_MS)
        end_piece = int((len(lead) + len(speech)) / 16000 * 1000 / PIECE_MS)
        scripts.append(Script(pieces, min(end_piece, len(pieces) - 1)))
    return scripts


async def run_client(url: str, token: str, scenario: int, script: Script, stats: Stats, delay: float) -> None:
    await asyncio.sleep(delay)
    sio = socketio.AsyncClient(reconnection=False)
    sent: dict[int, float] = {}
    started = asyncio.Event()
    session: dict[str, str] = {}
    end_sent: list[float] = []

    @sio.on("session-started")
    async def _started(data: dict) -> None:
        session["id"] = data["sessionId"]
        started.set()

    @sio.on("audio-received")
    async def _ack(data: dict) -> None:
        at = sent.pop(data.get("offset"), None)
        if at is not None and not data.get("duplicate"):
            stats.acks_ms.append((time.perf_counter() - at) * 1000)

    @sio.on("ai-response")
    async def _reply(data: dict) -> None:
        if data.get("turnCount", 0) >= 1 and end_sent:
            stats.reply_ms.append((time.perf_counter() - end_sent[0]) * 1000)

    @sio.on("error")
    async def _error(data: dict) -> None:
        stats.errors.append(str(data.get("code")))

    try:
        await sio.connect(url, transports=["websocket"], auth={"token": token}, wait_timeout=30)
        await sio.emit("start-session", {"sessionId": None, "scenarioId": scenario})
        await asyncio.wait_for(started.wait(), 30)
        t0 = time.perf_counter()
        for i, piece in enumerate(script.pieces):
            # Real time: piece i leaves when the recorder would hand it out, not when the last one was acked.
            await asyncio.sleep(max(0.0, t0 + (i + 1) * PIECE_MS / 1000 - time.perf_counter()))
            sent[i] = time.perf_counter()
            if i == script.speech_end_piece:
                end_sent.append(sent[i])
            await sio.emit("audio-chunk", {
                "sessionId": session["id"], "audioData": base64.b64encode(piece).decode(), "offset": i,
                "totalChunks": i + 1,
            })
        await asyncio.sleep(10.0)  # let the last replies land (ASR queues under load)
        await sio.call("end-session", {"sessionId": session["id"]}, timeout=30)
    except Exception as exc:  # noqa: BLE001 - count it, keep the other clients going
        stats.failed_clients += 1
        stats.errors.append(type(exc).__name__)
    finally:
        if sio.connected:
            await sio.disconnect()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def bench(args: argparse.Namespace) -> None:
    server = None
    if args.url:
        url, token, scenario = args.url, args.token, args.scenario
    else:
        extra = dict(pair.split("=", 1) for pair in args.server_env)
        server = LiveServer(MAX_LIVE_SESSIONS_PER_USER=str(args.clients * 2 + 10), **extra).start()
        print(f"server log: {server.dir / 'server.log'}")
        url, token, scenario = server.url, server.token("trainee"), server.scenario_id()
    try:
        scripts = make_scripts(args.seconds, variants=10)
        stats = Stats()
        rng = random.Random(1)
        began = time.perf_counter()
        await asyncio.gather(*[
            run_client(url, token, scenario, scripts[i % len(scripts)], stats, delay=rng.uniform(0, args.ramp))
            for i in range(args.clients)
        ])
        took = time.perf_counter() - began
    finally:
        if server is not None:
            server.stop()
    print(f"chunk fallback: {args.clients} clients x {args.seconds:.0f}s of 250 ms chunks in real time ({took:.0f}s)")
    print(f"  chunks acked: {len(stats.acks_ms)}; failed clients: {stats.failed_clients}; "
          f"errors: {dict(sorted({e: stats.errors.count(e) for e in stats.errors}.items()))}")
    print(f"  chunk-to-ack ms: p50 {pct(stats.acks_ms, 50):.1f}  p99 {pct(stats.acks_ms, 99):.1f}  "
          f"max {max(stats.acks_ms, default=float('nan')):.1f}")
    print(f"  end-of-speech-to-ai-response ms ({len(stats.reply_ms)} turns): p50 {pct(stats.reply_ms, 50):.0f}  "
          f"p95 {pct(stats.reply_ms, 95):.0f}")
    if stats.reply_ms:
        silence_ms = os.environ.get("ENDPOINT_SILENCE_MS", 400)
        print(f"  (mean {statistics.mean(stats.reply_ms):.0f}; includes the {silence_ms} ms end-of-turn silence"
              " and up to one 250 ms piece)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=5.0, help="spread the connects over this many seconds")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the server it starts (e.g. PYTHONASYNCIODEBUG=1)")
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--scenario", type=int, default=1)
    args = parser.parse_args()
    if args.url and not args.token:
        parser.error("--url needs --token")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
