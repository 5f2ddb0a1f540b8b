"""``runworker`` with a graceful end: SIGTERM/SIGINT drain the media worker, then the process exits 0.

Channels' worker dies on SIGTERM with nothing cleaned up: calls cut off, recordings left to the
after-call job, the heartbeat lingering for its TTL. This command is Channels' own (same
arguments), with a worker that on a signal stops listening (an offer still waiting in the shared
channel is left to the other workers) and runs ``MediaWorker.drain`` within
``SHUTDOWN_DRAIN_SECONDS``. It overrides Channels' command because ``media_pipeline`` is listed
before ``channels`` in ``INSTALLED_APPS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from channels.management.commands.runworker import Command as ChannelsRunworker
from channels.worker import Worker
from django.conf import settings

from media_pipeline.contract import MEDIA_CHANNEL

log = logging.getLogger(__name__)


class DrainingWorker(Worker):
    """Channels' worker; a signal stops its listeners and drains this process's media worker."""

    async def handle(self) -> None:
        """Channels' ``handle`` (one listener per channel) that also ends on SIGTERM/SIGINT."""
        from lingecho.channel_layer import cancel_until_done

        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        if MEDIA_CHANNEL in self.channels:
            await serve_pinned_channel()
        listeners = [asyncio.ensure_future(self.listener(channel)) for channel in self.channels]
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({*listeners, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.done():  # a listener failed (channel layer error): raise it, as Channels would
            stop.cancel()
            for listener in listeners:
                if listener.done():
                    listener.result()
            return
        log.info("signal received: draining the media worker")
        # The listeners go first: an offer still in the shared channel is taken by another worker.
        for listener in listeners:
            await cancel_until_done(listener)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        await drain_process_worker()
        for details in list(self.application_instances.values()):
            details["future"].cancel()


async def serve_pinned_channel() -> None:
    """Start this process's media worker on the worker's loop before the first offer arrives.

    Its heartbeat names its pinned channel from the moment the process boots, and a full or busier
    worker passes offers there; the loop that reads that channel used to start only with the first
    message from the shared channel, so a worker that lost every race for it (measured: both calls
    of a two-call run on one of two workers, 3 runs in 8) left an offer passed to it unread until
    the consumer gave up (``offer_timeout``).
    """
    from media_pipeline import worker

    await worker.process_worker().ensure_started()


async def drain_process_worker() -> None:
    """Drain this process's media worker if it ever started; withdraw its heartbeat either way."""
    from media_pipeline import worker

    media = worker.process_worker()
    if media.loop is None:
        media.draining = True
        media.stop_heartbeat()
        return
    await media.drain("server_shutdown", settings.SHUTDOWN_DRAIN_SECONDS)


class Command(ChannelsRunworker):
    help = "Run a Channels worker (e.g. `runworker media`); SIGTERM drains its calls gracefully."
    worker_class = DrainingWorker
