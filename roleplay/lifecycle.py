"""Sessions always end, and are always processed.

A session is live from ``session_create`` until ``session_end``. Nothing guarantees a transport will
ever call the second one: a trainee may create a session over REST and never connect, a socket may go
away for good, a server process may die with its sockets. So one window, ``SESSION_RESUME_SECONDS``,
ends each of them by rule (``expiry_reason``):

- **never joined** (created over REST, no socket ever attached: ``joined_at`` is empty) for the
  window since it was created → ``abandoned``;
- **dropped** (socket gone, ``session_mark_dropped``) for the window since → ``dropped``;
- **live, but its process is gone**: every server process publishes a heartbeat of its id
  (``process_id``) in Django's cache (Redis when scaled) every ``HEARTBEAT_SECONDS``, and
  ``session_create``/``session_resume`` record that id as the session's ``owner``. A live session
  whose owner has been silent for ``OWNER_SILENT_SECONDS`` is treated like a dropped one: ended
  ``dropped`` once the window has passed since the owner (or the session) was last seen.

``session_end`` dispatches the after-call job on commit, so every session ended here is processed.

The rules run in three places: ``session_create`` (for one trainee, before counting their live
sessions against ``MAX_LIVE_SESSIONS_PER_USER``), ``session_resume`` (for the session asked for), and
``sessions_sweep`` (for everyone, every ``SESSION_SWEEP_SECONDS``), which also re-dispatches after-call
jobs nobody runs (``after_call.processing_orphans_claim``). The sweep is run by Celery beat when
there is a broker, and by ``ServerJobs``, a daemon thread of the server process, in the embedded
default (no broker, so no beat). That thread also publishes the server's heartbeat, and at start-up
either ends every session the previous process left live or dropped (the embedded default: one
process owns every socket and every after-call job, so whatever it held died with it) or runs one
sweep (scaled). It never touches the event loop: all its database and cache work is on its own thread.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections, transaction
from django.db.models import Q
from django.utils import timezone

from roleplay import after_call, services
from roleplay.models import RealtimeSession, User

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
# Three missed heartbeats: a process busy for a moment (a long GC pause, a slow cache) is not dead.
OWNER_SILENT_SECONDS = 3 * HEARTBEAT_SECONDS
# Long enough that "last seen" survives a long outage of the process; short enough to clean itself.
HEARTBEAT_TTL_SECONDS = 24 * 3600
HEARTBEAT_KEY = "lingecho:lifecycle:heartbeat:"
# When the heartbeat store itself started (set once, if absent): after Redis lost its data, nobody's
# heartbeat is there until each process publishes again, and that alone must not end live calls.
EPOCH_KEY = "lingecho:lifecycle:epoch"
SESSIONS_PER_SWEEP = 500

LIVE_STATES = (RealtimeSession.State.LIVE, RealtimeSession.State.DROPPED)

# --------------------------------------------------------------------------- process identity

_identity: tuple[int, str] | None = None


def process_id() -> str:
    """This process's id: host, pid and a random part (pids are reused across restarts and hosts).

    Recomputed after a fork, so a prefork child never speaks for its parent.
    """
    global _identity
    pid = os.getpid()
    if _identity is None or _identity[0] != pid:
        _identity = (pid, f"{socket.gethostname()[:40]}:{pid}:{secrets.token_hex(4)}")
    return _identity[1]


def single_process() -> bool:
    """Whether one server process owns every socket and after-call job (the embedded default).

    Without Redis the channel layer and the cache are in-process: a second server process could not
    share sessions with this one, so there is none.
    """
    return not settings.REDIS_URL


def heartbeat_publish(*, owner: str | None = None, now: float | None = None) -> None:
    """Say "this process is alive" (``owner`` and ``now`` let tests speak for a fake process)."""
    now = time.time() if now is None else now
    cache.add(EPOCH_KEY, now, timeout=None)
    cache.set(HEARTBEAT_KEY + (owner or process_id()), now, timeout=HEARTBEAT_TTL_SECONDS)


@dataclass(frozen=True)
class Owners:
    """What the heartbeats say about some owners, read once per sweep."""

    last_heard: dict[str, float]
    store_since: float

    @classmethod
    def read(cls, owners: set[str]) -> Owners:
        keys = {HEARTBEAT_KEY + owner: owner for owner in owners if owner}
        found = cache.get_many(list(keys)) if keys else {}
        since = cache.get(EPOCH_KEY)
        if since is None:  # a fresh store: nobody has had the chance to publish yet
            since = time.time()
            cache.add(EPOCH_KEY, since, timeout=None)
        return cls(last_heard={keys[k]: float(v) for k, v in found.items()}, store_since=float(since))

    def alive(self, *, now: float) -> set[str]:
        return {owner for owner, heard in self.last_heard.items() if now - heard <= OWNER_SILENT_SECONDS}

    def silent_since(self, owner: str, *, now: float) -> float | None:
        """When ``owner`` was last heard if it is silent now (0.0: never heard), None while it is alive.

        An owner never heard of is only judged once the heartbeat store is older than a few
        heartbeats (every live process has republished since it started).
        """
        heard = self.last_heard.get(owner)
        if heard is not None:
            return heard if now - heard > OWNER_SILENT_SECONDS else None
        return 0.0 if now - self.store_since > OWNER_SILENT_SECONDS else None


# --------------------------------------------------------------------------- the rules


def expiry_reason(session: RealtimeSession, *, now: datetime, owners: Owners | None) -> str | None:
    """Why this session must end now (an EndReason), or None. ``owners`` None: do not judge owners."""
    if session.state not in LIVE_STATES:
        return None
    window = timedelta(seconds=settings.SESSION_RESUME_SECONDS)
    if session.joined_at is None:
        return RealtimeSession.EndReason.ABANDONED if now - session.started_at > window else None
    if session.state == RealtimeSession.State.DROPPED:
        return RealtimeSession.EndReason.DROPPED if now - session.last_seen_at > window else None
    if owners is None:
        return None
    silent_since = owners.silent_since(session.owner, now=now.timestamp())
    if silent_since is None:
        return None
    last_seen = max(session.last_seen_at.timestamp(), silent_since)
    return RealtimeSession.EndReason.DROPPED if now.timestamp() - last_seen > window.total_seconds() else None


def _candidates(*, now: datetime) -> Q:
    """Sessions that may have expired (each rule needs its reference time before the cutoff)."""
    cutoff = now - timedelta(seconds=settings.SESSION_RESUME_SECONDS)
    return Q(state__in=LIVE_STATES) & (
        Q(joined_at__isnull=True, started_at__lt=cutoff) | Q(joined_at__isnull=False, last_seen_at__lt=cutoff)
    )


def session_end_if_expired(*, session_id: str, now: datetime, owners: Owners | None) -> str | None:
    """End one session if a rule says so, judged again under its row lock; returns the reason or None.

    Judged again because the candidates were read without a lock: the trainee may have resumed the
    session since (``session_resume`` takes the same lock), and a resumed session is not stale.
    """
    with transaction.atomic():
        locked = RealtimeSession.objects.select_for_update().filter(pk=session_id).first()
        if locked is None:
            return None
        reason = expiry_reason(locked, now=now, owners=owners)
        if reason is not None:
            services.session_end(session=locked, reason=reason)
    return reason


def sessions_expire(*, trainee: User | None = None, now: datetime | None = None) -> dict[str, list[str]]:
    """End every stale session (of one trainee, or everyone's); returns reason → session ids."""
    now = now or timezone.now()
    stale = RealtimeSession.objects.filter(_candidates(now=now))
    if trainee is not None:
        stale = stale.filter(trainee=trainee)
    # Quiet calls on live processes are left out in the query: however many there are, they never
    # crowd a stale session out of a sweep's batch. Owners are few (one per server process).
    owned = stale.filter(state=RealtimeSession.State.LIVE, joined_at__isnull=False)
    owner_ids = set(owned.values_list("owner", flat=True).distinct())
    owners = Owners.read(owner_ids) if owner_ids else None
    if owners is not None:
        stale = stale.exclude(
            state=RealtimeSession.State.LIVE, joined_at__isnull=False, owner__in=owners.alive(now=now.timestamp())
        )
    ended: dict[str, list[str]] = {}
    for session in stale.order_by("last_seen_at")[:SESSIONS_PER_SWEEP]:
        if expiry_reason(session, now=now, owners=owners) is None:
            continue  # e.g. an owner silent for less than the window: no lock taken, nothing written
        reason = session_end_if_expired(session_id=session.pk, now=now, owners=owners)
        if reason is not None:
            ended.setdefault(reason, []).append(session.pk)
    return ended


# --------------------------------------------------------------------------- the sweep


@dataclass
class SweepReport:
    """What one sweep did, by session id."""

    abandoned: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    never_processed: list[str] = field(default_factory=list)
    lease_expired: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in vars(self).items()}

    def __bool__(self) -> bool:
        return any(vars(self).values())


