"""`make test`: the suite on the embedded default, then on the scaled setup when its servers answer.

The scaled pass points DATABASE_URL/REDIS_URL/CELERY_BROKER_URL at local PostgreSQL and Redis
(the defaults match this project's CI machine; override with TEST_DATABASE_URL / TEST_REDIS_URL).
When they are not reachable the pass is skipped with a one-line reason, never failed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from urllib.parse import urlparse

SCALED_DB = os.environ.get("TEST_DATABASE_URL", "postgres://root@127.0.0.1:5432/test")
SCALED_REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/1")
SCALED_CLEAR = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "LINGECHO_STORAGE", "MEDIA_WORKER_MODE")


def reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=1.0):
            return True
    except OSError:
        return False


def pytest(args: list[str], env: dict[str, str]) -> int:
    return subprocess.call([sys.executable, "-m", "pytest", *args], env=env)


def main() -> int:
    extra = sys.argv[1:]
    embedded_env = {k: v for k, v in os.environ.items() if k not in SCALED_CLEAR}
    scaled = reachable(SCALED_DB) and reachable(SCALED_REDIS)
    print("== embedded default (SQLite, in-memory channel layer, eager Celery) ==", flush=True)
    # Tests marked `scaled` start their own Redis-backed processes; they run once, in the scaled pass.
    status = pytest(["-m", "not scaled", *extra] if scaled else extra, embedded_env)
    if not scaled:
        print(f"== scaled pass skipped: PostgreSQL ({SCALED_DB}) or Redis ({SCALED_REDIS}) not reachable ==")
        return status
    scaled_env = dict(
        embedded_env,
        DATABASE_URL=SCALED_DB,
        REDIS_URL=SCALED_REDIS,
        CELERY_BROKER_URL=SCALED_REDIS,
        LINGECHO_SCALED_PASS="1",
    )
    print("== scaled (PostgreSQL, Redis channel layer, Redis broker) ==", flush=True)
    # Every test that reaches the database, channel layer or broker in the test process (API,
    # consumers, services, after-call jobs) runs again on PostgreSQL + Redis, plus the `scaled` tests
    # (a real Celery worker, media workers on Redis). Pure functions, engines and tests against their
    # own embedded-default live servers (tests/live_server.py) are left out by tests/conftest.py:
    # repeating them here would test nothing new and double CI time.
    scaled_status = pytest(["-m", "not slow or scaled", *extra], scaled_env)
    return status or scaled_status


if __name__ == "__main__":
    sys.exit(main())
