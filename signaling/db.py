"""The consumers' way to the database: ``database_sync_to_async`` that turns an outage into a coded error.

When PostgreSQL restarts or the network to it blips, Django raises ``OperationalError`` (or
``InterfaceError`` on a connection that died under it). Uncaught in a consumer that is a 1011 close
and a traceback for every socket at once; here it becomes ``ERR_CONNECTION_FAILED`` with a
``retry_after``, the socket stays open, and the next call gets a fresh connection (Django closes
the broken one; ``CONN_HEALTH_CHECKS`` checks a reused one before use).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from channels.db import database_sync_to_async
from django.db import InterfaceError, OperationalError

from signaling.protocol import ErrorCode, ProtocolError

logger = logging.getLogger(__name__)

RETRY_AFTER_MS = 2000
# What a lost database raises in Django: OperationalError, or InterfaceError on a connection that died.
DATABASE_ERRORS = (OperationalError, InterfaceError)
P = ParamSpec("P")
R = TypeVar("R")


def database_unavailable() -> ProtocolError:
    return ProtocolError(
        ErrorCode.CONNECTION_FAILED,
        "The database is unavailable right now; try again in a few seconds.",
        {"reason": "database_unavailable", "retry_after": RETRY_AFTER_MS},
    )


def domain_call(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Like ``database_sync_to_async``; a lost database raises :func:`database_unavailable`."""

    @functools.wraps(func)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except DATABASE_ERRORS as exc:
            logger.warning("database unavailable in %s: %s", func.__name__, type(exc).__name__)
            raise database_unavailable() from None

    return database_sync_to_async(guarded)


_retries: set[asyncio.Task] = set()


async def until_recorded(call: Callable[[], Awaitable[object]], *, what: str, every: float = 2.0,
                         attempts: int = 60) -> None:
    """Run ``call`` now; while the database is unavailable, again every ``every`` seconds in the background.

    For the writes a consumer makes as its socket goes away (the session is now dropped): there is
    nobody left to tell, and if the write were simply lost the session would stay live, owned by a
    process that is alive, so no sweep would end it. Bounded: after ``attempts`` tries it is left
    to the start-up sweep of the next process.
    """
    try:
        await call()
        return
    except ProtocolError:
        logger.warning("%s not recorded (database unavailable); retrying in the background", what)

    async def retry() -> None:
        for _ in range(attempts):
            await asyncio.sleep(every)
            try:
                await call()
                return
            except ProtocolError:
                continue
        logger.error("%s not recorded after %d attempts", what, attempts)

    task = asyncio.get_running_loop().create_task(retry(), name=f"until-recorded-{what}")
    _retries.add(task)
    task.add_done_callback(_retries.discard)