def sessions_sweep() -> SweepReport:
    """End stale sessions (processed on commit) and re-dispatch after-call jobs nobody runs."""
    ended = sessions_expire()
    report = SweepReport(
        abandoned=ended.get(RealtimeSession.EndReason.ABANDONED, []),
        dropped=ended.get(RealtimeSession.EndReason.DROPPED, []),
    )
    report.never_processed, report.lease_expired = after_call.processing_orphans_claim()
    _dispatch(report.never_processed + report.lease_expired)
    if report:
        logger.info("session sweep: %s", report.counts())
    return report


def sessions_end_left_by_previous_process() -> SweepReport:
    """Start-up of a process that owns everything: what the previous one held died with it.

    Every joined session still live or dropped is ended ``dropped`` at once (its socket and media
    are gone; a session this process already owns is left alone), and every pending or running
    after-call job is dispatched again. Sessions never joined are not held by any process: the
    trainee may still join them, so they keep their window.
    """
    report = SweepReport()
    # Jobs first: the sessions ended below are dispatched by session_end and must not be taken twice.
    report.never_processed, report.lease_expired = after_call.processing_orphans_claim(every_unfinished=True)
    _dispatch(report.never_processed + report.lease_expired)
    left = RealtimeSession.objects.filter(state__in=LIVE_STATES, joined_at__isnull=False).exclude(owner=process_id())
    for session_id in list(left.values_list("pk", flat=True)):  # a list: SQLite cannot write under a cursor
        services.session_end(session=RealtimeSession(pk=session_id), reason=RealtimeSession.EndReason.DROPPED)
        report.dropped.append(session_id)
    if report:
        logger.info("start-up: ended what the previous process left: %s", report.counts())
    return report


