"""Embedded default: the media worker runs inside the server process, on the server's event loop.

With the in-memory channel layer the worker must share the server's loop and layer object (an
in-memory layer is per process and its queues belong to one loop), so it is started from inside
the ASGI application on the first scope, not from a thread. Idempotent; does nothing when
``MEDIA_WORKER_MODE=external`` (``runworker media`` processes do the job).
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings

from media_pipeline.engine_pool import start_warm_up
from media_pipeline.worker import MediaWorker, process_worker

_started = False
_lock: asyncio.Lock | None = None


async def ensure_embedded_worker() -> MediaWorker | None:
    """Start this process's media worker on the running loop, once (embedded mode only)."""
    global _started, _lock
    if _started or settings.MEDIA_WORKER_MODE != "embedded":
        return process_worker() if _started else None
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if not _started:
            worker = process_worker()
            await worker.ensure_started(serve_shared=True)
            start_warm_up()
            _started = True
    return process_worker()


class EmbeddedMediaWorker:
    """ASGI wrapper: the first scope of any kind starts the embedded worker, then passes through."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if not _started and scope.get("type") in ("http", "websocket"):
            await ensure_embedded_worker()
        return await self.app(scope, receive, send)
