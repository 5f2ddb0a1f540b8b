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
from typing import Any

from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer

# How long a cancelled receive gets to finish before it is cancelled again.
RECANCEL_SECONDS = 0.05


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


class RedisChannelLayer(BaseRedisChannelLayer):
    async def receive(self, channel: str) -> dict[str, Any]:
        """channels-redis's receive, run as its own task so a cancel is repeated until it lands.

        A message that arrives in the same instant as the cancel is dropped, as it would be by any
        cancelled receive: the receiver is going away.
        """
        task = asyncio.ensure_future(super().receive(channel))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await cancel_until_done(task)
            raise