def _dispatch(session_ids: list[str]) -> None:
    from roleplay.tasks import process_session  # Celery is imported only by what dispatches

    for session_id in session_ids:
        try:
            process_session.delay(session_id)
        except Exception:  # noqa: BLE001 - a broker outage: the lease runs out and a later sweep retries
            logger.exception("could not dispatch after-call processing", extra={"session_id": session_id})


# --------------------------------------------------------------------------- the server's own jobs


class ServerJobs(threading.Thread):
    """A process's lifecycle work on a daemon thread: its heartbeat, a start-up job, and maybe the sweep.

    Everything here is blocking database and cache work, so it runs on this thread and never on the
    event loop. A failing round is logged and the next one runs as usual.
    """

    def __init__(self, *, start_up: Callable[[], object] | None, sweep_every: float | None) -> None:
        super().__init__(name="session-lifecycle", daemon=True)
        self.start_up = start_up
        self.sweep_every = sweep_every
        self.tick = min(HEARTBEAT_SECONDS, sweep_every or HEARTBEAT_SECONDS)
        self.stopping = threading.Event()

    def run(self) -> None:
        self._guarded(heartbeat_publish)
        if self.start_up is not None:
            self._guarded(self.start_up)
        next_sweep = time.monotonic() + (self.sweep_every or 0)
        while not self.stopping.wait(self.tick):
            self._guarded(heartbeat_publish)
            if self.sweep_every and time.monotonic() >= next_sweep:
                self._guarded(sessions_sweep)
                next_sweep = time.monotonic() + self.sweep_every

    def stop(self) -> None:
        self.stopping.set()

    @staticmethod
    def _guarded(job: Callable[[], object]) -> None:
        close_old_connections()  # a connection the database dropped since the last round is replaced
        try:
            job()
        except Exception:  # noqa: BLE001 - a database or cache outage must not end the thread
            logger.exception("session lifecycle job %s failed", getattr(job, "__name__", job))
        finally:
            close_old_connections()


_jobs_lock = threading.Lock()
_jobs: dict[int, ServerJobs] = {}  # by pid: a forked child has no thread of its parent's


def server_jobs_start() -> ServerJobs:
    """Start the server process's lifecycle thread (called once by ``lingecho.server``).

    Start-up: the embedded default ends what the previous process left; scaled, one sweep. The
    periodic sweep runs here only without a broker (eager Celery): with one, Celery beat runs it.
    """
    eager = bool(settings.CELERY_TASK_ALWAYS_EAGER)
    start_up = sessions_end_left_by_previous_process if single_process() else sessions_sweep
    jobs = ServerJobs(start_up=start_up, sweep_every=settings.SESSION_SWEEP_SECONDS if eager else None)
    with _jobs_lock:
        heartbeat_only = _jobs.get(os.getpid())
        if heartbeat_only is not None:
            heartbeat_only.stop()
        _jobs[os.getpid()] = jobs
        jobs.start()
    logger.info("session lifecycle: process %s, sweep %s", process_id(),
                f"every {settings.SESSION_SWEEP_SECONDS} s here" if eager else "by Celery beat")
    return jobs


def owner_id() -> str:
    """The id a session records as its owner; from now on this process publishes its heartbeat.

    ``lingecho.server`` starts its thread at start-up; any other process that holds sockets (plain
    daphne, ``runserver``, a test or bench process) gets a heartbeat-only thread here, so its sessions
    are never taken for orphans just because it has no lifecycle thread of its own.
    """
    pid = os.getpid()
    if pid not in _jobs:
        with _jobs_lock:
            if pid not in _jobs:
                _jobs[pid] = ServerJobs(start_up=None, sweep_every=None)
                _jobs[pid].start()
    return process_id()
