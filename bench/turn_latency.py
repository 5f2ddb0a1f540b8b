"""End-to-end voice turn latency, one call at a time, with the offline engines.

Per turn: an aiortc caller speaks an eSpeak phrase (PCMA or Opus), then stays silent; the worker
endpoints, transcribes, asks the scripted buyer, synthesises and starts sending. Printed:
- server e2e (the product metric, stored on the Utterance): last voiced inbound frame → first
  reply frame sent; and its parts (endpointing, ASR final, brain first token, TTS first audio);
- client e2e: the caller's last voiced frame sent → first audible reply frame received (adds
  both aiortc jitter buffers and the network, ~loopback here);
- offer → answer as the signaling side sees it (channel layer round trip included).

Run: ``.venv/bin/python bench/turn_latency.py [--turns 20] [--codec pcma|opus] [--engines offline|dashscope|openai]``
The end-of-turn detector is the settings' (printed): ``TURN_DETECTOR=silence ENDPOINT_SILENCE_MS=300`` in
the environment gives the issue-15 like-for-like row (a fixed 300 ms pause), unset gives Smart Turn.
(embedded: the worker runs in this process on the in-memory layer). ``--engines dashscope|openai``
selects the cloud adapters (ASR, TTS, buyer brain) pointed at the local fake providers of
tests/cloud/fakes.py: those figures are *our* side of a cloud turn only (framing, parsing,
fallback bookkeeping on loopback with a provider that answers at once), not the provider's.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _voice import PHRASES, line, setup_django


def use_fake_cloud(kind: str) -> list[object]:
    """Point settings at local fakes of ``kind``'s provider; returns the servers to stop."""
    from django.conf import settings

    from tests.cloud.fakes import KEY, FakeDashScope, FakeOpenAI

    chat = FakeOpenAI(transcript=PHRASES[0]).start()
    if kind == "openai":
        settings.OPENAI_BASE_URL, settings.OPENAI_API_KEY = chat.base_url, KEY
        settings.ASR_ENGINE, settings.TTS_ENGINE, settings.BRAIN_ENGINE = "openai", "openai", "openai"
        return [chat]
    dashscope = FakeDashScope(asr_sentences=[PHRASES[0]]).start()
    settings.DASHSCOPE_API_KEY, settings.DASHSCOPE_WS_URL, settings.DASHSCOPE_COMPATIBLE_URL = (
        KEY, dashscope.url, chat.base_url)
    settings.ASR_ENGINE, settings.TTS_ENGINE = "dashscope_paraformer", "dashscope_cosyvoice"
    settings.BRAIN_ENGINE = "qwen"
    return [chat, dashscope]


async def run(turns: int, codec: str, engines: str = "offline") -> None:
    from _voice import make_sessions, turn_latencies
    from asgiref.sync import sync_to_async
    from channels.layers import InMemoryChannelLayer

    from media_pipeline.engine_pool import warm_up
    from media_pipeline.worker import MediaWorker
    from roleplay.models import Utterance
    from tests.audio_fixtures import silence, speak
    from tests.media_pipeline.voice_client import ContractPeer, VoiceClient, connect

    servers = use_fake_cloud(engines) if engines != "offline" else []
    await sync_to_async(warm_up)()
    from django.conf import settings

    from media_pipeline.engine_pool import get_engines

    worker_turn_detector = None if settings.TURN_DETECTOR == "silence" else get_engines().turn
    layer = InMemoryChannelLayer(capacity=1000)
    worker = MediaWorker(layer)
    await worker.ensure_started(serve_shared=True)
    offer_answer: list[float] = []
    client_e2e: list[float] = []
    sessions: list[str] = []
    for round_ in range(max(1, turns // 5)):
        (session_id,) = await sync_to_async(make_sessions)(1)
        sessions.append(session_id)
        peer = await ContractPeer(layer, session_id).start()
        client = VoiceClient(codec)
        started = time.monotonic()
        await connect(peer, client)
        offer_answer.append((peer.of_type("answer")[0]["at"] - started) * 1000)
        await peer.send("media.asr_start", language="en", format=codec, sample_rate=16000, mode="auto")
        for i in range(min(5, turns - round_ * 5)):
            rate = client.track.rate
            client.track.play(speak(PHRASES[(round_ * 5 + i) % len(PHRASES)], rate=rate))
            client.track.play(silence(1500, rate))
            await client.track.done.wait()
            await peer.expect("tts_complete", timeout=60)
            voiced = client.track.last_voiced_at
            heard = client.sound_since(voiced) if voiced else None
            if heard:
                client_e2e.append((heard - voiced) * 1000)
            await asyncio.sleep(0.3)
        await client.close()
        await peer.send("media.hangup", reason="user_requested")
        await peer.stop()
    await asyncio.sleep(0.5)
    server = await sync_to_async(turn_latencies)(sessions)
    parts = await sync_to_async(lambda: list(
        Utterance.objects.filter(session_id__in=sessions, speaker="trainee").values(
            "endpointing_ms", "asr_final_ms", "brain_first_token_ms", "tts_first_audio_ms", "text", "turn_end")
    ))()
    await worker.stop()
    for fake in servers:
        fake.stop()
    detector = "silence" if worker_turn_detector is None else "smart"
    rule = (f"a {settings.ENDPOINT_SILENCE_MS} ms pause ends the turn" if detector == "silence"
            else f"Smart Turn asked at {settings.TURN_ASK_SILENCE_MS} ms, {settings.TURN_PATIENCE_MS} ms at most")
    print(f"engines {engines}{' (local fakes: our side only)' if servers else ''}, codec {codec}, "
          f"{len(server)} turns, end-of-turn detector {detector} ({rule}; TURN_DETECTOR / ENDPOINT_SILENCE_MS "
          "from the environment)")
    print(line("server e2e turn latency", server))
    for key in ("endpointing_ms", "asr_final_ms", "brain_first_token_ms", "tts_first_audio_ms"):
        print(line(f"  {key}", [p[key] for p in parts if p[key] is not None]))
    print(line("client e2e (incl. both jitter buffers)", client_e2e))
    for p in parts:
        if p["turn_end"].get("decision") not in (None, "complete"):
            print(f"  turn not ended at an ask: {p['text']!r}: {p['turn_end']}")
    print(line("offer -> answer", offer_answer))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--codec", choices=("pcma", "opus"), default="pcma")
    parser.add_argument("--engines", choices=("offline", "dashscope", "openai"), default="offline")
    args = parser.parse_args()
    setup_django()
    asyncio.run(run(args.turns, args.codec, args.engines))


if __name__ == "__main__":
    main()
