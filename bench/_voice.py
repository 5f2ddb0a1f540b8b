"""Shared harness for the voice benches: a throw-away database, a media worker, aiortc callers.

The worker runs either in this process on the in-memory layer (embedded default) or as a separate
``manage.py runworker media`` process on Redis (scaled; keeps the callers' CPU out of the worker's
event loop). Callers are real aiortc peers that speak eSpeak audio through the channel-layer
contract (tests/media_pipeline/voice_client.py) and time what they hear.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lingecho.settings")
TMP = Path(tempfile.mkdtemp(prefix="lingecho-voice-bench-"))
os.environ.setdefault("SQLITE_PATH", str(TMP / "db.sqlite3"))
os.environ.setdefault("MEDIA_ROOT", str(TMP / "media"))
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("MAX_LIVE_SESSIONS_PER_USER", "1000")

PHRASES = [
    "Hello, I would like to tell you about our new software.",
    "How do you handle your invoices today?",
    "What would it take to get a pilot started?",
    "Our customers usually see payback within a quarter.",
    "Could we book a call with your controller next week?",
    "Is budget the main concern for you this year?",
]


def setup_django(*, redis_url: str | None = None) -> None:
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
        os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "1")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_sessions(count: int) -> list[str]:
    from roleplay import services
    from roleplay.models import RealtimeSession
    from tests.factories import make_scenario, make_user

    user = make_user(f"bench{int(time.time() * 1000) % 100000}")
    scenario = make_scenario(slug=f"bench-{time.time_ns()}", max_turns=10_000)
    return [
        services.session_create(trainee=user, scenario=scenario, transport=RealtimeSession.Transport.WEBRTC).pk
        for _ in range(count)
    ]


def start_worker_process() -> subprocess.Popen:
    log = open(TMP / "worker.log", "w")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen([sys.executable, "manage.py", "runworker", "media"], cwd=ROOT, env=dict(os.environ),
                            stdout=log, stderr=subprocess.STDOUT)


def turn_latencies(session_ids: list[str]) -> list[float]:
    from roleplay.models import Utterance

    return [
        u.turn_latency_ms for u in Utterance.objects.filter(session_id__in=session_ids, speaker="trainee")
        if u.turn_latency_ms is not None
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def line(name: str, values: list[float], unit: str = "ms") -> str:
    if not values:
        return f"{name:<44} n=0"
    return (f"{name:<44} n={len(values):<4} p50 {pct(values, 50):7.1f} {unit}  p95 {pct(values, 95):7.1f} {unit}"
            f"  p99 {pct(values, 99):7.1f} {unit}  max {max(values):7.1f} {unit}  mean {statistics.mean(values):7.1f}")


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": pct(values, 50), "p95": pct(values, 95)} if values else {"n": 0}
