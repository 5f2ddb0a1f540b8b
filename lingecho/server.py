"""``python -m lingecho.server``: daphne, with its periodic connection sweeps spread out.

Takes exactly daphne's command line (``-b``, ``-p``, ``--ping-interval``, …); ``make run`` uses it.

Why: daphne checks every connection in one pass each second (reap finished applications) and
every two seconds (timeouts, protocol pings). With thousands of open sockets each pass holds the
event loop for several milliseconds and sends hundreds of protocol pings in one burst, and every
message that arrives meanwhile waits: that is the tail of the ping → pong round trip under load
(bench/signaling.py). Here each pass is cut into ``SWEEP_STEPS`` slices run one after another
across the same period, so every connection is still checked once per period while the loop is
never held for more than a slice. It also keeps long-lived objects out of Python's full
garbage collections (:mod:`lingecho.gc_pauses`), the other source of long stalls, and runs on
uvloop (:mod:`lingecho.event_loop`).

Graceful shutdown: on SIGTERM or SIGINT Twisted stops the reactor, whose "before shutdown" trigger
is daphne's ``kill_all_applications``: it cancels every consumer, so none would run its disconnect
handling. Ours first stops listening and drains the calls (:mod:`signaling.shutdown`: clients told,
sessions ended, recordings stored, at most ``SHUTDOWN_DRAIN_SECONDS``), then cancels what is left;
the reactor waits for the Deferred it returns. ``python -m lingecho.server`` then exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from asyncio import CancelledError as AsyncioCancelledError
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING

from lingecho import event_loop

# Before daphne is imported: daphne.server creates the loop Twisted's reactor runs on at import.
EVENT_LOOP = event_loop.install()

from daphne.cli import CommandLineInterface  # noqa: E402
from daphne.server import Server  # noqa: E402
from django.conf import settings  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from lingecho.access_log import routed_through_logging  # noqa: E402
from lingecho.gc_pauses import Housekeeping, freeze_survivors_of_full_passes  # noqa: E402

if TYPE_CHECKING:
    from signaling.shutdown import DrainReport

logger = logging.getLogger(__name__)

SWEEP_STEPS = 20
LATE_AFTER_CALL_GRACE_SECONDS = 0.5  # for a job dispatched after the drain's wait, before the exit
# Kept from SHUTDOWN_DRAIN_SECONDS for what follows the drain (cancelling the rest, stopping the
# reactor, the interpreter's exit), so that the process is gone within SHUTDOWN_DRAIN_SECONDS.
EXIT_RESERVE_SECONDS = 0.5


class _Sweep:
    """Visit a snapshot of the server's connections a slice at a time over ``period`` seconds."""

    def __init__(self, server: Server, period: float, visit: Callable[[object, dict], None]) -> None:
        self.server = server
        self.period = period
        self.visit = visit
        self.pending: list[object] = []
        self.per_step = 0

    def step(self) -> None:
        try:
            if not self.pending:
                self.pending = list(self.server.connections)
                self.per_step = max(1, math.ceil(len(self.pending) / SWEEP_STEPS))
            batch, self.pending = self.pending[: self.per_step], self.pending[self.per_step :]
            for protocol in batch:
                details = self.server.connections.get(protocol)
                if details is not None:  # gone since the snapshot: nothing left to check
                    self.visit(protocol, details)
        finally:
            reactor.callLater(self.period / SWEEP_STEPS, self.step)


