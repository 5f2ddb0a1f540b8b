"""The Redis channel layer, with a receive that always ends when it is cancelled.

On Python 3.11 ``asyncio.wait_for`` returns the inner result instead of raising when the waiting
task is cancelled in the same loop iteration as the inner future completes (CPython gh-86296,
fixed in 3.12). redis-py wraps every socket write in ``wait_for``, so a consumer that closes at
that instant has its channel-layer receive carry on into the next BZPOPMIN. The channel belongs
to the closed consumer and never gets another message, so that receive loops for ever: Channels'
``await_many_dispatch`` waits on it, the consumer never finishes closing and keeps a Redis
connection busy; in tests the loop's teardown waited on it until the 300 s timeout. Measured
before this class: a WebSocket dropped 0-5 ms after a media event hung in about one of fifteen
tries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

# How long a cancelled receive gets to finish before it is cancelled again.
RECANCEL_SECONDS = 0.05
# A receive that lost Redis tries again after this long, doubling up to the maximum.
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 2.0
REDIS_LOST = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


async def cancel_until_done(task: asyncio.Future) -> None:
    """Cancel ``task`` until it has finished: any one cancel can be swallowed (see the module doc).

    Cancels of the caller meanwhile are absorbed: leaving early would abandon ``task`` in the
    state this function exists to end (an event loop's shutdown cancels both at once).
    """
    while not task.done():
        task.cancel()
        try:
            await asyncio.wait([task], timeout=RECANCEL_SECONDS)
        except asyncio.CancelledError:
            continue


def cancel_requested() -> bool:
    """The running task was asked to stop, even if the awaited call swallowed the cancel (see the
    module doc): long-lived loops check it each round so one cancel always ends them."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class RedisChannelLayer(BaseRedisChannelLayer):
    async def receive(self, channel: str) -> dict[str, Any]:
        """channels-redis's receive, run as its own task so a cancel is repeated until it lands.

        A message that arrives in the same instant as the cancel is dropped, as it would be by any
        cancelled receive: the receiver is going away.
        """
        delay, lost_at = RETRY_FIRST_SECONDS, 0.0
        while True:
            task = asyncio.ensure_future(super().receive(channel))
            try:
                message = await asyncio.shield(task)
            except asyncio.CancelledError:
                await cancel_until_done(task)
                raise
            except REDIS_LOST as exc:
                # Redis restarting or failing over: Channels' dispatch loop would die with this
                # error and take the consumer (a live call) with it, closing the socket with 1011
                # and no word to the client. Wait for Redis instead; messages sent to this channel
                # meanwhile were lost with the old Redis, which the call survives (a re-offer, a retry).
                if not lost_at:
                    lost_at = time.monotonic()
                    logger.warning("channel layer lost Redis (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            if lost_at:
                logger.info("channel layer back on Redis after %.1f s", time.monotonic() - lost_at)
            return message
