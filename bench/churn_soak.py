"""Churn soak: many short calls that connect, talk and drop, then check that nothing was left behind.

``--cycles`` (default 200) calls against one embedded server (``python -m lingecho.server`` on its
own SQLite file), ``--parallel`` at a time, mixed:

- WebRTC over the LingEcho protocol (real aiortc client): connect, offer, speak a phrase, then
  either hang up properly, drop the socket while the buyer answers, or drop mid-utterance;
- Socket.IO fallback (real python-socketio client): start a session, send MediaRecorder WebM
  pieces in real time, then end the session, or disconnect mid-utterance.

The server runs with a short resume window so dropped sessions expire during the soak's cool-down.
Before the first call (warm) and after the cool-down it reads the server's RSS (``/proc``) and its
``/metrics``: asyncio tasks on the server loop, open peer connections, ``lingecho_active_calls``,
chunk sessions. It prints each figure before/after, the sessions still live in the database, and
the RSS growth. A healthy server comes back to its baseline on every count; RSS may grow a little
(allocator high-water marks, caches) and is reported, not judged.

Run: ``.venv/bin/python bench/churn_soak.py [--cycles 200] [--parallel 6] [--resume-seconds 5]``
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import random
import re
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

METRICS = ("lingecho_event_loop_tasks", "lingecho_peer_connections", "lingecho_active_calls",
           "lingecho_chunk_sessions")
PHRASES = [
    "Hello, I would like to tell you about our new software.",
    "How do you handle your invoices today?",
    "What would it take to get a pilot started?",
]


def rss_mb(pid: int) -> float:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1]) / 1024
    return float("nan")


def scrape(port: int) -> dict[str, float]:
    """The leak figures from /metrics, plus ``tasks:<kind>`` for each kind of task on the server loop."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for name in METRICS:
        match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
        found[name] = float(match.group(1)) if match else float("nan")
    for kind, value in re.findall(r'^lingecho_event_loop_tasks_by_kind\{kind="([^"]+)"\} ([0-9.e+-]+)$', text,
                                  re.MULTILINE):
        found[f"tasks:{kind}"] = float(value)
    return found


def processing_backlog(db_path: Path) -> tuple[dict[str, int], int]:
    with sqlite3.connect(db_path, timeout=10) as db:
        states = dict(db.execute("select state, count(*) from roleplay_realtimesession group by state"))
        unprocessed = db.execute(
            "select count(*) from roleplay_realtimesession where state='ended' and processing not in "
            "('done','failed')").fetchone()[0]
    return states, unprocessed


class Soak:
    def __init__(self, stack, rng: random.Random) -> None:
        self.stack = stack
        self.rng = rng
        self.scenario = stack.scenario_id()
        self.outcomes: dict[str, int] = {}
        self.errors: list[str] = []

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    async def webrtc(self, ending: str) -> None:
        from tests.audio_fixtures import silence, speak
        from tests.media_pipeline.live import WsPeer, ws_connect_media
        from tests.media_pipeline.voice_client import VoiceClient

        peer = await WsPeer(self.stack, self.scenario).start()
        client = VoiceClient(self.rng.choice(["pcma", "opus"]))
        try:
            await ws_connect_media(peer, client)
            await peer.send("asr_start", {"language": "en", "format": client.codec, "sample_rate": 16000,
                                          "mode": "auto"})
            rate = client.track.rate
            speech = speak(self.rng.choice(PHRASES), rate=rate)
            if ending == "mid_utterance":
                client.track.play(speech[: len(speech) // 2])
                await asyncio.sleep(len(speech) / rate / 2 * self.rng.uniform(0.3, 0.9))
                await peer.ws.close()  # no disconnect message: the network went away
                return
            client.track.play(speech)
            client.track.play(silence(1200, rate))
            await peer.expect("tts_start", timeout=30)
            if ending == "during_reply":
                await peer.ws.close()
                return
            with contextlib.suppress(TimeoutError):
                await peer.expect("tts_complete", timeout=30)
            await peer.close()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), 5)
            if peer._reader:
                peer._reader.cancel()
            with contextlib.suppress(Exception):
                await peer.ws.close()

    async def chunked(self, ending: str) -> None:
        import socketio

        from tests.audio_fixtures import silence, speak
        from tests.signaling.socketio_live import media_recorder_pieces

        sio = socketio.AsyncClient(reconnection=False)
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        replied = asyncio.Event()
        sio.on("session-started", lambda data: started.done() or started.set_result(data))
        sio.on("ai-response", lambda data: replied.set() if data.get("turnCount", 0) >= 1 else None)
        import numpy as np

        audio = np.concatenate([silence(300), speak(self.rng.choice(PHRASES)), silence(1500)])
        pieces = media_recorder_pieces(audio)
        try:
            await sio.connect(self.stack_url, transports=["websocket"], auth={"token": self.stack.token},
                              wait_timeout=30)
            await sio.emit("start-session", {"sessionId": None, "scenarioId": self.scenario})
            session = (await asyncio.wait_for(started, 30))["sessionId"]
            stop_at = len(pieces) // 2 if ending == "mid_utterance" else len(pieces)
            t0 = time.perf_counter()
            for i, piece in enumerate(pieces[:stop_at]):
                await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.25 - time.perf_counter()))
                await sio.emit("audio-chunk", {"sessionId": session, "audioData": base64.b64encode(piece).decode(),
                                               "offset": i, "totalChunks": len(pieces)})
            if ending == "mid_utterance":
                return  # disconnect below, mid-utterance
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(replied.wait(), 30)
            await sio.call("end-session", {"sessionId": session}, timeout=30)
        finally:
            with contextlib.suppress(Exception):
                await sio.disconnect()

    @property
    def stack_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.port}"

    async def cycle(self, index: int) -> None:
        kind = "webrtc" if index % 2 == 0 else "chunk"
        endings = ["clean", "mid_utterance", "during_reply"] if kind == "webrtc" else ["clean", "mid_utterance"]
        ending = self.rng.choice(endings)
        try:
            if kind == "webrtc":
                await asyncio.wait_for(self.webrtc(ending), 90)
            else:
                await asyncio.wait_for(self.chunked(ending), 90)
            self.count(f"{kind}/{ending}")
        except Exception as exc:  # noqa: BLE001 - count it and keep churning
            self.count(f"{kind}/failed")
            self.errors.append(f"{kind}/{ending}: {type(exc).__name__}: {str(exc)[:120]}")


