"""Many simultaneous calls in one media worker: turn latency, outbound pacing, underruns.

``--calls`` aiortc callers (default 20) each speak a phrase, wait for the buyer's reply to finish,
pause, and repeat, so each trainee speaks about half the time. The worker is a separate
``manage.py runworker media`` process on Redis (``REDIS_URL``, default redis://127.0.0.1:6379/1),
so the callers' own aiortc work does not run on the worker's event loop; both still share the
machine's cores. Printed: server e2e turn latency (from the Utterances), the worker's outbound
frame-interval jitter (|interval - 20 ms|) and underruns (published with its heartbeat), and
offer → answer under load.

Run: ``.venv/bin/python bench/concurrent_calls.py [--calls 20] [--seconds 60] [--codec pcma]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time

from _voice import PHRASES, line, make_sessions, setup_django, start_worker_process, turn_latencies


async def caller(layer, session_id: str, codec: str, until: float, rng: random.Random, out: dict) -> None:
    from tests.audio_fixtures import silence, speak
    from tests.media_pipeline.voice_client import ContractPeer, VoiceClient, connect

    await asyncio.sleep(rng.uniform(0, 5))  # calls arrive over a few seconds, not in one burst
    peer = await ContractPeer(layer, session_id).start()
    client = VoiceClient(codec)
    try:
        started = time.monotonic()
        await connect(peer, client)
        out["offer_answer"].append((peer.of_type("answer")[0]["at"] - started) * 1000)
        await peer.send("media.asr_start", language="en", format=codec, sample_rate=16000, mode="auto")
        rate = client.track.rate
        while time.monotonic() < until:
            client.track.play(speak(rng.choice(PHRASES), rate=rate))
            client.track.play(silence(1500, rate))
            try:
                await asyncio.wait_for(client.track.done.wait(), 30)
                await peer.expect("tts_complete", timeout=30)
            except TimeoutError:
                out["timeouts"] += 1
                continue
            voiced = client.track.last_voiced_at
            heard = client.sound_since(voiced) if voiced else None
            if heard:
                out["client_e2e"].append((heard - voiced) * 1000)
            await asyncio.sleep(rng.uniform(0.3, 1.0))
    except Exception as exc:  # noqa: BLE001 - count and report, keep the other calls going
        out["errors"].append(repr(exc))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), 5)
            await peer.send("media.hangup", reason="user_requested")
        await peer.stop()
        out["done"] += 1


async def run(calls: int, seconds: float, codec: str) -> None:
    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer
    from django.core.cache import cache

    from media_pipeline.heartbeat import live_workers
    from media_pipeline.worker import stats_key

    proc = start_worker_process()
    try:
        for _ in range(60):
            if await sync_to_async(live_workers)():
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # models load in the background
        worker_id = next(w for w in await sync_to_async(live_workers)() if f"-{proc.pid}-" in w)
        before = await sync_to_async(cache.get)(stats_key(worker_id)) or {}
        sessions = await sync_to_async(make_sessions)(calls)
        layer = get_channel_layer()
        out = {"offer_answer": [], "client_e2e": [], "errors": [], "timeouts": 0, "done": 0}
        until = time.monotonic() + seconds
        rng = random.Random(1)
        tasks = [asyncio.ensure_future(caller(layer, sid, codec, until, random.Random(rng.random()), out))
                 for sid in sessions]
        _, stuck = await asyncio.wait(tasks, timeout=seconds + 60)
        for task in stuck:  # a caller that never got its reply: report it instead of hanging
            task.cancel()
        out["stuck"] = len(stuck)
        await asyncio.sleep(6)  # one more heartbeat carries the final stats
        after = await sync_to_async(cache.get)(stats_key(worker_id)) or {}
        server = await sync_to_async(turn_latencies)(sessions)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    print(f"{calls} calls, {seconds:.0f} s, codec {codec}, one runworker process; errors {len(out['errors'])}, "
          f"reply timeouts {out['timeouts']}, callers stuck {out.get('stuck', 0)}")
    for err in out["errors"][:3]:
        print("  error:", err)
    print(line("server e2e turn latency", server))
    print(line("client e2e (incl. both jitter buffers)", out["client_e2e"]))
    print(line("offer -> answer (under load)", out["offer_answer"]))
    print(f"worker outbound pacing: {after}")
    print(f"underruns during the run: {after.get('underruns', 0) - before.get('underruns', 0)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--codec", choices=("pcma", "opus"), default="pcma")
    args = parser.parse_args()
    setup_django(redis_url=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/1")
    asyncio.run(run(args.calls, args.seconds, args.codec))


if __name__ == "__main__":
    main()
