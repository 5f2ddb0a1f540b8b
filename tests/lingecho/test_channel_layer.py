"""lingecho.channel_layer: a cancelled receive ends even when its first cancels are swallowed.

channels-redis's own receive is replaced here by one that swallows cancels the way Python 3.11's
``asyncio.wait_for`` does inside redis-py (see the module doc), so the test is deterministic and
needs no Redis; tests/signaling/test_voice_protocol.py drops sockets against the real thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from channels_redis.core import RedisChannelLayer as BaseRedisChannelLayer

from lingecho.channel_layer import RedisChannelLayer, cancel_until_done


class Swallower:
    """A receive that keeps going after its first ``swallow`` cancels, then ends on the next one."""

    def __init__(self, swallow: int) -> None:
        self.swallow = swallow
        self.cancels_seen = 0
        self.finished = asyncio.Event()

    async def receive(self, channel: str) -> dict:
        try:
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    self.cancels_seen += 1
                    if self.cancels_seen > self.swallow:
                        raise
        finally:
            self.finished.set()


@pytest.fixture
async def swallower(monkeypatch) -> AsyncIterator[Swallower]:
    fake = Swallower(swallow=2)
    monkeypatch.setattr(BaseRedisChannelLayer, "receive", fake.receive)
    yield fake
    # An async fixture ends before the test's loop does: should a test fail, the loop's shutdown
    # then ends the receive it left behind instead of waiting on it for ever.
    fake.swallow = 0


async def test_a_cancelled_receive_ends_though_two_cancels_are_swallowed(swallower):
    receive = asyncio.ensure_future(RedisChannelLayer().receive("specific.abc!def"))
    await asyncio.sleep(0.01)
    receive.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(receive, 2)
    assert swallower.finished.is_set() and swallower.cancels_seen == 3


async def test_it_still_ends_when_the_caller_is_cancelled_again_meanwhile(swallower):
    """A loop's shutdown cancels every task at once: the waiter and the receive it waits for."""
    receive = asyncio.ensure_future(RedisChannelLayer().receive("specific.abc!def"))
    await asyncio.sleep(0.01)
    receive.cancel()
    await asyncio.sleep(0)
    receive.cancel()
    done, _ = await asyncio.wait([receive], timeout=2)
    assert done == {receive} and receive.cancelled()
    assert swallower.finished.is_set()


async def test_a_message_is_returned_as_before():
    layer = RedisChannelLayer()

    async def delivered(_layer: BaseRedisChannelLayer, channel: str) -> dict:
        return {"type": "hello", "channel": channel}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseRedisChannelLayer, "receive", delivered)
        assert await layer.receive("media") == {"type": "hello", "channel": "media"}


async def test_cancel_until_done_returns_at_once_for_a_finished_task():
    task = asyncio.ensure_future(asyncio.sleep(0))
    await task
    await asyncio.wait_for(cancel_until_done(task), 0.5)