async def soak(args: argparse.Namespace) -> int:
    from tests.media_pipeline.live import LiveStack

    tmp = Path(tempfile.mkdtemp(prefix="lingecho-churn-"))
    stack = LiveStack(tmp)
    stack.env.update({"SESSION_RESUME_SECONDS": str(args.resume_seconds), "SESSION_SWEEP_SECONDS": "2",
                      "CHUNK_SWEEP_SECONDS": "2", "MAX_LIVE_SESSIONS_PER_USER": "1000", "WS_RATE_PER_SECOND": "200",
                      "WS_RATE_BURST": "400"})
    stack.env.update(dict(pair.split("=", 1) for pair in args.server_env))
    stack.start()
    pid = stack.procs["daphne"].pid
    print(f"server log: {tmp / 'daphne.log'}")
    rss_rounds: list[float] = []
    try:
        soak_ = Soak(stack, random.Random(args.seed))
        await soak_.cycle(0)  # warm every path once before the baseline
        await soak_.cycle(1)
        await asyncio.sleep(args.resume_seconds + 6)
        before = scrape(stack.port)
        rss_before = rss_mb(pid)
        began = time.monotonic()
        gate = asyncio.Semaphore(args.parallel)

        async def one(i: int) -> None:
            async with gate:
                await soak_.cycle(i)

        for round_ in range(args.rounds):
            start = 2 + round_ * args.cycles
            await asyncio.gather(*(one(i) for i in range(start, start + args.cycles)))
            await asyncio.sleep(args.resume_seconds + args.cooldown)  # dropped sessions expire, peers time out
            # The embedded default processes ended calls one at a time in the background: wait for the
            # backlog (bounded), so each reading is the server at rest, not mid-job.
            drain_until = time.monotonic() + args.drain_timeout
            states, unprocessed = processing_backlog(tmp / "db.sqlite3")
            while unprocessed and time.monotonic() < drain_until:
                await asyncio.sleep(5)
                states, unprocessed = processing_backlog(tmp / "db.sqlite3")
            rss_rounds.append(rss_mb(pid))
        took = time.monotonic() - began
        after = scrape(stack.port)
        rss_after = rss_mb(pid)
    finally:
        stack.stop()
    total = args.cycles * args.rounds
    print(f"churn soak: {args.rounds} x {args.cycles} cycles, {args.parallel} at a time, in {took:.0f} s "
          "(with cool-downs)")
    print(f"  outcomes: {dict(sorted(soak_.outcomes.items()))}")
    for error in soak_.errors[:10]:
        print(f"  error: {error}")
    print(f"  {'figure':32} {'before':>8} {'after':>8}")
    for name in METRICS:
        print(f"  {name:32} {before[name]:8.0f} {after[name]:8.0f}")
    print(f"  {'server RSS MB':32} {rss_before:8.1f} {rss_after:8.1f}  (growth {rss_after - rss_before:+.1f} MB, "
          f"{(rss_after - rss_before) * 1024 / max(1, total):.0f} KB per cycle)")
    if len(rss_rounds) > 1:
        steps = [b - a for a, b in zip([rss_before, *rss_rounds], rss_rounds, strict=False)]
        print(f"  RSS after each round of {args.cycles}: {', '.join(f'{r:.0f}' for r in rss_rounds)} MB "
              f"(growth per round {', '.join(f'{d:+.0f}' for d in steps)} MB: a plateau is allocator and caches, "
              "a steady climb a leak)")
    print(f"  sessions by state after cool-down: {states}; ended but not processed: {unprocessed}")
    for kind in sorted(k for k in set(before) | set(after) if k.startswith("tasks:")):
        if after.get(kind, 0) != before.get(kind, 0):
            print(f"  {kind:32} {before.get(kind, 0):8.0f} {after.get(kind, 0):8.0f}")
    leaked = [n for n in METRICS if after[n] > before[n]]
    live = states.get("live", 0) + states.get("dropped", 0)
    if leaked or live:
        print(f"  NOT BACK TO BASELINE: {', '.join(leaked) or ''} {f'{live} sessions still live' if live else ''}")
        return 1
    print("  back to baseline")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200, help="cycles per round")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of --cycles, each read at rest")
    parser.add_argument("--parallel", type=int, default=6)
    parser.add_argument("--resume-seconds", type=int, default=5)
    parser.add_argument("--cooldown", type=float, default=40.0,
                        help="seconds after the last cycle before the final reading (dead peers take ~30 s)")
    parser.add_argument("--drain-timeout", type=float, default=900.0,
                        help="longest wait for the after-call backlog before the final reading")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the server (e.g. GC_FULL_COLLECTION_SECONDS=60)")
    parser.add_argument("--seed", type=int, default=1)
    raise SystemExit(asyncio.run(soak(parser.parse_args())))


if __name__ == "__main__":
    main()
