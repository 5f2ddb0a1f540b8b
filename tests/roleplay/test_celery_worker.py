"""After the call with a real ``celery -A lingecho worker`` process, the Redis broker and PostgreSQL.

The worker is a subprocess pointed at pytest-django's test database (its name comes from the live
connection), at Redis db 2 as broker, and at this test's media folder. Runs in the scaled pass
(``DATABASE_URL=postgres://…``); elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.core.files.storage import default_storage
from django.db import connection

from lingecho.celery import app as celery_app
from roleplay import services
from roleplay.after_call.archive import archive_names
from roleplay.models import RealtimeSession, SessionAnalytics
from tests.roleplay.recorded_call import make_recorded_session

pytestmark = [pytest.mark.slow, pytest.mark.scaled]

BROKER = os.environ.get("TEST_CELERY_WORKER_BROKER", "redis://127.0.0.1:6379/2")
ROOT = Path(__file__).resolve().parents[2]


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 6379), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def broker(transactional_db, monkeypatch):
    """Send this test's tasks to Redis db 2 (emptied first), whatever the app was configured with."""
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL shared with a worker process: runs in the scaled pass (DATABASE_URL=postgres://)")
    if not _reachable(BROKER):
        pytest.skip(f"Redis broker {BROKER} not reachable")
    import redis

    redis.Redis.from_url(BROKER).flushdb()
    conf = celery_app.conf
    saved = conf.broker_url, conf.task_always_eager
    _reset_producers()
    monkeypatch.setenv("CELERY_BROKER_URL", BROKER)  # Celery reads this variable before its own config
    conf.broker_url, conf.task_always_eager = BROKER, False
    yield BROKER
    monkeypatch.undo()
    _reset_producers()
    conf.broker_url, conf.task_always_eager = saved


def _reset_producers() -> None:
    """Forget pooled broker connections so the next send connects to the current ``broker_url``.

    Not closed: kombu's global producer pools may still hand them out to other apps' senders.
    """
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


class Worker:
    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.handle = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "lingecho", "worker", "--pool=prefork", "--concurrency=1",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"],
            cwd=ROOT, env=env, stdout=self.handle, stderr=subprocess.STDOUT,
        )

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def output(self) -> str:
        self.handle.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                for child in self.children():
                    os.kill(child, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        self.handle.close()


@pytest.fixture
def start_worker(broker, settings, tmp_path):
    started: list[Worker] = []

    def start(**extra: str) -> Worker:
        db = connection.settings_dict
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LINGECHO_STORAGE")}
        auth = f"{db['USER']}:{db['PASSWORD']}" if db.get("PASSWORD") else db["USER"]
        env.update(
            DATABASE_URL=f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
            CELERY_BROKER_URL=broker,
            CELERY_TASK_ALWAYS_EAGER="0",
            MEDIA_ROOT=str(settings.MEDIA_ROOT),
            MEDIA_WORKER_MODE="embedded",
            **extra,
        )
        worker = Worker(tmp_path / f"worker-{len(started)}.log", env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_for(predicate, *, timeout: float, worker: Worker, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if worker.proc.poll() is not None:
            pytest.fail(f"worker exited while waiting for {what}:\n{worker.output()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{worker.output()[-3000:]}")


def processing(session_id: str) -> tuple[str, str]:
    row = RealtimeSession.objects.values_list("processing", "processing_detail").get(pk=session_id)
    return row[0], row[1]


def assert_one_complete_result(session_id: str) -> None:
    names = archive_names(session_id)
    for key, name in names.items():
        assert default_storage.exists(name), key
    _dirs, files = default_storage.listdir(f"sessions/{session_id}/archive/")
    assert sorted(files) == sorted(n.rsplit("/", 1)[1] for n in names.values())
    assert SessionAnalytics.objects.filter(session_id=session_id).count() == 1
    analytics = SessionAnalytics.objects.get(session_id=session_id)
    assert analytics.retranscript["status"] == "done" and analytics.total_score is not None


def test_a_worker_process_archives_and_scores_an_ended_session(start_worker, alice, scenario):
    worker = start_worker()
    session = make_recorded_session(trainee=alice, scenario=scenario)
    services.session_end(session=session, reason=RealtimeSession.EndReason.USER_REQUESTED)  # dispatch on commit

    wait_for(lambda: processing(session.pk)[0] in ("done", "failed"), timeout=120, worker=worker, what="processing")
    assert processing(session.pk) == ("done", "done")
    assert_one_complete_result(session.pk)
    assert "succeeded" in worker.output()


def test_a_worker_killed_mid_task_runs_it_again_with_one_result(start_worker, alice, scenario):
    worker = start_worker(POSTPROCESS_TEST_STEP_DELAY_SECONDS="3")
    session = make_recorded_session(trainee=alice, scenario=scenario)
    services.session_end(session=session, reason=RealtimeSession.EndReason.USER_REQUESTED)

    wait_for(lambda: processing(session.pk) == ("running", "transcribing the recording again"), timeout=120,
             worker=worker, what="the slow step")
    children = worker.children()
    assert len(children) == 1
    os.kill(children[0], signal.SIGKILL)  # the process running the task dies, as under the OOM killer

    wait_for(lambda: processing(session.pk)[0] in ("done", "failed"), timeout=120, worker=worker,
             what="the re-run")
    assert processing(session.pk) == ("done", "done")
    assert_one_complete_result(session.pk)
    log = worker.output()
    assert "WorkerLostError" in log or "SIGKILL" in log
    assert log.count("test delay in step retranscribe") == 2  # killed in the step, then ran again from the top
