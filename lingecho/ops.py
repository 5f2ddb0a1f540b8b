"""Health, readiness and metrics endpoints for load balancers and Prometheus."""

from __future__ import annotations

import asyncio
import time
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from media_pipeline.heartbeat import live_workers
from signaling.chunk_sessions import manager as chunk_manager


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Dependencies are /readyz's business."""
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


async def _channel_round_trip() -> float:
    layer = get_channel_layer()
    channel = await layer.new_channel("readyz.")
    nonce = uuid.uuid4().hex
    started = time.perf_counter()
    await layer.send(channel, {"type": "readyz.ping", "nonce": nonce})
    message = await asyncio.wait_for(layer.receive(channel), timeout=2.0)
    if message.get("nonce") != nonce:
        raise RuntimeError("channel layer returned a foreign message")
    return (time.perf_counter() - started) * 1000


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, object] = {}
    ok = True
    try:
        checks["database"] = _check_database()
    except Exception as exc:  # noqa: BLE001 - report, don't crash the probe
        checks["database"], ok = f"error: {type(exc).__name__}", False
    try:
        checks["channel_layer"] = f"ok ({async_to_sync(_channel_round_trip)():.1f} ms)"
    except Exception as exc:  # noqa: BLE001
        checks["channel_layer"], ok = f"error: {type(exc).__name__}", False
    workers = live_workers()
    checks["media_worker"] = {"mode": settings.MEDIA_WORKER_MODE, "live": len(workers)}
    if not workers:
        ok = False
    return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


LOOP_TASKS = Gauge("lingecho_event_loop_tasks", "asyncio tasks alive on the server's event loop")
LOOP_TASKS_BY_KIND = Gauge(
    "lingecho_event_loop_tasks_by_kind", "asyncio tasks on the server's loop by the leading words of their name",
    ["kind"],
)


def task_kind(name: str) -> str:
    """``chunks-<session id>`` -> ``chunks``, ``sio-ping-<sid>`` -> ``sio-ping``, ``Task-12`` -> ``unnamed``:
    the leading lower-case words of a task's name, so the label set stays small (never an id)."""
    words = []
    for part in name.split("-"):
        if not part.isalpha() or not part.islower() or len(part) > 20:
            break
        words.append(part)
    return "-".join(words[:3]) or "unnamed"
CHUNK_SESSIONS = Gauge("lingecho_chunk_sessions", "Socket.IO fallback sessions held by this process")


async def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text. Async so the loop's own task count can be read where it is exact: a task
    (or chunk session) still alive after its call ended is a leak, which the churn soak looks for."""
    tasks = asyncio.all_tasks()
    LOOP_TASKS.set(len(tasks))
    kinds: dict[str, int] = {}
    for task in tasks:
        kind = task_kind(task.get_name())
        kinds[kind] = kinds.get(kind, 0) + 1
    LOOP_TASKS_BY_KIND.clear()
    for kind, count in kinds.items():
        LOOP_TASKS_BY_KIND.labels(kind=kind).set(count)
    CHUNK_SESSIONS.set(len(chunk_manager.sessions))
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
