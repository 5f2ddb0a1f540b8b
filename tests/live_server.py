"""What every live-server test shares: a free port and an environment for a server subprocess.

A live server started by a test is always the embedded default on its own throwaway SQLite file
and media folder, whatever the test process itself runs against: in `make test`'s scaled pass
the test process has DATABASE_URL/REDIS_URL set, and a subprocess inheriting them would write
into the shared `test` database instead of the file the test then reads. A test that wants the
scaled stack (Redis, external media workers) passes those variables back in explicitly.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

SCALED_VARIABLES = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "LINGECHO_STORAGE", "MEDIA_WORKER_MODE")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def isolated_env(folder: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCALED_VARIABLES}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "lingecho.settings",
            "SQLITE_PATH": str(folder / "db.sqlite3"),
            "MEDIA_ROOT": str(folder / "media"),
        }
    )
    env.update(overrides)
    return env


def server_command(port: int) -> list[str]:
    """The command ``make run`` serves with (lingecho.server: daphne with sliced sweeps)."""
    return [sys.executable, "-m", "lingecho.server", "-b", "127.0.0.1", "-p", str(port), "lingecho.asgi:application"]
