"""Media worker liveness, shared through the cache (locmem in one process, Redis when scaled).

Each worker writes its own key with a short TTL; a registry key lists the worker ids ever seen so
readers can find them without scanning Redis. A stale id costs one missing ``get``.
"""

from __future__ import annotations

import time

from django.core.cache import cache

HEARTBEAT_SECONDS = 5.0
_TTL_SECONDS = 15
_REGISTRY_KEY = "lingecho:media-workers"


def _key(worker_id: str) -> str:
    return f"lingecho:media-worker:{worker_id}"


# Which field of a heartbeat counts a transport's live calls (admission compares it with the limit).
CALLS_FIELD = {"webrtc": "calls", "chunk": "chunk_calls"}


def publish_heartbeat(
    *, worker_id: str, channel_name: str, calls: int, chunk_calls: int = 0, limit: int | None = None
) -> None:
    """``calls``: live WebRTC calls; ``chunk_calls``: live audio-chunk calls (admitted apart);
    ``limit``: the WebRTC calls this worker takes (sized to its host: workers may differ)."""
    beat = {"channel": channel_name, "calls": calls, "chunk_calls": chunk_calls, "at": time.time()}
    if limit is not None:
        beat["limit"] = limit
    cache.set(_key(worker_id), beat, timeout=_TTL_SECONDS)
    registry = set(cache.get(_REGISTRY_KEY) or ())
    if worker_id not in registry:
        registry.add(worker_id)
        cache.set(_REGISTRY_KEY, sorted(registry), timeout=None)


def withdraw_heartbeat(*, worker_id: str) -> None:
    cache.delete(_key(worker_id))


def live_workers() -> dict[str, dict]:
    ids = cache.get(_REGISTRY_KEY) or []
    found = cache.get_many([_key(i) for i in ids])
    now = time.time()
    return {key.rsplit(":", 1)[-1]: beat for key, beat in found.items() if now - beat.get("at", 0) < _TTL_SECONDS}
