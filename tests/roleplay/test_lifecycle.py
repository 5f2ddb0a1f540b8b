"""Sessions always end, and are always processed (roleplay.lifecycle).

Time is moved by moving the rows back (``started_at``, ``last_seen_at``) and heartbeats are written
with explicit times for made-up process ids, so no test sleeps through a resume window. The cache is
Redis in the scaled pass: keys are per-test process ids, never a flush of a shared database.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings as settings_module
from django.core.cache import cache
from django.utils import timezone

from roleplay import lifecycle, services
from roleplay.after_call import job
from roleplay.models import RealtimeSession
from roleplay.tasks import process_session
from tests.live_server import free_port, isolated_env, prepared_database, server_command
from tests.roleplay.recorded_call import make_recorded_session
from tests.roleplay.test_api import client_for
from tests.roleplay.test_celery_worker import (  # noqa: F401 - fixtures
    assert_one_complete_result,
    broker,
    processing,
    start_worker,
    wait_for,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

WINDOW = 60


@pytest.fixture(autouse=True)
def _window(settings):
    settings.SESSION_RESUME_SECONDS = WINDOW
    # A heartbeat store that has been up for a while: owners never heard of can be judged.
    cache.set(lifecycle.EPOCH_KEY, time.time() - 3600, timeout=None)


def fake_process() -> str:
    return f"test-host:{secrets.randbelow(10**6)}:{secrets.token_hex(4)}"


def rewind(session: RealtimeSession, seconds: float, *fields: str) -> None:
    """Pretend the given timestamps happened ``seconds`` earlier."""
    RealtimeSession.objects.filter(pk=session.pk).update(
        **{name: getattr(session, name) - timedelta(seconds=seconds) for name in fields}
    )


def sweep(capture) -> lifecycle.SweepReport:
    """One sweep, with the after-call jobs that ``session_end`` dispatches on commit run at once."""
    with capture(execute=True):
        return lifecycle.sessions_sweep()


def state_of(session: RealtimeSession) -> tuple[str, str, str]:
    session.refresh_from_db()
    return session.state, session.end_reason, session.processing


# ---- the expiry rules ---------------------------------------------------------------------------


def test_a_session_never_joined_ends_as_abandoned_once_the_window_has_passed_and_is_processed(
    alice, scenario, django_capture_on_commit_callbacks
):
    young = services.session_create(trainee=alice, scenario=scenario, transport="text", joined=False)
    old = services.session_create(trainee=alice, scenario=scenario, transport="text", joined=False)
    rewind(old, WINDOW + 1, "started_at", "last_seen_at")

    report = sweep(django_capture_on_commit_callbacks)

    assert report.abandoned == [old.pk] and report.dropped == []
    assert state_of(old) == ("ended", "abandoned", "done")
    assert state_of(young) == ("live", "", "pending")


def test_a_dropped_session_ends_as_dropped_once_the_window_has_passed(
    alice, scenario, django_capture_on_commit_callbacks
):
    lately = services.session_create(trainee=alice, scenario=scenario, transport="text")
    long_ago = services.session_create(trainee=alice, scenario=scenario, transport="text")
    for session in (lately, long_ago):
        services.session_mark_dropped(session_id=session.pk)
        session.refresh_from_db()
    rewind(long_ago, WINDOW + 1, "last_seen_at")

    report = sweep(django_capture_on_commit_callbacks)

    assert report.dropped == [long_ago.pk]
    assert state_of(long_ago) == ("ended", "dropped", "done")
    assert state_of(lately)[0] == "dropped"  # still resumable


def test_a_live_session_ends_as_dropped_when_its_process_stopped_its_heartbeat(
    alice, bob, scenario, django_capture_on_commit_callbacks
):
    alive, dead, just_died = fake_process(), fake_process(), fake_process()
    now = time.time()
    lifecycle.heartbeat_publish(owner=alive, now=now)
    lifecycle.heartbeat_publish(owner=dead, now=now - WINDOW - 5)
    lifecycle.heartbeat_publish(owner=just_died, now=now - 20)  # silent, but not for the window yet
    sessions = {}
    for owner, trainee in ((alive, alice), (dead, bob), (just_died, alice)):
        session = services.session_create(trainee=trainee, scenario=scenario, transport="text")
        RealtimeSession.objects.filter(pk=session.pk).update(owner=owner)
        rewind(session, 2 * WINDOW, "last_seen_at")  # a quiet trainee: nothing said for two minutes
        sessions[owner] = session

    report = sweep(django_capture_on_commit_callbacks)

    assert report.dropped == [sessions[dead].pk]
    assert state_of(sessions[dead]) == ("ended", "dropped", "done")
    assert state_of(sessions[alive])[0] == "live"  # its process is alive: the call is just quiet
    assert state_of(sessions[just_died])[0] == "live"  # resumable on another process until the window passes


def test_quiet_calls_never_crowd_a_stale_session_out_of_a_sweep(
    alice, bob, scenario, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(lifecycle, "SESSIONS_PER_SWEEP", 2)
    alive = fake_process()
    lifecycle.heartbeat_publish(owner=alive)
    for _ in range(3):
        quiet = services.session_create(trainee=bob, scenario=scenario, transport="text")
        RealtimeSession.objects.filter(pk=quiet.pk).update(owner=alive)
        rewind(quiet, 10 * WINDOW, "last_seen_at")
    abandoned = services.session_create(trainee=alice, scenario=scenario, transport="text", joined=False)
    rewind(abandoned, WINDOW + 1, "started_at", "last_seen_at")

    assert sweep(django_capture_on_commit_callbacks).abandoned == [abandoned.pk]
    assert RealtimeSession.objects.filter(trainee=bob, state="live").count() == 3


def test_owners_are_not_judged_while_the_heartbeat_store_is_fresh(alice, scenario, django_capture_on_commit_callbacks):
    """After Redis lost its data, no process has republished yet: a missing heartbeat proves nothing."""
    session = services.session_create(trainee=alice, scenario=scenario, transport="text")
    RealtimeSession.objects.filter(pk=session.pk).update(owner=fake_process())
    rewind(session, 2 * WINDOW, "last_seen_at")
    cache.delete(lifecycle.EPOCH_KEY)

    assert sweep(django_capture_on_commit_callbacks).dropped == []
    assert state_of(session)[0] == "live"

    cache.set(lifecycle.EPOCH_KEY, time.time() - lifecycle.OWNER_SILENT_SECONDS - 1, timeout=None)
    assert sweep(django_capture_on_commit_callbacks).dropped == [session.pk]


def test_joining_a_rest_session_makes_this_process_its_owner_and_too_late_is_refused(alice, scenario):
    joined = services.session_create(trainee=alice, scenario=scenario, transport="text", joined=False)
    assert (joined.joined_at, joined.owner) == (None, "")
    resumed = services.session_resume(user=alice, session_id=joined.pk)
    assert resumed.joined_at is not None and resumed.owner == lifecycle.process_id()

    late = services.session_create(trainee=alice, scenario=scenario, transport="text", joined=False)
    rewind(late, WINDOW + 1, "started_at", "last_seen_at")
    with pytest.raises(services.SessionNotResumable) as refused:
        services.session_resume(user=alice, session_id=late.pk)
    assert refused.value.details["reason"] == "abandoned"
    assert state_of(late)[:2] == ("ended", "abandoned")


def test_a_session_resumed_meanwhile_is_not_ended_by_a_sweep_that_read_it_before(alice, scenario):
    session = services.session_create(trainee=alice, scenario=scenario, transport="text")
    services.session_mark_dropped(session_id=session.pk)
    session.refresh_from_db()
    rewind(session, WINDOW + 1, "last_seen_at")
    judged_at = timezone.now()
    RealtimeSession.objects.filter(pk=session.pk).update(state="live", last_seen_at=judged_at)  # resumed

    assert lifecycle.session_end_if_expired(session_id=session.pk, now=judged_at, owners=None) is None
    assert state_of(session)[0] == "live"


# ---- the limit ----------------------------------------------------------------------------------


def test_four_abandoned_rest_sessions_do_not_lock_a_trainee_out_once_the_window_has_passed(
    alice, scenario, settings, django_capture_on_commit_callbacks
):
    settings.MAX_LIVE_SESSIONS_PER_USER = 4
    api = client_for(alice)
    created = [api.post("/api/sessions/", {"scenario": scenario.pk}, format="json") for _ in range(4)]
    assert [r.status_code for r in created] == [201] * 4
    refused = api.post("/api/sessions/", {"scenario": scenario.pk}, format="json")
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "live_session_limit"

    abandoned = list(RealtimeSession.objects.filter(pk__in=[r.json()["id"] for r in created]))
    for session in abandoned:
        rewind(session, WINDOW + 1, "started_at", "last_seen_at")
    with django_capture_on_commit_callbacks(execute=True):
        fresh = api.post("/api/sessions/", {"scenario": scenario.pk}, format="json")

    assert fresh.status_code == 201
    assert {state_of(s) for s in abandoned} == {("ended", "abandoned", "done")}
    assert RealtimeSession.objects.filter(trainee=alice, state="live").count() == 1


# ---- start-up -----------------------------------------------------------------------------------


def test_start_up_of_the_embedded_default_ends_what_the_previous_process_left_and_processes_it(
    alice, bob, scenario, django_capture_on_commit_callbacks
):
    previous = fake_process()
    live = services.session_create(trainee=alice, scenario=scenario, transport="text")
    dropped = services.session_create(trainee=bob, scenario=scenario, transport="text")
    RealtimeSession.objects.filter(pk__in=[live.pk, dropped.pk]).update(owner=previous)
    services.session_mark_dropped(session_id=dropped.pk)
    not_joined = services.session_create(trainee=alice, scenario=scenario, transport="text", joined=False)
    mine = services.session_create(trainee=bob, scenario=scenario, transport="text")  # joined since start-up
    queued = services.session_create(trainee=alice, scenario=scenario, transport="text")
    running = services.session_create(trainee=bob, scenario=scenario, transport="text")
    RealtimeSession.objects.filter(pk__in=[queued.pk, running.pk]).update(state="ended", ended_at=timezone.now())
    job.processing_claim(session_id=running.pk)  # a lease that has not run out yet

    with django_capture_on_commit_callbacks(execute=True):
        report = lifecycle.sessions_end_left_by_previous_process()

    assert sorted(report.dropped) == sorted([live.pk, dropped.pk])
    assert (report.never_processed, report.lease_expired) == ([queued.pk], [running.pk])
    assert state_of(live) == state_of(dropped) == ("ended", "dropped", "done")
    assert state_of(queued)[2] == state_of(running)[2] == "done"
    assert state_of(not_joined)[0] == "live"  # no process held it: the trainee may still join
    assert state_of(mine)[0] == "live"


# ---- the after-call lease -----------------------------------------------------------------------


def ended(trainee, scenario, *, ago: float = 0.0) -> RealtimeSession:
    session = services.session_create(trainee=trainee, scenario=scenario, transport="text")
    RealtimeSession.objects.filter(pk=session.pk).update(
        state="ended", end_reason="user_requested", ended_at=timezone.now() - timedelta(seconds=ago)
    )
    return session


def test_a_run_holds_a_lease_that_it_renews_and_gives_back(alice, scenario, settings):
    settings.POSTPROCESS_LEASE_SECONDS = 100
    session = ended(alice, scenario)
    job.processing_claim(session_id=session.pk)
    session.refresh_from_db()
    assert session.processing == "running"
    assert 95 < (session.processing_lease_until - timezone.now()).total_seconds() <= 100
    job.processing_retrying(session_id=session.pk, attempt=1, countdown=50, error=OSError("disk"))
    session.refresh_from_db()
    assert 145 < (session.processing_lease_until - timezone.now()).total_seconds() <= 150  # covers the backoff

    assert process_session.apply(args=[session.pk]).get() == "done"
    session.refresh_from_db()
    assert session.processing_lease_until is None


def test_the_sweeper_runs_again_a_job_whose_worker_died(alice, bob, scenario, django_capture_on_commit_callbacks):
    orphan, busy = ended(alice, scenario), ended(bob, scenario)
    for session in (orphan, busy):
        job.processing_claim(session_id=session.pk)
    RealtimeSession.objects.filter(pk=orphan.pk).update(processing_lease_until=timezone.now() - timedelta(seconds=1))

    report = sweep(django_capture_on_commit_callbacks)

    assert report.lease_expired == [orphan.pk] and report.never_processed == []
    assert state_of(orphan)[2] == "done"
    assert state_of(busy)[2] == "running"  # its worker still holds the lease


def test_a_redispatched_job_is_not_dispatched_again_while_it_waits_in_a_queue(
    alice, scenario, settings, monkeypatch, django_capture_on_commit_callbacks
):
    settings.POSTPROCESS_SWEEP_GRACE_SECONDS = 10
    lost = ended(alice, scenario, ago=60)  # ended a minute ago and never dispatched (the broker was down)
    dispatched: list[str] = []
    monkeypatch.setattr(process_session, "delay", dispatched.append)  # a queue nobody consumes yet

    assert sweep(django_capture_on_commit_callbacks).never_processed == [lost.pk]
    assert sweep(django_capture_on_commit_callbacks).never_processed == []
    assert dispatched == [lost.pk]

    RealtimeSession.objects.filter(pk=lost.pk).update(processing_lease_until=timezone.now() - timedelta(seconds=1))
    assert sweep(django_capture_on_commit_callbacks).never_processed == [lost.pk]  # lost again: taken again


def test_failed_jobs_are_left_alone(alice, scenario, django_capture_on_commit_callbacks):
    session = ended(alice, scenario, ago=3600)
    job.processing_fail(session_id=session.pk, error="RuntimeError: a bug")
    assert not sweep(django_capture_on_commit_callbacks)
    assert state_of(session)[2] == "failed"


# ---- the server's own jobs ----------------------------------------------------------------------


def test_the_server_thread_publishes_its_heartbeat_runs_its_start_up_job_and_sweeps(monkeypatch):
    monkeypatch.setattr(lifecycle, "HEARTBEAT_SECONDS", 0.05)
    runs: list[str] = []
    monkeypatch.setattr(lifecycle, "heartbeat_publish", lambda: runs.append("heartbeat"))
    monkeypatch.setattr(lifecycle, "sessions_sweep", lambda: runs.append("sweep"))
    jobs = lifecycle.ServerJobs(start_up=lambda: runs.append("start-up"), sweep_every=0.1)
    jobs.start()
    try:
        deadline = time.monotonic() + 5
        while runs.count("sweep") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        jobs.stop()
        jobs.join(timeout=5)
    assert runs[:2] == ["heartbeat", "start-up"]
    assert runs.count("sweep") >= 2 and runs.count("heartbeat") > runs.count("sweep")


def test_any_process_that_owns_a_session_publishes_its_heartbeat(alice, scenario):
    """Not only lingecho.server: plain daphne or runserver holding a call must not look dead."""
    session = services.session_create(trainee=alice, scenario=scenario, transport="text")
    assert session.owner == lifecycle.process_id()
    deadline = time.monotonic() + 5
    while cache.get(lifecycle.HEARTBEAT_KEY + session.owner) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert time.time() - cache.get(lifecycle.HEARTBEAT_KEY + session.owner) < lifecycle.OWNER_SILENT_SECONDS


def test_celery_beat_runs_the_sweep_every_session_sweep_seconds():
    from lingecho.celery import app

    entry = app.conf.beat_schedule["sweep-sessions"]
    assert entry["task"] == "roleplay.tasks.sweep_sessions" and entry["task"] in app.tasks
    assert entry["schedule"] == float(settings_module.SESSION_SWEEP_SECONDS)


@pytest.mark.slow
@pytest.mark.scaled
def test_a_job_whose_worker_machine_died_is_run_again_by_the_sweep(start_worker, alice, scenario):  # noqa: F811
    """The whole worker dies (no parent left to reject the task back to the queue): the broker would
    redeliver it only after its visibility timeout (an hour); the lease runs out in seconds."""
    doomed = start_worker(POSTPROCESS_TEST_STEP_DELAY_SECONDS="60", POSTPROCESS_LEASE_SECONDS="10")
    session = make_recorded_session(trainee=alice, scenario=scenario)
    services.session_end(session=session, reason=RealtimeSession.EndReason.USER_REQUESTED)
    wait_for(lambda: processing(session.pk) == ("running", "transcribing the recording again"), timeout=120,
             worker=doomed, what="the slow step")
    for pid in [*doomed.children(), doomed.proc.pid]:
        os.kill(pid, signal.SIGKILL)
    doomed.proc.wait()
    successor = start_worker()

    assert lifecycle.sessions_sweep().lease_expired == []  # the lease still holds: it may be alive
    lease = RealtimeSession.objects.get(pk=session.pk).processing_lease_until
    time.sleep(max(0.0, (lease - timezone.now()).total_seconds()) + 0.5)
    assert lifecycle.sessions_sweep().lease_expired == [session.pk]

    wait_for(lambda: processing(session.pk)[0] in ("done", "failed"), timeout=120, worker=successor,
             what="the re-run")
    assert processing(session.pk) == ("done", "done")
    assert_one_complete_result(session.pk)


# ---- in a real server ---------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
LEFT_BEHIND = (
    "from django.utils import timezone; from roleplay.models import RealtimeSession, Scenario, User; "
    "s = RealtimeSession.objects.create(trainee=User.objects.get(username='trainee'), "
    "scenario=Scenario.objects.filter(is_active=True).first(), joined_at=timezone.now(), owner='gone:1:dead'); "
    "print(s.pk)"
)


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def api(base: str, token: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://{base}{path}", data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def eventually(read, done, *, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.mark.slow
def test_the_embedded_server_ends_and_processes_stale_sessions_by_itself(tmp_path):
    """Start-up ends what a dead process left live; the server's own thread ends four unjoined REST
    sessions that had locked the trainee out, and processes them; then a new session is allowed."""
    env = isolated_env(tmp_path, SESSION_RESUME_SECONDS="3", SESSION_SWEEP_SECONDS="1", SHUTDOWN_DRAIN_SECONDS="2",
                       MAX_LIVE_SESSIONS_PER_USER="4")
    token = prepared_database(env)
    left_behind = manage(env, "shell", "-c", LEFT_BEHIND)
    port = free_port()
    base = f"127.0.0.1:{port}"
    with open(tmp_path / "server.log", "w") as log:
        server = subprocess.Popen(server_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                    time.sleep(0.2)

            def session(sid: str):
                return lambda: api(base, token, f"/api/sessions/{sid}/")

            def processed(s: dict) -> bool:
                return s["processing"] == "done"

            left = eventually(session(left_behind), processed)
            assert (left["state"], left["end_reason"], left["processing"]) == ("ended", "dropped", "done")

            scenario = api(base, token, "/api/scenarios/")["results"][0]["id"]
            created = [api(base, token, "/api/sessions/", {"scenario": scenario}) for _ in range(4)]
            assert {c["state"] for c in created} == {"live"}
            with pytest.raises(urllib.error.HTTPError) as refused:
                api(base, token, "/api/sessions/", {"scenario": scenario})
            assert refused.value.code == 429
            for c in created:  # nobody asks: the server's own thread ends them
                later = eventually(session(c["id"]), processed)
                assert (later["state"], later["end_reason"], later["processing"]) == ("ended", "abandoned", "done")
            assert api(base, token, "/api/sessions/", {"scenario": scenario})["state"] == "live"
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