class SlicedSweepServer(Server):
    """daphne's Server whose per-connection sweeps run in slices (see the module docstring)."""

    def run(self) -> None:
        logger.info("serving on the %s event loop", EVENT_LOOP)
        self.ports: list[object] = []  # the listening ports (listen_success), closed first on shutdown
        self.drain_report: DrainReport | None = None
        # daphne's run() schedules its own one-pass checkers; ours replace them (see below).
        reactor.callLater(1 / SWEEP_STEPS, _Sweep(self, 1.0, self._check_application).step)
        reactor.callLater(2 / SWEEP_STEPS, _Sweep(self, 2.0, lambda protocol, _: protocol.check_timeouts()).step)
        if settings.GC_FREEZE_SECONDS > 0:
            self.gc = Housekeeping(
                freeze_every=settings.GC_FREEZE_SECONDS, full_every=settings.GC_FULL_COLLECTION_SECONDS
            )
            reactor.callLater(settings.GC_FREEZE_SECONDS, self._gc_step)
            freeze_survivors_of_full_passes()
        # Heartbeat, start-up clean-up and (no broker) the session sweep, on a thread: never on the loop.
        from roleplay.lifecycle import server_jobs_start  # the Django apps are loaded by now

        self.lifecycle = server_jobs_start()
        super().run()
        self._exit_if_after_call_work_is_left()

    def _gc_step(self) -> None:
        try:
            self.gc.step()
        finally:
            reactor.callLater(self.gc.freeze_every, self._gc_step)

    def listen_success(self, port: object) -> None:
        self.ports.append(port)
        super().listen_success(port)

    # ---- graceful shutdown (see the module docstring) -------------------------------------------

    def kill_all_applications(self) -> Deferred:
        """The reactor's "before shutdown" trigger: drain the calls, then cancel every application left.

        A trigger that returns a Deferred holds the shutdown (the reactor and its event loop keep
        running) until the Deferred fires.
        """
        drained = Deferred.fromFuture(asyncio.ensure_future(self._drain()))
        drained.addErrback(self._drain_failed)
        drained.addCallback(lambda _: self._cancel_applications())
        return drained

    async def _drain(self) -> None:
        from signaling import shutdown  # imported late: the Django apps are loaded by then

        budget = max(0.0, settings.SHUTDOWN_DRAIN_SECONDS - EXIT_RESERVE_SECONDS)
        self.drain_deadline = time.monotonic() + budget
        for port in self.ports:
            port.stopListening()
        logger.info("shutting down: ending calls for up to %.1f s", budget)
        self.drain_report = await shutdown.drain(timeout=budget)
        logger.info("shutdown drain finished: %s", self.drain_report.summary())

    @staticmethod
    def _drain_failed(failure: Failure) -> None:
        logger.error("shutdown drain failed", exc_info=(failure.type, failure.value, failure.getTracebackObject()))

    def _cancel_applications(self) -> Deferred:
        """daphne's kill_all_applications, minus its KeyError on connections whose instance the sweep reaped."""
        alive = [
            details["application_instance"]
            for details in self.connections.values()
            if "application_instance" in details and not details["application_instance"].done()
        ]
        for instance in alive:
            instance.cancel()
        logger.info("cancelled %d application instances left after the drain", len(alive))
        waited = Deferred.fromFuture(asyncio.gather(*alive))
        waited.addErrback(lambda _: None)
        return waited

    def _exit_if_after_call_work_is_left(self) -> None:
        """After the reactor stopped: do not wait for after-call jobs past the drain deadline.

        Python's exit would join the after-call thread (roleplay.tasks), running every job queued
        there to its end, and so overrun the drain time. Every call is over by now; unfinished jobs
        are processed by the next start-up's sweep (signaling.shutdown explains how), so the
        process ends here if any is left (a dispatch that came after the drain's wait included).
        """
        report = self.drain_report
        if report is None:
            return
        from roleplay.tasks import wait_for_background_jobs

        grace = min(LATE_AFTER_CALL_GRACE_SECONDS, self.drain_deadline - time.monotonic())
        if report.after_call_done and wait_for_background_jobs(grace):
            return
        logger.warning("after-call jobs still queued or running after the drain: left to the next start-up's sweep")
        logging.shutdown()
        os._exit(0)

    def application_checker(self) -> None:
        """Replaced by the sliced sweep started in run()."""

    def timeout_checker(self) -> None:
        """Replaced by the sliced sweep started in run()."""

    def _check_application(self, protocol: object, details: dict) -> None:
        """One connection's share of daphne's application check: kill late closers, reap finished apps."""
        disconnected = details.get("disconnected")
        instance = details.get("application_instance")
        overdue = disconnected and time.time() - disconnected > self.application_close_timeout
        if overdue and instance is not None and not instance.done():
            logger.warning("application for %r took too long to shut down and was killed", protocol)
            instance.cancel()
        if instance is not None and instance.done():
            self._report_application_end(protocol, instance, disconnected)
            del details["application_instance"]
            instance = None
        if instance is None and disconnected:
            del self.connections[protocol]

    def _report_application_end(self, protocol: object, instance: object, disconnected: float | None) -> None:
        try:
            exception = instance.exception()
        except (CancelledError, AsyncioCancelledError):
            return
        if exception is None:
            return
        if isinstance(exception, KeyboardInterrupt):  # a test asking the server to exit
            self.stop()
            return
        logger.error("Exception inside application: %s", exception, exc_info=exception)
        if not disconnected:
            protocol.handle_exception(exception)


class LingEchoServerCLI(CommandLineInterface):
    """daphne's command line serving :class:`SlicedSweepServer`, its access log routed through logging."""

    server_class = SlicedSweepServer

    def __init__(self) -> None:
        super().__init__()
        # daphne's run() builds its access log from -v/--access-log as a raw stdout/file writer and
        # passes it to server_class(action_logger=...): swap it for the redacted one (lingecho.access_log).
        self.server_class = routed_through_logging(type(self).server_class)


if __name__ == "__main__":
    LingEchoServerCLI.entrypoint()
